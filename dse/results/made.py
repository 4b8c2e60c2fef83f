"""How a study's trials were made, read from its storage alone (never from config.yaml): the settings each
trained trial records (dse.provenance), the seeds, the sizing decision, and the dse version and git commit
of the runs that trained them. It goes into provenance.yaml beside trials.csv, the Pareto caption,
report.html, the tables' notes and the W&B summary.

    provenance.yaml   study: NAME
                      trained_with: [{settings: {data, trainer, model, seed}, trials: N}, ...]  (one per variant)
                      study_settings: the study's own (user attr dse:settings), history: earlier ones
                      seeds: [0, 1, ...]          the training seeds of the trained trials
                      sizing: 'sizing: ...'       the line of study.trials_per_timeout's choice, when it sized
                      trained_by: [{version, commit}, ...]   each dse that trained in this study
                      written_by: {version, commit}          the dse that wrote this file
"""
from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

from dse.provenance import STUDY_KEY, flat, training
from dse.record import TrialRecord

CODE_KEY = "dse:code"  # study user attr: [{version, commit}, ...] of every dse run that trained in it
SIZING_KEY = "dse:sizing"  # study user attr: the sizing line of a study sized to its timeout
WORDS = ("data.name", "data.subset", "data.val_subset", "trainer.epochs", "trainer.batch_size", "trainer.schedule",
         "trainer.lr", "trainer.limit_batches", "model.width_scale", "data.augment", "seed")


@functools.lru_cache(maxsize=1)
def code() -> dict:
    """{'version': dse's installed version, 'commit': the git commit of dse's source (+'-dirty' with local edits)}."""
    from importlib import metadata

    try:
        version = metadata.version("dse")
    except metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=root, timeout=10,
                                capture_output=True, text=True).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"version": version, "commit": commit}


def record_code(optuna_study) -> None:
    """Add this dse's version and commit to the study's list (a run that trains calls it)."""
    known = list(optuna_study.user_attrs.get(CODE_KEY) or [])
    if not known or known[-1] != code():
        optuna_study.set_user_attr(CODE_KEY, known + [code()])


def of_study(optuna_study) -> dict:
    """What provenance.yaml holds (see the module's docstring)."""
    attrs = optuna_study.user_attrs
    records = [TrialRecord.from_trial(t) for t in optuna_study.get_trials(deepcopy=False)]
    trained = [r for r in records if r.trained]
    variants: dict[str, dict] = {}
    for r in trained:
        settings = training(r.settings) if r.settings else None
        key = json.dumps(settings, sort_keys=True)
        variants.setdefault(key, {"settings": settings, "trials": 0})["trials"] += 1
    return {"study": optuna_study.study_name, "trained_with": list(variants.values()),
            "study_settings": attrs.get(STUDY_KEY), "history": attrs.get(STUDY_KEY + ":history") or [],
            "seeds": sorted({int(r.seed) for r in trained if r.seed is not None}),
            "sizing": attrs.get(SIZING_KEY), "trained_by": attrs.get(CODE_KEY) or [], "written_by": code()}


def settings_words(s: dict, seeds: list[int] | None = None) -> str:
    """One settings dict in words: data, subset, validation size, epochs, batch, schedule, seeds, thinning."""
    data, trainer, model = s.get("data") or {}, s.get("trainer") or {}, s.get("model") or {}
    sizes = [f"{data['subset']:,} training samples" if data.get("subset") else "all training samples"]
    if data.get("val_subset"):
        sizes.append(f"{data['val_subset']:,} validation")
    epochs = trainer.get("epochs")
    parts = [f"data {data.get('name')} ({', '.join(sizes)})", f"{epochs} epoch{'' if epochs == 1 else 's'}",
             f"batch {trainer.get('batch_size')}"]
    if trainer.get("limit_batches"):
        parts.append(f"at most {trainer['limit_batches']} batches per epoch")
    parts.append(f"{trainer.get('schedule')} lr {trainer.get('lr')}")
    seeds = seeds if seeds else [s.get("seed")]
    parts.append(f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}")
    if data.get("augment") is False:
        parts.append("no augmentation")
    if (model.get("width_scale") or 1.0) != 1.0:
        parts.append(f"widths x{model['width_scale']} (at least {model.get('min_width', 4)} channels)")
    return ", ".join(parts)


def words(made: dict) -> str:
    """'Trained as: data …; sized: …; dse 0.1.0 (commit …).' from of_study's dict (empty when nothing is known)."""
    known = [v for v in made["trained_with"] if v["settings"]]
    if not known and made.get("study_settings"):
        known = [{"settings": training(made["study_settings"]), "trials": 0}]
    if not known:
        return ""
    seeds = made.get("seeds") or None
    if len(known) == 1:
        text = "Trained as: " + settings_words(known[0]["settings"], seeds)
    else:
        text = (f"Trained under {len(known)} settings (differing in {', '.join(differing(known))}): "
                + " | ".join(f"({v['trials']} trial{'' if v['trials'] == 1 else 's'}) {settings_words(v['settings'])}" for v in known))
    if made.get("sizing"):
        text += f"; {made['sizing']}"
    coded = made.get("trained_by") or []
    if coded:
        text += "; dse " + ", ".join(f"{c.get('version')} (commit {c.get('commit')})" for c in coded)
    return text + "."


def differing(variants: list[dict]) -> list[str]:
    """The dotted setting names whose values differ between settings variants."""
    flats = [flat(v["settings"]) for v in variants]
    keys = sorted(set().union(*flats))
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]


def compare(labelled: dict[str, dict]) -> str | None:
    """One warning line when studies ({label: of_study dict}) were trained with different settings, naming the
    settings that differ; None when they agree (or record none)."""
    per = {label: [v for v in made["trained_with"] if v["settings"]] for label, made in labelled.items()}
    variants = [{"settings": v["settings"]} for found in per.values() for v in found]
    if len(variants) < 2:
        return None
    keys = differing(variants)
    if not keys:
        return None
    shown = []
    for key in keys[:4]:
        values = {label: sorted({json.dumps(flat(v["settings"]).get(key)) for v in found})
                  for label, found in per.items() if found}
        shown.append(f"{key} " + ", ".join(f"{'|'.join(vals)} ({label})" for label, vals in values.items()))
    more = f"; and {len(keys) - 4} more" if len(keys) > 4 else ""
    return f"warning: these studies were trained differently: {'; '.join(shown)}{more}"


def write(optuna_study, out: Path) -> dict:
    """provenance.yaml in `out`; returns what it holds."""
    import yaml

    made = of_study(optuna_study)
    (Path(out) / "provenance.yaml").write_text(yaml.safe_dump(made, sort_keys=False))
    return made
