"""What a trial was trained with, kept in the storage: the data, the recipe, the thinning and the base seed.

Every trial records its `settings` (user attr); the study records the settings it was created with
(study user attr `dse:settings`). A run that resumes a study with other settings is refused, naming what
changed, unless `study.allow_changes=true`; then each trial still carries its own settings, and tables
describe what their trials were really trained with.

Settings leave out what changes where or how fast a trial runs but not what it learns: the data root, the
devices, the strategy, threads, out-of-memory retry and test-set scoring.
"""
from __future__ import annotations

import dataclasses

from dse.errors import UserError

STUDY_KEY = "dse:settings"
DATA_KEYS = ("name", "subset", "val_subset", "val_fraction", "image_size", "augment")
NOT_TRAINING = ("accelerator", "devices", "strategy", "threads", "oom_retry", "eval_test", "seed", "compile")


def settings(data_cfg: dict, recipe, thin: tuple, seed: int) -> dict:
    """The training settings of a run, as plain data (JSON-safe)."""
    fields = dataclasses.asdict(recipe) if dataclasses.is_dataclass(recipe) else dict(recipe or {})
    trainer = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items() if k not in NOT_TRAINING}
    data = {k: (data_cfg or {}).get(k) for k in DATA_KEYS}
    return {"data": data, "trainer": trainer, "model": {"width_scale": float(thin[0]), "min_width": int(thin[1])},
            "seed": int(seed)}


def flat(value: dict, prefix: str = "") -> dict:
    """{'trainer.lr': 0.1, ...} from nested settings."""
    out = {}
    for key, item in (value or {}).items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            out.update(flat(item, name + "."))
        else:
            out[name] = item
    return out


def training(value: dict) -> dict:
    """Settings without the trainer keys that do not change training (an older dse recorded some of them,
    e.g. trainer.compile, before they moved to NOT_TRAINING)."""
    trainer = {k: v for k, v in (value.get("trainer") or {}).items() if k not in NOT_TRAINING}
    return {**value, "trainer": trainer} if "trainer" in value else value


def differences(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every setting that changes training."""
    a, b = flat(training(old)), flat(training(new))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_resume(optuna_study, new: dict, allow: bool) -> list[str]:
    """Refuse a resume whose settings differ from the study's, unless allowed; returns the differences."""
    old = optuna_study.user_attrs.get(STUDY_KEY)
    if old is None:  # a study made before settings were recorded, or a fresh one
        if not any(t.user_attrs.get("status") == "ok" for t in optuna_study.get_trials(deepcopy=False)):
            optuna_study.set_user_attr(STUDY_KEY, new)
        return []
    changed = differences(old, new)
    if changed and not allow:
        shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise UserError(f"study.name: {optuna_study.study_name!r} was trained with other settings ({shown}); "
                        "give the same settings, pick another study.name, or pass study.allow_changes=true "
                        "(each trial records its own settings)")
    if changed:
        history = list(optuna_study.user_attrs.get(STUDY_KEY + ":history", []))
        optuna_study.set_user_attr(STUDY_KEY + ":history", history + [old])
        optuna_study.set_user_attr(STUDY_KEY, new)
    return changed


def describe(found: list[dict]) -> str | None:
    """The 'Trained as' line of a table from its trials' settings (None when no trial has any)."""
    unique = []
    for item in found:
        item = training(item) if item else item
        if item and item not in unique:
            unique.append(item)
    if not unique:
        return None
    lines = [_one(s) for s in unique]
    if len(lines) == 1:
        return "Trained as: " + lines[0] + "; error on the held-out test set."
    return (f"Trained under {len(lines)} different settings (the study was resumed with study.allow_changes): "
            + " | ".join(f"({i + 1}) {text}" for i, text in enumerate(lines)) + "; error on the held-out test set.")


def _one(s: dict) -> str:
    """One settings dict in words."""
    data, trainer, model = s.get("data") or {}, s.get("trainer") or {}, s.get("model") or {}
    parts = [f"data {data.get('name')}" + (f" ({data['subset']} training samples)" if data.get("subset") else ""),
             f"{trainer.get('epochs')} epochs", f"{trainer.get('schedule')} lr {trainer.get('lr')}",
             f"batch {trainer.get('batch_size')}"]
    if data.get("augment") is False:
        parts.append("no augmentation")
    if (model.get("width_scale") or 1.0) != 1.0:
        parts.append(f"widths x{model['width_scale']} (at least {model.get('min_width', 4)} channels)")
    return ", ".join(parts)
