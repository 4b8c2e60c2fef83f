"""Train one Point on one Data with Lightning: the papers' SGD recipes, pruning, divergence and OOM handling.

`recipe(cfg)` turns a mapping (the `trainer:` section of a fidelity preset) into a `Recipe`; a `recipe: <name>`
key starts from a named recipe in `RECIPES`. `fit(point, data, recipe)` returns a `TrainResult` whose
`status` is ok, pruned, diverged or oom; any other error propagates to the caller.

On a GPU a fit is GPU-resident: the data sit on the device (dse.train.datasets.Batches), the step loop runs under bf16
autocast (`precision: auto`) on channels_last tensors, the training forward is compiled (`compile: auto` =
on CUDA only; compile time counts in the trial's seconds), and nothing in the step loop waits for the device:
the loss sum and the validation counts stay there and are read once per epoch, and NaN/inf is watched with
asynchronous copies (`LossWatch`). Validation and test run the same net eagerly (their batch sizes differ).
"""
from __future__ import annotations

import contextlib
import gc
import importlib.util
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field, fields, replace

import torch
from torch import nn

from dse.errors import UserError, choose
from dse.train.probe import MEMORY_PROBE_ENV, PROBED, write_memory_probe

SCHEDULES = ("step", "cosine", "onecycle", "constant")
PRECISIONS = ("auto", "32", "32-true", "bf16-mixed", "16-mixed")
COMPILES = ("auto", "true", "false")  # trainer.compile (Hydra gives true/false as booleans)
WATCH_EVERY = 50  # steps between two looks at the running loss for NaN/inf (LossWatch)


@dataclass(frozen=True)
class Recipe:
    """How to train: SGD with Nesterov momentum, a learning-rate schedule, and the Trainer's settings."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # step | cosine | onecycle | constant
    milestones: tuple[int, ...] = ()  # epochs at which a step schedule multiplies lr by gamma
    gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up (step, cosine, constant); onecycle's rising part (0: 30%)
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


@dataclass
class TrainResult:
    """What a fit produced: final validation accuracy, optional test accuracy, and how it ended."""

    val_acc: float | None
    test_acc: float | None
    epochs: int
    seconds: float
    status: str  # ok | pruned | diverged | oom
    reason: str = ""
    batch_size: int = 0
    history: list[dict] = field(default_factory=list)
    cpu_seconds: float = 0.0  # CPU time of this process during the fit, all threads (cost on a shared machine)


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class LossWatch:
    """NaN/inf detection on the epoch's running loss sum that never waits for the device.

    Every `every` steps the sum is copied to host memory asynchronously (pinned, on CUDA) and an event is
    recorded; a later look reads the copy only once its event has completed (`query`, which does not block).
    A NaN anywhere in the epoch stays in the sum, so a divergence is seen within about 2 x `every` steps.
    """

    def __init__(self, every: int, like: torch.Tensor):
        self.every, self.event, self.step_of, self.pending = every, None, 0, False
        self.host = torch.empty((), dtype=like.dtype, pin_memory=like.is_cuda)  # allocated before the steps

    def look(self, loss_sum: torch.Tensor, step: int, epoch: int) -> None:
        """At every `every`-th step: check the last copy if it has landed, then start a new one."""
        if step % self.every:
            return
        if self.pending and (self.event is None or self.event.query()):
            self.pending = False
            value = float(self.host)  # host memory: no device sync
            if not math.isfinite(value):
                raise Diverged(f"loss is {value} at epoch {epoch} step {self.step_of} (seen at step {step})")
        if self.pending:
            return  # the device is more than `every` steps behind: look again next time
        self.host.copy_(loss_sum, non_blocking=loss_sum.is_cuda)
        if loss_sum.is_cuda:
            self.event = torch.cuda.Event()
            self.event.record()
        self.step_of, self.pending = step, True


# ----- learning-rate schedules (per optimizer step) -----

def lr_factor(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the base lr at optimizer step `step` (step, cosine and constant schedules)."""
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


def scheduler(recipe: Recipe, optimizer, steps_per_epoch: int):
    """The torch scheduler for `recipe`, stepped once per optimizer step."""
    if recipe.schedule == "onecycle":
        pct = recipe.warmup_epochs / recipe.epochs if recipe.warmup_epochs else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch, pct_start=pct,
            cycle_momentum=False, div_factor=25.0, final_div_factor=1e4)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(recipe, s, steps_per_epoch))


# ----- the LightningModule -----

def _module_class():
    """Build the LightningModule class lazily (importing Lightning costs seconds)."""
    import lightning.pytorch as pl

    class Classifier(pl.LightningModule):
        """A network trained with SGD + cross-entropy; logs train/loss, val/loss, val/acc, test/acc, lr.

        The step loop never waits for the device: the loss sum and the correct counts are accumulated there
        and read once per epoch; NaN/inf is watched without a sync (LossWatch).
        """

        def __init__(self, model: nn.Module, recipe: Recipe, num_classes: int, train_batches):
            super().__init__()
            self.model, self.recipe, self.train_batches = model, recipe, train_batches
            self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
            self.history: list[dict] = []
            self.compiled = ()  # (torch.compile(model),) when compiling: a tuple, so no second copy is registered
            self._loss_sum = None
            self._steps = [0]  # a list: no nn.Module.__setattr__ per step
            self._epoch_loss = None
            self._watch = None  # a LossWatch per epoch
            self._epoch_start = 0.0
            self._eval = None  # device sums of (loss x n, correct) over the validation or test set
            self._eval_count = 0
            self._probe = None  # where to write the GPU memory probe (dse.trials.pool), while not yet written

        def setup(self, stage):
            on_cuda = self.trainer.strategy.root_device.type == "cuda"
            if stage == "fit" and not self.compiled and compiles(self.recipe, on_cuda):
                torch._dynamo.reset()  # earlier trials' graphs: each new net counts against the recompile limit
                self.compiled = (torch.compile(self.model),)  # lazy: traced at the first step, inside the fit's time
            self._probe = os.environ.get(MEMORY_PROBE_ENV) if stage == "fit" and on_cuda and not PROBED else None

        def on_train_batch_end(self, outputs, batch, batch_idx):
            if self._probe and batch_idx >= 3:  # after a few optimizer steps: weights, grads, momentum, activations
                self._write_probe()

        def _write_probe(self) -> None:
            """Write this process's GPU memory numbers for dse.trials.pool's packing rule, once per process."""
            write_memory_probe(self._probe, self.trainer.strategy.root_device)
            self._probe = None

        def forward(self, x):
            return self.model(x)

        def on_train_epoch_start(self):
            self._loss_sum = torch.zeros((), device=self.device)
            self._steps = [0]
            self._epoch_loss = None
            self._watch = LossWatch(WATCH_EVERY, self._loss_sum)
            self._epoch_start = time.perf_counter()

        def training_step(self, batch, batch_idx):
            x, y = batch
            net = self.compiled[0] if self.compiled else self.model
            loss = self.criterion(net(x), y)
            self._loss_sum.add_(loss.detach())  # in place: no nn.Module.__setattr__ per step
            self._steps[0] += 1
            self._watch.look(self._loss_sum, self._steps[0], self.current_epoch)
            return loss

        def _start_eval(self):
            self._eval = torch.zeros(2, device=self.device)
            self._eval_count = 0

        def _add_eval(self, batch):
            """Add one batch's summed loss and correct count on the device (no sync); return nothing."""
            x, y = batch
            logits = self.model(x)  # eager: validation's other batch sizes would make compile trace again
            self._eval.add_(torch.stack([self.criterion(logits, y).float() * len(y),
                                         (logits.argmax(1) == y).sum().float()]))
            self._eval_count += len(y)

        def _eval_totals(self) -> tuple[torch.Tensor, torch.Tensor]:
            """(mean loss, accuracy) over every rank's share, still on the device."""
            sums = torch.cat([self._eval, torch.tensor([float(self._eval_count)], device=self.device)])
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")  # DDP: all ranks' sums; else as is
            count = sums[2].clamp(min=1.0)
            return sums[0] / count, sums[1] / count

        def on_validation_epoch_start(self):
            self._start_eval()

        def validation_step(self, batch, batch_idx):
            self._add_eval(batch)

        def on_validation_epoch_end(self):
            loss, acc = self._eval_totals()
            self.log("val/loss", loss)
            self.log("val/acc", acc)
            self.log("val/error", 1.0 - acc)  # what a pruner watches when the study minimizes error
            if not self.trainer.sanity_checking:
                loss_value, acc_value = torch.stack([loss, acc]).tolist()  # the one read of validation
                self._record({"val/acc": acc_value, "val/loss": loss_value})

        def on_test_epoch_start(self):
            self._start_eval()

        def test_step(self, batch, batch_idx):
            self._add_eval(batch)

        def on_test_epoch_end(self):
            self.log("test/acc", self._eval_totals()[1])

        def on_train_epoch_end(self):
            if self._probe:  # an epoch shorter than the probe's step
                self._write_probe()
            self.log("train/loss", self._mean_loss(), sync_dist=True)
            self._record({})  # epochs without validation

        def _mean_loss(self) -> float:
            """The epoch's mean training loss: read from the device once per epoch; Diverged if not finite."""
            if self._epoch_loss is None:
                loss = (self._loss_sum / max(self._steps[0], 1)).item()
                if not math.isfinite(loss):
                    raise Diverged(f"mean training loss is {loss} in epoch {self.current_epoch}")
                self._epoch_loss = loss
            return self._epoch_loss

        def _record(self, extra: dict) -> None:
            """Add (or complete) this epoch's row of the history."""
            epoch = self.current_epoch + 1
            if self.history and self.history[-1]["epoch"] == epoch:
                self.history[-1].update(extra)
                return
            self.history.append({"epoch": epoch, "train/loss": self._mean_loss(),
                                 "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
                                 "seconds": time.perf_counter() - self._epoch_start, **extra})

        def configure_optimizers(self):
            r = self.recipe
            decay, no_decay = [], []
            for p in self.model.parameters():
                (no_decay if p.ndim <= 1 else decay).append(p)
            groups = [{"params": decay, "weight_decay": r.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
            opt = torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov and r.momentum > 0)
            sched = scheduler(r, opt, len(self.train_batches))  # after DDP sharding
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return Classifier


def quiet() -> None:
    """Silence Lightning's banner/tip lines and the pytree deprecation warning (sweeps run many Trainers)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*is an invalid value for the `limit_.*")
    warnings.filterwarnings("ignore", message=r".*reported value is ignored because this `step=.*")  # DDP pruning
    warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")  # reduced


def _precision(recipe: Recipe, on_gpu: bool) -> str:
    if recipe.precision != "auto":
        return {"32": "32-true"}.get(str(recipe.precision), str(recipe.precision))
    if not on_gpu:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def _on_gpu(recipe: Recipe) -> bool:
    return recipe.accelerator in ("gpu", "cuda") or (recipe.accelerator == "auto" and torch.cuda.is_available())


def compiles(recipe: Recipe, on_cuda: bool) -> bool:
    """Does a fit torch.compile the training forward? true/false as given; auto: on CUDA (with Triton) only."""
    value = str(recipe.compile).lower()
    if value == "auto":
        return on_cuda and importlib.util.find_spec("triton") is not None
    return value == "true"


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def fit(point, data, recipe: Recipe, trial=None, logger=None, callbacks=(), progress: bool = True) -> TrainResult:
    """Train `point` (a Point, or an nn.Module) on `data`; status ok / pruned / diverged / oom."""
    start, cpu = time.perf_counter(), time.process_time()
    result = _fit_once(point, data, recipe, trial, logger, callbacks, progress)
    if result.status == "oom" and recipe.oom_retry and recipe.batch_size > 1:
        _free_memory()
        half = replace(recipe, batch_size=recipe.batch_size // 2)
        result = _fit_once(point, data, half, trial, logger, callbacks, progress)
        result.reason = f"{result.reason or result.status} (retried at batch size {half.batch_size} after oom)"
    result.seconds = time.perf_counter() - start
    result.cpu_seconds = time.process_time() - cpu
    return result


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _fit_once(point, data, recipe, trial, logger, callbacks, progress) -> TrainResult:
    """One Lightning fit at `recipe.batch_size`; maps divergence, OOM and pruning to a status."""
    import lightning.pytorch as pl
    import optuna

    from dse.train import ddp

    from dse.train import faults
    from dse.train.datasets import Batches

    quiet()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    pl.seed_everything(recipe.seed, workers=False, verbose=False)
    model = point if isinstance(point, nn.Module) else _build(point, data)
    batches = getattr(data, "batches", None) or (lambda split, **kw: Batches(split, data, **kw))  # dse.train.imagenet
    train = batches(data.train, batch_size=recipe.batch_size, train=True, seed=recipe.seed, limit=recipe.limit_batches)
    val = batches(data.val, batch_size=max(recipe.batch_size, 256), limit=recipe.limit_batches)
    test = batches(data.test, batch_size=max(recipe.batch_size, 256))
    on_gpu = _on_gpu(recipe)
    module = _module_class()(model, recipe, data.num_classes, train)
    cbs = [_feed_callback_class()((train, val, test), on_gpu and recipe.channels_last), *callbacks]
    cbs += faults.callbacks()  # TEST HOOK: empty unless env DSE_TEST_FAULT is set (see dse/train/faults.py)
    pruner = _pruner(trial)
    if pruner is not None:
        cbs.append(pruner)
    if progress:
        from lightning.pytorch.callbacks import TQDMProgressBar

        cbs.append(TQDMProgressBar(refresh_rate=max(1, len(train) // 20)))
    trainer = pl.Trainer(
        max_epochs=recipe.epochs, accelerator=recipe.accelerator, devices=recipe.devices, strategy=recipe.strategy,
        precision=_precision(recipe, on_gpu), logger=logger if logger is not None else False, callbacks=cbs,
        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
        num_sanity_val_steps=0, log_every_n_steps=50, deterministic=recipe.deterministic,
        benchmark=on_gpu and not recipe.deterministic)
    status, reason = "ok", ""
    try:
        share = ddp.share(point, recipe.seed, pruner is not None) if not isinstance(point, nn.Module) \
            else contextlib.nullcontext()
        with share:  # DDP ranks that Lightning starts train this point too (dse.train.ddp)
            trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
        if pruner is not None:
            pruner.check_pruned()  # under DDP the pruning decision travels through the storage
        if any(getattr(cb, "pruned", False) for cb in cbs):  # a DDP follower told to stop by rank 0
            status, reason = "pruned", "pruned by rank 0"
    except optuna.TrialPruned as exc:
        status, reason = "pruned", str(exc)
    except Diverged as exc:
        status, reason = "diverged", f"diverged: {exc}"
    except BaseException as exc:  # noqa: BLE001 - only out-of-memory is ours to handle
        if not _is_oom(exc):
            _end_process_group()
            raise
        status, reason = "oom", f"oom: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
    history = module.history
    val_acc = history[-1].get("val/acc") if history else None
    test_acc = None
    if status == "ok" and recipe.eval_test:
        scores = trainer.test(module, dataloaders=test, verbose=False)
        test_acc = float(scores[0]["test/acc"]) if scores else None
    _end_process_group()
    result = TrainResult(val_acc=val_acc, test_acc=test_acc, epochs=len(history), seconds=0.0, status=status,
                         reason=reason, batch_size=recipe.batch_size, history=history)
    del trainer, module, model
    if status == "oom":
        _free_memory()
    return result


def _end_process_group() -> None:
    """Close the DDP process group: the next trial's ranks are new processes and need a new group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _build(point, data) -> nn.Module:
    from dse.network import build

    return build(point, num_classes=data.num_classes, in_chans=data.in_chans, image_size=data.image_size)


def _pruner(trial):
    """Optuna's Lightning pruning callback for single-objective studies; dse.trials.dominance's for `pruner: dominance`.

    It watches the study's own objective: val/acc when the study maximizes accuracy, val/error when it
    minimizes error (fed accuracy, a minimizing pruner would stop the best trials).
    """
    if trial is None:
        return None
    from dse.trials import dominance
    if len(trial.study.directions) > 1 and isinstance(trial.study.pruner, dominance.DominancePruner):
        return dominance.callback(trial)  # multi-objective: epsilon-dominance at each rung (dse.trials.dominance)
    if len(trial.study.directions) != 1:
        return None
    from optuna.study import StudyDirection
    from optuna_integration import PyTorchLightningPruningCallback

    maximize = trial.study.direction == StudyDirection.MAXIMIZE
    return PyTorchLightningPruningCallback(trial, monitor="val/acc" if maximize else "val/error")


def _feed_callback_class():
    import lightning.pytorch as pl

    class Feed(pl.Callback):
        """Before the optimizers are made: data to the training device, one DDP shard per rank, channels_last."""

        def __init__(self, batches, channels_last: bool):
            self.batches, self.channels_last = batches, channels_last

        def setup(self, trainer, pl_module, stage):
            device = trainer.strategy.root_device
            for b in self.batches:
                b.to(device, self.channels_last).shard(trainer.global_rank, trainer.world_size)
            if self.channels_last:
                pl_module.model.to(memory_format=torch.channels_last)

    return Feed
