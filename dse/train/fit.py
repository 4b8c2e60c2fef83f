"""Train one Point on one Data with Lightning: pruning, divergence and OOM handling.

`fit(point, data, recipe)` returns a `TrainResult` whose `status` is ok, pruned, diverged or oom; any other
error propagates to the caller. The recipe (how to train) is a dse.train.recipe.Recipe; the LightningModule
and its step loop are dse.train.module's, imported inside the fit so that importing this module does not load
Lightning.

On a GPU a fit is GPU-resident: the data sit on the device (dse.train.datasets.Batches), the step loop runs under bf16
autocast (`precision: auto`) on channels_last tensors, the training forward is compiled (`compile: auto` =
on CUDA only; compile time counts in the trial's seconds), and nothing in the step loop waits for the device:
the loss sum and the validation counts stay there and are read once per epoch, and NaN/inf is watched with
asynchronous copies (dse.train.module.LossWatch). Validation and test run the same net eagerly (their batch
sizes differ).
"""
from __future__ import annotations

import contextlib
import gc
import logging
import time
import warnings
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from dse.train import ddp, faults
from dse.train.datasets import Batches, Split
# The recipe's names, as fit's callers know them (dse.train.recipe defines them).
from dse.train.recipe import RECIPES, Recipe, compiles, lr_factor, recipe, scheduler  # noqa: F401


@dataclass
class TrainResult:
    """What a fit produced: final validation accuracy, optional test accuracy, and how it ended."""

    val_acc: float | None
    test_acc: float | None
    epochs: int
    seconds: float
    status: str  # ok | pruned | paused | diverged | oom
    reason: str = ""
    batch_size: int = 0
    history: list[dict] = field(default_factory=list)
    cpu_seconds: float = 0.0  # CPU time of this process during the fit, all threads (cost on a shared machine)


def quiet() -> None:
    """Silence Lightning's banner/tip lines, its srun hint and the pytree deprecation warning (sweeps run many
    Trainers)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*is an invalid value for the `limit_.*")
    warnings.filterwarnings("ignore", message=r".*reported value is ignored because this `step=.*")  # DDP pruning
    warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")  # reduced
    # Lightning's hint to prepend `srun`, once per Trainer wherever SLURM is installed: dse starts its own tasks
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not used.*")


def _precision(recipe: Recipe, on_gpu: bool) -> str:
    if recipe.precision != "auto":
        return {"32": "32-true"}.get(str(recipe.precision), str(recipe.precision))
    if not on_gpu:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def _on_gpu(recipe: Recipe) -> bool:
    return recipe.accelerator in ("gpu", "cuda") or (recipe.accelerator == "auto" and torch.cuda.is_available())


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


class Pruned(Exception):
    """A pruning callback stopped the fit; the message says why."""


class Paused(Pruned):
    """A pruning callback paused the fit at a rung after writing a checkpoint a later fit may resume from."""


def fit(point, data, recipe: Recipe, logger=None, callbacks=(), progress: bool = True,
        resume: str | None = None) -> TrainResult:
    """Train `point` (a Point, or an nn.Module) on `data` with the caller's Lightning `callbacks`; status ok /
    pruned / paused / diverged / oom. `resume`: a checkpoint a paused fit of the same point and recipe wrote
    (Trainer.save_checkpoint): training goes on from its epoch, with its weights, optimizer, schedule, history,
    batch order and RNG.

    A pruning callback is one with `check_pruned()`: it ends the fit by raising `Pruned` from a hook, or from
    `check_pruned()`, which fit calls after training (under DDP the decision travels through the storage).
    With one, the DDP ranks Lightning starts join its broadcast (dse.train.ddp). A callback whose `pruned` is
    true after training (a DDP follower told to stop by rank 0) also ends the fit as pruned.
    """
    start, cpu = time.perf_counter(), time.process_time()
    result = _fit_once(point, data, recipe, logger, callbacks, progress, resume)
    if result.status == "oom" and recipe.oom_retry and recipe.batch_size > 1 and resume is None:
        _free_memory()
        half = replace(recipe, batch_size=recipe.batch_size // 2)
        result = _fit_once(point, data, half, logger, callbacks, progress)
        result.reason = f"{result.reason or result.status} (retried at batch size {half.batch_size} after oom)"
    result.seconds = time.perf_counter() - start
    result.cpu_seconds = time.process_time() - cpu
    return result


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _fit_once(point, data, recipe, logger, callbacks, progress, resume=None) -> TrainResult:
    """One Lightning fit at `recipe.batch_size`; maps divergence, OOM and pruning to a status."""
    import lightning.pytorch as pl

    from dse.train.module import Classifier, Diverged, Feed  # loads Lightning

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
    module = Classifier(model, recipe, data.num_classes, train)
    cbs = [Feed((train, val, test), on_gpu and recipe.channels_last), *callbacks]
    cbs += faults.callbacks()  # TEST HOOK: empty unless env DSE_TEST_FAULT is set (see dse/train/faults.py)
    pruners = [cb for cb in callbacks if hasattr(cb, "check_pruned")]
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
        sizes = (len(data.train), len(data.val), recipe.batch_size) if isinstance(data.train, Split) else None
        share = ddp.share(point, recipe.seed, bool(pruners), sizes) if not isinstance(point, nn.Module) \
            else contextlib.nullcontext()
        with share:  # DDP ranks that Lightning starts train this point too (dse.train.ddp)
            trainer.fit(module, train_dataloaders=train, val_dataloaders=val, ckpt_path=resume)
        for pruner in pruners:
            pruner.check_pruned()  # under DDP the pruning decision travels through the storage
        if any(getattr(cb, "pruned", False) for cb in cbs):  # a DDP follower told to stop by rank 0
            status, reason = "pruned", "pruned by rank 0"
    except Paused as exc:
        status, reason = "paused", str(exc)
    except Pruned as exc:
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
