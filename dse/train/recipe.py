"""How to train: a `Recipe` (SGD with Nesterov momentum, a learning-rate schedule, the Trainer's settings),
the papers' named recipes, and the rules a fit reads from it (the lr schedule, whether to compile).

`recipe(cfg)` turns a mapping (the `trainer:` section of a fidelity preset) into a `Recipe`; a `recipe: <name>`
key starts from a named recipe in `RECIPES`. Plain data: torch is imported only where a scheduler is made.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, fields, replace
from fractions import Fraction

from dse.errors import UserError, choose

SCHEDULES = ("step", "cosine", "onecycle", "constant", "wsd")
PRECISIONS = ("auto", "32", "32-true", "bf16-mixed", "16-mixed")
COMPILES = ("auto", "true", "false")  # trainer.compile (Hydra gives true/false as booleans)


@dataclass(frozen=True)
class Recipe:
    """How to train: SGD with Nesterov momentum, a learning-rate schedule, and the Trainer's settings."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # step | cosine | onecycle | constant | wsd
    milestones: tuple[int, ...] = ()  # epochs at which a step schedule multiplies lr by gamma
    gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up (step, cosine, constant); onecycle's rising part (0: 30%)
    warmup_fraction: float = 0.05  # wsd: linear warm-up over this share of all steps
    decay_fraction: float = 0.2  # wsd: linear decay to 0 over the last share of all steps
    label_smoothing: float = 0.0
    seed: int = 0
    precision: str = "auto"  # auto: bf16-mixed on a GPU that has it, else 16-mixed on GPU, 32 on CPU
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    limit_batches: int | None = None  # at most this many train and val batches per epoch (smoke runs)
    eval_test: bool = False  # also score the test set after training
    threads: int | None = None  # torch CPU threads (None: leave as is)
    oom_retry: bool = False  # on out-of-memory, try once more at half the batch size
    channels_last: bool = True  # on GPU only
    deterministic: bool = False  # Lightning's deterministic algorithms (slower on GPU)
    compile: bool | str = "auto"  # torch.compile the training forward: auto (on CUDA only), true, false

    def __post_init__(self):
        choose("trainer.schedule", self.schedule, dict.fromkeys(SCHEDULES))
        choose("trainer.precision", str(self.precision), dict.fromkeys(PRECISIONS))
        if not isinstance(self.compile, bool) and self.compile not in COMPILES:
            raise UserError(f"trainer.compile: must be auto, true or false, got {self.compile!r}")
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                key = "max_epochs" if name == "epochs" else name  # the key a user types
                raise UserError(f"trainer.{key}: must be a positive integer, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise UserError(f"trainer.lr: must be > 0, got {self.lr}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UserError(f"trainer.label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.warmup_epochs < self.epochs or self.warmup_epochs < 0:
            raise UserError(f"trainer.warmup_epochs: must be in [0, epochs), got {self.warmup_epochs}")
        for name in ("warmup_fraction", "decay_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise UserError(f"trainer.{name}: must be a number in [0, 1], got {value!r}")
        if self.warmup_fraction + self.decay_fraction > 1.0:
            raise UserError(f"trainer.warmup_fraction + trainer.decay_fraction: must be <= 1, got "
                            f"{self.warmup_fraction} + {self.decay_fraction}")


# Named recipes: the papers' full schedules (a `trainer.recipe: <name>` key starts from one of these).
RECIPES = {
    # Zagoruyko & Komodakis, Wide Residual Networks (CIFAR): 200 epochs, lr 0.1 x0.2 at 60/120/160, batch 128.
    "wrn": Recipe(epochs=200, batch_size=128, lr=0.1, schedule="step", milestones=(60, 120, 160), gamma=0.2),
    # Xie et al., ResNeXt (CIFAR): 300 epochs, lr 0.1 x0.1 at 150 and 225, batch 128.
    "resnext": Recipe(epochs=300, batch_size=128, lr=0.1, schedule="step", milestones=(150, 225), gamma=0.1),
    # He et al., ResNet (CIFAR): 64k iterations at batch 128 ~ 164 epochs, x0.1 at 32k/48k ~ epochs 82/123.
    "resnet": Recipe(epochs=164, batch_size=128, lr=0.1, schedule="step", milestones=(82, 123), gamma=0.1,
                     weight_decay=1e-4),
    # ImageNet (data=imagenet): batch 256, SGD momentum 0.9, wd 1e-4, lr 0.1 divided by 10 at fixed epochs.
    # Nesterov as in the authors' Torch code (train.lua optimState: nesterov = true). batch_size is per process:
    # under DDP give 256 / devices.
    # Xie et al. 2017 (ResNeXt) Sec 4: "lr 0.1 divided by 10 three times (fb.resnet.torch schedule)"
    # (paper_refs.yaml resnext.imagenet_recipe); the epochs are the authors' code, repo:facebookresearch/ResNeXt
    # opts.lua (nEpochs 100 for imagenet) and train.lua (lr x0.1 every 30 epochs): x0.1 at 30, 60, 90 of 100.
    "resnext_imagenet": Recipe(epochs=100, batch_size=256, lr=0.1, weight_decay=1e-4, schedule="step",
                               milestones=(30, 60, 90), gamma=0.1),
    # He et al. 2016 (ResNet) divide by 10 "when the error plateaus", for up to 60e4 iterations (~120 epochs):
    # no fixed epochs in the paper (and none in paper_refs.yaml). The fixed schedule is fb.resnet.torch's, the
    # reimplementation ResNeXt builds on: repo:facebookarchive/fb.resnet.torch opts.lua (nEpochs 90 for
    # imagenet) and train.lua (lr x0.1 every 30 epochs): x0.1 at 30 and 60 of 90.
    "resnet_imagenet": Recipe(epochs=90, batch_size=256, lr=0.1, weight_decay=1e-4, schedule="step",
                              milestones=(30, 60), gamma=0.1),
    # Zagoruyko & Komodakis (WRN) on ImageNet: "ImageNet via fb.resnet.torch" (paper_refs.yaml
    # wide_resnet.training_recipe.framework): fb.resnet.torch's schedule is assumed; the paper prints no epochs.
    "wrn_imagenet": Recipe(epochs=90, batch_size=256, lr=0.1, weight_decay=1e-4, schedule="step",
                           milestones=(30, 60), gamma=0.1),
    # The CPU proxy (Fashion-MNIST subset, a few epochs): one-cycle, 30% warm-up.
    "proxy": Recipe(epochs=3, batch_size=128, lr=0.1, schedule="onecycle"),
}
ALIASES = {"max_epochs": "epochs"}  # Lightning's name for the same thing


def recipe(cfg=None) -> Recipe:
    """A Recipe from a mapping; `recipe: <name>` starts from RECIPES[name]; unknown keys raise UserError."""
    cfg = dict(cfg or {})
    base = cfg.pop("recipe", None)
    start = choose("trainer.recipe", base, RECIPES) if base else Recipe()
    known = {f.name for f in fields(Recipe)}
    changes = {}
    for key, value in cfg.items():
        name = ALIASES.get(key, key)
        if name not in known:
            raise UserError(f"trainer: unknown key {key!r}; valid: {', '.join(sorted(known | set(ALIASES) | {'recipe'}))}")
        changes[name] = tuple(value) if name == "milestones" else value
    try:
        return replace(start, **changes)
    except TypeError as exc:
        raise UserError(f"trainer: {exc}") from None


# ----- learning-rate schedules (per optimizer step) -----

def lr_factor(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the base lr at optimizer step `step` (step, cosine, constant and wsd schedules)."""
    if recipe.schedule == "wsd":
        return wsd_factor(step, recipe.epochs * steps_per_epoch, recipe.warmup_fraction, recipe.decay_fraction)
    epoch = step / steps_per_epoch
    warm = recipe.warmup_epochs
    if warm and epoch < warm:
        return (step + 1) / (warm * steps_per_epoch)
    if recipe.schedule == "step":
        return recipe.gamma ** sum(epoch >= m for m in recipe.milestones)
    if recipe.schedule == "cosine":
        t = (epoch - warm) / max(recipe.epochs - warm, 1e-9)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return 1.0


def wsd_phases(total: int, warmup_fraction: float, decay_fraction: float) -> tuple[int, int]:
    """(warm-up steps, first step of the decay) of a warmup-stable-decay schedule over `total` steps."""
    warm = round(warmup_fraction * total)
    decay = round(decay_fraction * total)
    return warm, max(total - decay, warm)


def wsd_factor(step: int, total: int, warmup_fraction: float, decay_fraction: float) -> float:
    """Warmup-stable-decay ("trapezoidal"): linear up to 1 over the warm-up, 1, then linear down to 0 at `total`."""
    warm, decay_start = wsd_phases(total, warmup_fraction, decay_fraction)
    if step < warm:
        return (step + 1) / warm
    if step < decay_start:
        return 1.0
    return max(total - step, 0) / max(total - decay_start, 1)


def scheduler(recipe: Recipe, optimizer, steps_per_epoch: int):
    """The torch scheduler for `recipe`, stepped once per optimizer step."""
    import torch

    if recipe.schedule == "onecycle":
        pct = recipe.warmup_epochs / recipe.epochs if recipe.warmup_epochs else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch, pct_start=pct,
            cycle_momentum=False, div_factor=25.0, final_div_factor=1e4)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(recipe, s, steps_per_epoch))


def parse_rungs(text) -> tuple[Fraction, ...]:
    """'1/9,1/3' (or a list of numbers) -> sorted shares in (0, 1); UserError naming the bad value."""
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    out = []
    for item in items:
        try:
            value = Fraction(str(item))
        except (ValueError, ZeroDivisionError):
            raise UserError(f"rungs: {item!r} is not a fraction; valid: shares of the budget in (0, 1), "
                            f"e.g. 1/9,1/3") from None
        if not 0 < value < 1:
            raise UserError(f"rungs: {item} is not in (0, 1); valid: shares of the budget, e.g. 1/9,1/3")
        out.append(value)
    return tuple(sorted(set(out)))


def compiles(recipe: Recipe, on_cuda: bool) -> bool:
    """Does a fit torch.compile the training forward? true/false as given; auto: on CUDA (with Triton) only."""
    value = str(recipe.compile).lower()
    if value == "auto":
        return on_cuda and importlib.util.find_spec("triton") is not None
    return value == "true"
