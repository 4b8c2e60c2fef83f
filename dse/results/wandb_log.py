"""Per-trial loggers (none, csv, wandb) and the W&B study-summary run.

W&B: each trial is a run in group <study name> with config = Point + params/FLOPs, and learning curves
through Lightning's WandbLogger; one `summary` run holds the trials table, a Pareto scatter, the
hypervolume after each trial and the design-space EDF, trends and importance (dse.results.wandb_panels).
Without WANDB_API_KEY (and no WANDB_MODE) everything runs offline into
<run_dir>/wandb/offline-run-*/ (`wandb sync` uploads later); W&B never blocks or fails a study.
Storage URLs never reach W&B.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dse.errors import choose

LOGGERS = ("none", "csv", "wandb")


@dataclass(frozen=True)
class LoggerConfig:
    """The `logger` of a run: none, csv or wandb, and W&B's project, entity, mode and per-trial runs."""

    name: str = "none"
    project: str | None = None  # None: 'dse'
    entity: str | None = None
    mode: str = "auto"  # auto | online | offline | disabled (dse.results.wandb_log.wandb_mode)
    trials: bool = True  # one W&B run per trial, with its learning curves


def wandb_mode(requested: str = "auto") -> str:
    """online when a key (or WANDB_MODE) allows it, else offline; 'disabled' stays disabled."""
    if requested and requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def init_run(logger: LoggerConfig, run_dir: Path, study: str, name: str, job_type: str, config: dict):
    """A W&B run under <run_dir>/wandb, never waiting on the network for long."""
    import wandb

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    # x_disable_meta: W&B would otherwise record the command line, which may hold a storage password
    settings = wandb.Settings(silent=True, console="off", init_timeout=30, x_disable_stats=True, x_disable_meta=True,
                              save_code=False, disable_code=True, disable_git=True)
    return wandb.init(project=logger.project or "dse", entity=logger.entity, group=study, name=name,
                      job_type=job_type, config=config, dir=str(run_dir), mode=wandb_mode(logger.mode),
                      reinit="create_new", settings=settings)


class Loggers:
    """Makes the Lightning logger of each trial for logger=none|csv|wandb."""

    def __init__(self, config: LoggerConfig, run_dir: Path, study: str):
        self.config = config
        self.name = choose("logger", config.name, {k: k for k in LOGGERS})
        self.run_dir = Path(run_dir)
        self.study = study
        self.runs = {}
        if self.name == "wandb":
            self.announce()

    def announce(self, say=print) -> None:
        """Say once whether W&B is online, and where offline runs go and how to upload them."""
        mode = wandb_mode(self.config.mode)
        if mode == "offline":
            where = self.run_dir / "wandb"
            say(f"W&B: offline (no WANDB_API_KEY); runs are written to {where}/offline-run-*; upload them "
                f"later with `wandb sync {where}/offline-run-*`")
        elif mode == "disabled":
            say("W&B: disabled (WANDB_MODE=disabled); nothing is logged")
        else:
            say(f"W&B: online, project {self.config.project or 'dse'}, group {self.study}")

    def trial(self, number: int, point, params: int, flops: int, trial_params: dict):
        """The Lightning logger for one trial (None for logger=none)."""
        if self.name == "csv":
            from lightning.pytorch.loggers import CSVLogger

            return CSVLogger(str(self.run_dir / "csv"), name=f"trial_{number:04d}", version="")
        if self.name == "wandb" and self.config.trials:
            from lightning.pytorch.loggers import WandbLogger

            config = {"point": point.to_dict(), "point_id": point.id, "params": int(params), "flops": int(flops),
                      "trial": number, **{f"space.{k}": v for k, v in trial_params.items()}}
            run = init_run(self.config, self.run_dir, self.study, f"trial-{number:04d}", "trial", config)
            self.runs[number] = run
            return WandbLogger(experiment=run)
        return None

    def trial_done(self, number: int, summary: dict | None = None) -> None:
        """Close the trial's W&B run."""
        run = self.runs.pop(number, None)
        if run is not None:
            if summary:
                run.summary.update(summary)
            run.finish()

    def summary(self, rows: list[dict], front: list[dict], objectives, made: dict | None = None) -> Path | None:
        """The study-summary W&B run (logger=wandb only), with how its trials were made (`made`: provenance.yaml's
        dict, dse.results.made); returns its directory."""
        if self.name != "wandb":
            return None
        return log_summary(self.config, self.run_dir, self.study, rows, front, objectives, made)


def log_summary(logger: LoggerConfig, run_dir: Path, study: str, rows: list[dict], front: list[dict], objectives,
                made: dict | None = None) -> Path:
    """One run with the trials table, the Pareto scatter and hypervolume vs trial number; its config and summary
    say how the trials were made (provenance.yaml's dict)."""
    import wandb

    from dse.results import made as origin
    from dse.results.files import scored

    columns = ["number", "state", "status", "point_id", "label", "params", "flops", "accuracy", "error",
               "epochs", "train_seconds", "reason"]
    config = {"objectives": list(objectives), "study": study, **({"provenance": made} if made else {})}
    run = init_run(logger, run_dir, study, "summary", "summary", config)
    table = wandb.Table(columns=columns + ["pareto"])
    front_ids = {r["number"] for r in front}
    for r in rows:
        table.add_data(*[r.get(c) for c in columns], r["number"] in front_ids)
    run.log({"trials": table})
    done = scored(rows)
    scatter = wandb.Table(columns=["mflops", "accuracy", "number"],
                          data=[[r["flops"] / 1e6, r["accuracy"], r["number"]] for r in done])
    run.log({"pareto": wandb.plot.scatter(scatter, "mflops", "accuracy", title=f"{study}: accuracy vs MFLOPs")})
    curve = hypervolume_curve(rows)
    for number, hv in curve:
        run.log({"trial": number, "hypervolume": hv})
    hv_table = wandb.Table(columns=["trial", "hypervolume"], data=[list(p) for p in curve])
    run.log({"hypervolume_curve": wandb.plot.line(hv_table, "trial", "hypervolume", title="hypervolume")})
    try:  # the design-space panels (dse.results.wandb_panels): EDF, trends, importance; never fail the summary
        from dse.results import wandb_panels
        wandb_panels.log_analysis(run, rows, study, run_dir)
    except Exception as exc:  # noqa: BLE001 - W&B never fails a study
        run.summary["analysis_error"] = f"{type(exc).__name__}: {exc}"
    run.summary.update({"n_trials": len(rows), "n_ok": len(done), "pareto_size": len(front),
                        "hypervolume": curve[-1][1] if curve else 0.0,
                        "trained_as": origin.words(made) if made else ""})
    path = Path(run.dir).parent
    run.finish()
    return path


def hypervolume_2d(points, ref=(1.0, 1.0)) -> float:
    """Area dominated by `points` (both coordinates minimised) and bounded by `ref`."""
    return _sweep([(x, y) for x, y in points if x < ref[0] and y < ref[1]], ref)


def _sweep(points, ref) -> float:
    """Hypervolume by a sweep over x: each non-dominated point adds the strip up to the next one."""
    front, best_y = [], float("inf")
    for x, y in sorted(points):
        if y < best_y:
            front.append((x, y))
            best_y = y
    area = 0.0  # front is sorted by x with falling y
    for i, (x, y) in enumerate(front):
        next_x = front[i + 1][0] if i + 1 < len(front) else ref[0]
        area += (next_x - x) * (ref[1] - y)
    return area


def hypervolume_curve(rows: list[dict]) -> list[tuple[int, float]]:
    """Hypervolume of (error, FLOPs / reference FLOPs) after each trial; reference (1, 1.1 x max FLOPs)."""
    done = [r for r in rows if r.get("status") == "ok" and r.get("error") is not None]
    if not done:
        return []
    ref_flops = 1.1 * max(r["flops"] for r in done)
    out, seen = [], []
    for r in sorted(rows, key=lambda r: r["number"]):
        if r in done:
            seen.append((r["error"], r["flops"] / ref_flops))
        out.append((r["number"], hypervolume_2d(seen)))
    return out
