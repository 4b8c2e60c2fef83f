"""Refining an AnyNet-style space (Radosavovic et al. 2020): the AnyNet -> RegNet step as a file.

A space is AnyNet-style when its stage widths and depths are per-stage params (`width`, `depth` with
`per_stage`). From a study of it, the best `top` fraction of the trained models (lowest error, at least 3)
are each fitted with the quantized-linear width rule (dse.results.edf.fit_quantized_linear: u = w0 + wa * j at the
stage's first block j, w = w0 * wm^round(log_wm(u / w0)), a multiple of 8). The refined space:
- replaces the free stage widths by params w0 (int, step 8), wa, wm whose ranges span the best models' fits;
  a derived `width` list holds the rule's stage widths, so the parent's expressions that read `width` keep
  working, and each stage's width is `width[i]`;
- narrows every other param to what the best models used: depth ranges to [min, max], choices to the values
  seen (params that no best model used are kept as they were).
Its stage widths are exactly the fitted rule's, so a best model's fit lies in the refined space.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from dse import yamlfile
from dse.results import edf as E
from dse.errors import UserError


def parent_file(run) -> Path | None:
    """The space file of a run: the recorded file, else the shipped space of that name."""
    from dse.space.parse import names, spaces_dir

    if run.space_file and Path(run.space_file).is_file():
        return Path(run.space_file)
    if run.space in names():
        return Path(spaces_dir()) / f"{run.space}.yaml"
    return None


def is_anynet_run(run) -> bool:
    """Whether the run's space has per-stage width and depth params."""
    path = parent_file(run)
    if path is None:
        return False
    data = yamlfile.read(path, "space file")
    params = (data.get("params") if isinstance(data, dict) else None) or {}
    return all(isinstance(params.get(k), dict) and params[k].get("per_stage") for k in ("width", "depth"))


def best_records(records, top: float) -> list:
    """The lowest-error `top` fraction of the records (at least 3, or all when fewer)."""
    k = max(3, int(round(top * len(records))))
    return sorted(records, key=lambda r: (r.error, r.number))[:k]


def refine_run(run, top: float) -> dict | None:
    """Fit the rule to the run's best models and build the refined space mapping (validated); None when the
    trials carry no Points."""
    path = parent_file(run)
    parent = yamlfile.read(path, "space file")
    spec = parent["params"]["width"]
    low = int(spec.get("low", 8)) if spec.get("type") == "int" else int(min(spec.get("values", [8])))
    high = int(spec.get("high", 1024)) if spec.get("type") == "int" else int(max(spec.get("values", [1024])))
    best = best_records(run.records, top)
    if not all((r.point or {}).get("stages") for r in best):
        return None  # trials without their Points (not made by dse.search): nothing to fit
    fits = []
    for r in best:
        stages = r.point.get("stages") or []
        widths, depths = [s["width"] for s in stages], [s["depth"] for s in stages]
        fit = E.fit_quantized_linear(widths, depths, low=low, high=high)
        fits.append({"number": r.number, "error": r.error, "widths": "|".join(map(str, widths)),
                     "depths": "|".join(map(str, depths)), "w0": fit["w0"], "wa": fit["wa"], "wm": fit["wm"],
                     "e_fit": fit["e_fit"], "rule_widths": "|".join(map(str, fit["widths"]))})
    ranges = {"w0": [int(min(f["w0"] for f in fits)), int(max(f["w0"] for f in fits))],
              "wa": [min(f["wa"] for f in fits), max(f["wa"] for f in fits)],
              "wm": [min(f["wm"] for f in fits), max(f["wm"] for f in fits)]}
    data = refined_mapping(parent, best, ranges, low, high, len(parent_stages(parent, path)))
    data["description"] = (f"Refined by dse.analyze from {path.stem} (study {run.label}): stage widths follow the "
                           f"quantized-linear rule fitted to its best {len(best)} of {len(run.records)} trained models "
                           f"(error <= {100 * best[-1].error:.2f}%); other params narrowed to the values those "
                           f"models used. Parent: {(parent.get('description') or '').strip()}")
    from dse.space.parse import parse

    try:
        parse(data, f"{path.stem}_refined")
    except UserError as exc:
        raise UserError(f"refinement of {run.label}: the refined space does not load: {exc}") from None
    return {"data": data, "fits": fits, "ranges": ranges, "parent": _shown(path)}


def _shown(path: Path) -> str:
    """A shipped space as spaces/<name>.yaml, another file as given."""
    from dse.space.parse import spaces_dir

    if path.parent.resolve() == Path(spaces_dir()).resolve():
        return f"spaces/{path.name}"
    return str(path)


def parent_stages(parent: dict, path: Path) -> list:
    """The parent space's base stages (for the stage count)."""
    from dse.space.parse import load

    return list(load(path, validate=False).base.stages)


def _narrow(spec: dict, seen: list) -> dict:
    """A param spec narrowed to the values seen (None: unchanged)."""
    seen = [v for v in seen if v is not None]
    if not seen or spec.get("type") not in ("choice", "int", "float"):
        return spec
    out = dict(spec)
    if spec["type"] == "choice":
        out["values"] = [v for v in spec["values"] if v in seen]
        if out.get("default") not in out["values"]:
            out.pop("default", None)
        return out
    out["low"], out["high"] = min(seen), max(seen)
    if "default" in out and not out["low"] <= out["default"] <= out["high"]:
        out["default"] = out["low"]
    return out


def refined_mapping(parent: dict, best: list, ranges: dict, low: int, high: int, n_stages: int) -> dict:
    """The refined space file's mapping (see the module docstring)."""
    params = {}
    for name, spec in parent["params"].items():
        if name == "width":
            wa_hi = max(ranges["wa"][1], ranges["wa"][0])
            params["w0"] = {"type": "int", "low": ranges["w0"][0], "high": ranges["w0"][1], "step": 8,
                            "help": "initial width of the quantized-linear rule"}
            params["wa"] = {"type": "float", "low": float(ranges["wa"][0]), "high": float(wa_hi),
                            "help": "slope of the rule (channels per block)"}
            params["wm"] = {"type": "float", "low": float(ranges["wm"][0]), "high": float(ranges["wm"][1]),
                            "help": "width multiplier between quantized steps"}
            continue
        if not isinstance(spec, dict):
            params[name] = spec
            continue
        if spec.get("per_stage"):
            seen = [r.values.get(f"{name}_{i}") for r in best for i in range(n_stages)]
        else:
            seen = [r.values.get(name) for r in best]
        params[name] = _narrow(spec, seen)
    starts = ["0"] + [" + ".join(f"depth[{j}]" for j in range(i)) for i in range(1, n_stages)]
    rule = ("min({hi}, max({lo}, int(round(w0 * wm ** round(log2((w0 + wa * start[{i}]) / w0) / log2(wm)) / 8)) * 8))")
    derived = {"start": "[" + ", ".join(starts) + "]",
               "width": "[" + ", ".join(rule.format(hi=high, lo=low, i=i) for i in range(n_stages)) + "]"}
    derived.update(parent.get("derived") or {})
    targets = {}
    for key, value in (parent.get("set") or {}).items():
        if str(key).startswith("stages[") and isinstance(value, str):
            value = "width[i]" if key == "stages[*].width" else re.sub(r"\bwidth\b(?!\s*\[)", "width[i]", value)
        targets[key] = value
    data = {k: v for k, v in parent.items() if k not in ("params", "derived", "set", "description")}
    data.update({"params": params, "derived": derived, "set": targets})
    return data


def write(result: dict, out: Path, stem: str = "refined") -> list[str]:
    """<stem>.yaml: the space, with a header naming the command (dse.results.analysis writes <stem>.csv, the fits)."""
    header = (f"# A refined space from dse.analyze (parent: {result['parent']}). Run a study of it with e.g.\n"
              f"#   python -m dse.search space={out / (stem + '.yaml')} sampler=random\n"
              f"# and compare it with its parent: python -m dse.analyze runs/<parent study> runs/{stem}\n")
    (out / f"{stem}.yaml").write_text(header + yaml.safe_dump(result["data"], sort_keys=False, width=120))
    return [f"{stem}.yaml"]
