"""How much does a dse trial's training loop cost over a hand-written PyTorch loop?

Both loops train the same network (a ResNet-20-style point from dse.zoo, or --point NAME) on the same
tensors (Fashion-MNIST if installed, else synthetic), with the same on-device batches, batch size, SGD
recipe, step count and threads. The first --warmup steps of each are excluded from its timing (a fresh
model's first steps are several times slower). The runs alternate (plain, dse, plain, dse, ...) and each
side keeps its best repeat, so load from other processes hits both alike. The last line is
`ratio: X` = dse img/s / plain img/s.

    python bench/overhead.py [--steps 60] [--warmup 10] [--repeats 3] [--threads 2] [--point resnet20]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch


def plain_loop(model, batches, recipe, steps: int, warmup: int) -> float:
    """A minimal SGD loop over the same batches; img/s over the steps after warm-up."""
    from dse.train import fit as train
    model.train()
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": recipe.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    sched = train.scheduler(recipe, opt, warmup + steps)  # one epoch of warmup + steps, as in the dse run
    loss_fn = torch.nn.CrossEntropyLoss()
    done, start = 0, None
    while done < warmup + steps:
        for x, y in batches:
            if done == warmup:
                start = time.perf_counter()
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            if done == warmup + steps:
                break
    return steps * batches.batch_size / (time.perf_counter() - start)


def dse_loop(model, data, recipe, steps: int, warmup: int) -> float:
    """dse.train.fit.fit for warmup + steps steps (one epoch); img/s over the steps after warm-up."""
    import lightning.pytorch as pl

    from dse.train import fit as train
    class Clock(pl.Callback):
        """Notes the time when the first timed step starts and when the last one ends."""

        def __init__(self):
            self.start = self.end = None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == warmup:
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.end = time.perf_counter()

    clock = Clock()
    result = train.fit(model, data, recipe, callbacks=[clock], progress=True)
    assert result.status == "ok", result.reason
    return steps * recipe.batch_size / (clock.end - clock.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--point", default="resnet20")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from dse import zoo

    from dse.train import datasets

    from dse.train import fit as train
    from dse.network import build

    name = "fashion_mnist" if datasets._idx_folder(datasets.DEBIAN_FASHION_MNIST) else "synthetic"
    total = args.warmup + args.steps
    data = datasets.load(name, subset=total * args.batch_size, val_subset=args.batch_size)
    point = zoo.get(args.point)
    model0 = build(point, num_classes=data.num_classes, in_chans=data.in_chans, image_size=data.image_size)
    recipe = train.recipe({"recipe": "proxy", "max_epochs": 1, "batch_size": args.batch_size,
                           "threads": args.threads, "limit_batches": total})
    print(f"{args.point} on {name} {data.image_size}px, batch {args.batch_size}, {args.steps} timed steps after "
          f"{args.warmup} warm-up, {args.threads} threads, best of {args.repeats}")
    best = {"plain": 0.0, "dse": 0.0}
    for r in range(args.repeats):
        batches = datasets.Batches(data.train, data, args.batch_size, train=True, seed=r)
        plain = plain_loop(copy.deepcopy(model0), batches, recipe, args.steps, args.warmup)
        ours = dse_loop(copy.deepcopy(model0), data, recipe, args.steps, args.warmup)
        best["plain"], best["dse"] = max(best["plain"], plain), max(best["dse"], ours)
        print(f"repeat {r}: plain {plain:.1f} img/s, dse {ours:.1f} img/s", flush=True)
    print(f"plain PyTorch loop: {best['plain']:.1f} img/s")
    print(f"dse.train.fit.fit:      {best['dse']:.1f} img/s")
    print(f"ratio: {best['dse'] / best['plain']:.3f}")


if __name__ == "__main__":
    main()
