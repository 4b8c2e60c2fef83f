"""What a run directory says about its run: the config.yaml that `python -m dse.search` wrote there, read once.

The commands that open a finished run (dse.report, dse.analyze, dse.table) read it here into a `SavedRun` and
pass its typed values on: the study's name, where its storage is, the space file, the W&B project and, for
studies older than per-trial settings (dse.provenance), how their trials were trained. Nothing else reads
config.yaml; the storage's own records come first wherever they exist.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dse import yamlfile
from dse.errors import UserError


@dataclass(frozen=True)
class SavedRun:
    """The run's saved config, as far as the commands that read a finished run need it (None: not recorded)."""

    study_name: str | None = None
    storage: str | None = None  # masked when it held a password
    space_file: str | None = None
    wandb_entity: str | None = None
    wandb_project: str | None = None
    trained_as: str | None = None  # 'Trained as: …' from the data, trainer and model keys

    @classmethod
    def read(cls, run_dir: Path) -> "SavedRun":
        """The SavedRun of <run_dir>/config.yaml (all None when there is none)."""
        if Path(run_dir).exists() and not Path(run_dir).is_dir():
            raise UserError(f"run directory {run_dir} is a file, not a folder")
        path = Path(run_dir) / "config.yaml"
        if not path.exists():
            return cls()
        cfg = yamlfile.read(path, "run config") or {}
        if not isinstance(cfg, dict):
            raise UserError(f"{path}: a run's config.yaml must be a mapping of keys, got {type(cfg).__name__}")
        space, logger = _node(cfg, "space"), _node(cfg, "logger")
        return cls(study_name=_node(cfg, "study").get("name"), storage=cfg.get("storage"),
                   space_file=space.get("file"), wandb_entity=logger.get("entity"),
                   wandb_project=logger.get("project"), trained_as=_trained_as(cfg))


def _node(cfg: dict, key: str) -> dict:
    value = cfg.get(key)
    return value if isinstance(value, dict) else {}


def _trained_as(cfg: dict) -> str:
    """How the run's trials were trained, in the words of a table's note."""
    data, trainer, model = _node(cfg, "data"), _node(cfg, "trainer"), _node(cfg, "model")
    parts = [f"data {data.get('name')}" + (f" ({data['subset']} training samples)" if data.get("subset") else ""),
             f"{trainer.get('max_epochs') or 'recipe'} epochs", f"recipe {trainer.get('recipe') or 'default'}"]
    if trainer.get("schedule"):
        parts.append(f"{trainer['schedule']} lr {trainer.get('lr')}")
    if data.get("augment") is False:
        parts.append("no augmentation")
    if (model.get("width_scale") or 1.0) != 1.0:
        parts.append(f"widths x{model['width_scale']} (at least {model.get('min_width', 4)} channels)")
    return "Trained as: " + ", ".join(parts) + "; error on the held-out test set."
