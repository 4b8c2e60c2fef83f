"""How close is a dse trial on a GPU to a hand-tuned training loop, and how many small trials fit on one GPU?

For each net (resnet20, wrn_16_4, resnet18_cifar = ResNet-18's four stages on a 3x3 stem at 32 px), side by
side in one run, on the same synthetic CIFAR-shaped data (uint8 3x32x32, 10 classes, made on the device):
- dse: `dse.train.fit.fit` on the Point, with its defaults (bf16 autocast, channels_last, trainer.compile=auto);
- reference: a plain PyTorch loop written here the way the fastest CIFAR-10 trainers run (airbench,
  hlb-cifar10): data on the GPU, flip and pad-crop on the GPU, bf16 autocast, channels_last,
  torch.compile(model), SGD Nesterov with a one-cycle lr, and no host work per step beyond launching it
  (the loss sum is read once, at the end).
Both build the net with dse.network.build from the same seed and run the same batch size, steps and recipe. The
first --warmup steps (compilation included) are not timed; the clock syncs only at the start and the end.
FLOPs are analytic: 2 x the multiply-adds of conv and linear layers (dse.cost), x 3 for forward + backward,
per image; TFLOP/s = img/s x that. The last line is `ratio: X` = the geometric mean over the nets of
dse img/s / reference img/s.

--pack: trials/hour with K = 1, 2, 4, 8 dse trials at once on one GPU. Eight worker processes start once, each
runs one warm-up trial, then each round gives K of them --pack-trials trials; trials/hour = K x trials / the
round's wall time. A trial is resnet20 for --pack-epochs epochs of --pack-images images (compile counted in
it). Its last line is `ratio: X` = trials/hour at the largest K / at K = 1.

Without CUDA (or with --smoke) everything runs at tiny sizes in fp32 without compile: a test of the code, not
a measurement.

    python bench/gpu.py [--nets resnet20,wrn_16_4,resnet18_cifar] [--batch-size 512] [--steps 100] [--warmup 15]
    python bench/gpu.py --pack [--pack-ks 1,2,4,8] [--pack-trials 1] [--pack-images 20000] [--pack-epochs 2]
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing dse

NETS = ("resnet20", "wrn_16_4", "resnet18_cifar")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def point(name: str, size: int):
    """A named dse point at `size` px; resnet18_cifar is the ImageNet ResNet-18 with a 3x3 stem, 10 classes."""
    from dse import zoo
    from dse.point import Stem

    if name == "resnet18_cifar":
        base = zoo.get("resnet18").replace(stem=Stem("conv", 64, 3), num_classes=10, name=name)
    else:
        base = zoo.get(name)
    return base.replace(image_size=size)


def cifar_like(n_train: int, n_val: int, device, size: int = 32, seed: int = 0):
    """A dse Data of learnable CIFAR-shaped images made on `device`: a class template (4x4 blocks) plus noise."""
    from dse.train.datasets import Data, Split

    gen = torch.Generator(device=device).manual_seed(seed)
    coarse = (torch.rand(10, 3, 4, 4, generator=gen, device=device) > 0.5).float() * 0.6 + 0.2
    templates = coarse.repeat_interleave(size // 4, 2).repeat_interleave(size // 4, 3)

    def draw(n):
        y = torch.randint(0, 10, (n,), generator=gen, device=device)
        x = torch.empty(n, 3, size, size, dtype=torch.uint8, device=device)
        for i in range(0, n, 8192):
            part = templates[y[i:i + 8192]] + 0.2 * torch.randn(len(y[i:i + 8192]), 3, size, size, generator=gen,
                                                                  device=device)
            x[i:i + 8192] = (part.clamp(0, 1) * 255).round().to(torch.uint8)
        return Split(x, y)

    val = draw(n_val)
    return Data(name="synthetic_cifar", train=draw(n_train), val=val, test=val, num_classes=10, in_chans=3,
                image_size=size, mean=CIFAR_MEAN, std=CIFAR_STD, pad=4 if size >= 32 else 2, flip=True)


# ----- the reference loop -----

def pad_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad each image by `pad` and cut it back at a random offset (advanced indexing, on the device)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None], rows, cols]


def reference(net: torch.nn.Module, data, recipe, steps: int, warmup: int, cuda: bool) -> dict:
    """Train with the hand-tuned loop; img/s over the steps after warm-up, seconds of the first step, loss."""
    device = data.train.x.device
    net = net.to(device)
    if cuda:
        net = net.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # as Lightning's Trainer(benchmark=True) does for dse
    fast = torch.compile(net) if cuda else net
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": recipe.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=warmup + steps, pct_start=0.3,
                                                cycle_momentum=False, div_factor=25.0, final_div_factor=1e4)
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1) * 255
    inv_std = 1.0 / (torch.tensor(data.std, device=device).view(1, -1, 1, 1) * 255)
    bs = recipe.batch_size
    order = torch.randperm(len(data.train), device=device)
    loss_sum = torch.zeros((), device=device)
    net.train()
    start = _now(cuda)
    for step in range(warmup + steps):
        if step == warmup:
            timed = _now(cuda)
        idx = order[step * bs:(step + 1) * bs]
        x = pad_crop(data.train.x[idx], data.pad)
        x = (x.float() - mean) * inv_std
        x = torch.where(torch.rand(bs, 1, 1, 1, device=device) < 0.5, x.flip(3), x)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(fast(x), data.train.y[idx])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        loss_sum += loss.detach()
        if step == 0:
            first = _now(cuda) - start
    seconds = _now(cuda) - timed
    return {"img_s": steps * bs / seconds, "first_s": first, "loss": float(loss_sum) / (warmup + steps)}


def _now(cuda: bool) -> float:
    """perf_counter after the device has finished what was queued (the clock's only syncs)."""
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter()


# ----- dse's trial loop -----

def dse_side(pt, data, recipe, steps: int, warmup: int, cuda: bool) -> dict:
    """dse.train.fit.fit on the Point for warmup + steps steps; img/s over the steps after warm-up, fit seconds."""
    import lightning.pytorch as pl

    from dse.train import fit as train
    class Clock(pl.Callback):
        """Notes the time (after a sync) when the first timed step starts and when the last one ends."""

        start = end = None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == warmup:
                self.start = _now(cuda)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx == warmup + steps - 1:
                self.end = _now(cuda)

    clock = Clock()
    result = train.fit(pt, data, recipe, callbacks=[clock], progress=False)
    if result.status != "ok":
        sys.exit(f"dse.train.fit.fit ended {result.status}: {result.reason}")
    return {"img_s": steps * recipe.batch_size / (clock.end - clock.start), "fit_s": result.seconds,
            "loss": result.history[-1]["train/loss"]}


def matmul_tflops(cuda: bool) -> float:
    """bf16 (CUDA) or fp32 (CPU) matrix-product TFLOP/s: the device's ceiling for dense math, for scale."""
    n, dtype = (8192, torch.bfloat16) if cuda else (512, torch.float32)
    a = torch.randn(n, n, device="cuda" if cuda else "cpu", dtype=dtype)
    for _ in range(3):
        a @ a
    start = _now(cuda)
    for _ in range(10):
        a @ a
    return 10 * 2 * n ** 3 / (_now(cuda) - start) / 1e12


def compare(args, cuda: bool) -> None:
    """The side-by-side table and the ratio line."""
    from dse.train import fit as train
    from dse.network import build
    from dse.cost import complexity

    size = 16 if args.smoke else 32
    device = torch.device("cuda" if cuda else "cpu")
    total = args.warmup + args.steps
    data = cifar_like(max(50000 if cuda else 0, total * args.batch_size), 2 * args.batch_size, device, size)
    recipe = train.recipe({"recipe": "proxy", "max_epochs": 1, "batch_size": args.batch_size, "limit_batches": total,
                           "threads": args.threads})
    print(f"bench/gpu.py on {_device_name(cuda)}: torch {torch.__version__}, CUDA {torch.version.cuda}; "
          f"synthetic {size}x{size}x3, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} "
          f"warm-up; dse: precision {train._precision(recipe, cuda)}, compile {train.compiles(recipe, cuda)}")
    print(f"dense {'bf16' if cuda else 'fp32'} matmul on this device: {matmul_tflops(cuda):.3g} TFLOP/s")
    print("FLOPs = 2 x multiply-adds of conv + linear layers (dse.cost), x 3 for forward + backward")
    print(f"{'net':<16}{'GFLOP/img':>10}{'ref img/s':>12}{'TFLOP/s':>9}{'1st step s':>11}"
          f"{'dse img/s':>12}{'TFLOP/s':>9}{'fit s':>8}{'ratio':>7}")
    ratios = []
    for name in args.nets.split(","):
        pt = point(name, size)
        flops = 2 * complexity(pt).flops * 3
        torch.manual_seed(0)
        ref = reference(build(pt), data, recipe, args.steps, args.warmup, cuda)
        ours = dse_side(pt, data, recipe, args.steps, args.warmup, cuda)
        ratios.append(ours["img_s"] / ref["img_s"])
        print(f"{name:<16}{flops / 1e9:>10.3f}{ref['img_s']:>12.0f}{ref['img_s'] * flops / 1e12:>9.3g}"
              f"{ref['first_s']:>11.3g}{ours['img_s']:>12.0f}{ours['img_s'] * flops / 1e12:>9.3g}"
              f"{ours['fit_s']:>8.1f}{ratios[-1]:>7.3f}   (loss ref {ref['loss']:.3f}, dse {ours['loss']:.3f})",
              flush=True)
    print(f"ratio: {math.exp(sum(map(math.log, ratios)) / len(ratios)):.3f}")


def _device_name(cuda: bool) -> str:
    return torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores, smoke sizes)"


# ----- packing several trials on one GPU -----

def pack_worker(args, cuda: bool) -> None:
    """A --pack worker: one warm-up trial, then on 'go M' M trials ('PACK done s,s,... peak_GiB'); 'quit' ends."""
    from dse.train import fit as train
    size = 16 if args.smoke else 32
    device = torch.device("cuda" if cuda else "cpu")
    data = cifar_like(args.pack_images, args.batch_size, device, size, seed=os.getpid())
    recipe = train.recipe({"recipe": "proxy", "max_epochs": args.pack_epochs, "batch_size": args.batch_size,
                           "threads": args.threads})
    pt = point("resnet20", size)

    def trial() -> float:
        result = train.fit(pt, data, recipe, progress=False)
        if result.status != "ok":
            raise SystemExit(f"pack trial ended {result.status}: {result.reason}")
        return result.seconds

    print(f"PACK ready {trial():.2f}", flush=True)
    for line in sys.stdin:
        if not line.startswith("go "):
            break
        seconds = [trial() for _ in range(int(line.split()[1]))]
        peak = torch.cuda.max_memory_reserved() / 2 ** 30 if cuda else 0.0
        print(f"PACK done {','.join(f'{s:.2f}' for s in seconds)} {peak:.2f}", flush=True)


def pack(args, cuda: bool) -> None:
    """Trials/hour at each K of --pack-ks, on one GPU, with persistent worker processes."""
    from dse.trials import pool
    ks = [int(k) for k in args.pack_ks.split(",")]
    cores = os.cpu_count() or 1
    threads = max(1, cores // max(ks))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
           "PYTHONWARNINGS": "ignore", "TORCHINDUCTOR_COMPILE_THREADS": str(threads)}
    gpus = pool.visible_gpus()
    if cuda and gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[0]  # every worker on the same GPU
    argv = [sys.executable, str(Path(__file__).resolve()), "--pack-worker", "--batch-size", str(args.batch_size),
            "--pack-images", str(args.pack_images), "--pack-epochs", str(args.pack_epochs), "--threads", str(threads)]
    argv += ["--smoke"] if args.smoke else []
    print(f"bench/gpu.py --pack on {_device_name(cuda)}: a trial is dse.train.fit.fit of resnet20 on {args.pack_images} "
          f"synthetic images x {args.pack_epochs} epochs at batch {args.batch_size} (compile "
          f"{'auto: on' if cuda else 'off'}); {max(ks)} workers, {threads} threads each, {args.pack_trials} "
          f"trials per worker per round")
    with tempfile.TemporaryDirectory(prefix="dse-pack-") as tmp:
        logs = [open(Path(tmp) / f"w{i}.err", "w+") for i in range(max(ks))]
        procs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=log, text=True) for log in logs]
        try:
            warm = [_reply(p, log, "ready") for p, log in zip(procs, logs)]
            print(f"warm-up trial (all {len(procs)} workers at once; a first fit pays imports and compile): "
                  f"{min(map(float, warm)):.1f}-{max(map(float, warm)):.1f} s", flush=True)
            rates = {}
            for k in ks:
                start = time.perf_counter()
                for p in procs[:k]:
                    p.stdin.write(f"go {args.pack_trials}\n")
                    p.stdin.flush()
                replies = [_reply(p, log, "done").split() for p, log in zip(procs[:k], logs)]
                wall = time.perf_counter() - start
                seconds = [float(s) for r in replies for s in r[0].split(",")]
                rates[k] = len(seconds) / wall * 3600
                print(f"K={k}: {len(seconds)} trials in {wall:.1f} s = {rates[k]:.0f} trials/hour "
                      f"(a trial {sum(seconds) / len(seconds):.1f} s; GPU memory per worker "
                      f"{max(float(r[1]) for r in replies):.2f} GiB)", flush=True)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.stdin.close()
            for p in procs:
                p.wait(timeout=60)
            for log in logs:
                log.close()
    print(f"ratio: {rates[max(ks)] / rates[min(ks)]:.2f}")


def _reply(proc: subprocess.Popen, log, word: str) -> str:
    """The rest of a worker's next 'PACK <word> ...' line; exits with its error output if it died."""
    for line in proc.stdout:
        if line.startswith(f"PACK {word} "):
            return line[len(f"PACK {word} "):].strip()
    log.seek(0)
    sys.exit(f"pack worker {proc.pid} ended (exit {proc.wait()}):\n{log.read()[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--batch-size", type=int, default=None, help="default 512 (smoke: 8)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per side (default 100; smoke: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 15; smoke: 1)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the default without CUDA)")
    parser.add_argument("--pack", action="store_true", help="trials/hour with K trials at once on one GPU")
    parser.add_argument("--pack-ks", default=None, help="default 1,2,4,8 (smoke: 1,2)")
    parser.add_argument("--pack-trials", type=int, default=None, help="trials per worker per round (default 1)")
    parser.add_argument("--pack-images", type=int, default=None, help="training images of a trial (20000; smoke 32)")
    parser.add_argument("--pack-epochs", type=int, default=None, help="epochs of a trial (2; smoke 1)")
    parser.add_argument("--pack-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.smoke
    args.smoke = not cuda
    for key, full, tiny in (("batch_size", 512, 8), ("steps", 100, 2), ("warmup", 15, 1), ("pack_ks", "1,2,4,8", "1,2"),
                            ("pack_trials", 1, 1), ("pack_images", 20000, 32), ("pack_epochs", 2, 1)):
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.smoke else full)
    if args.threads is None and args.smoke:
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.pack_worker:
        pack_worker(args, cuda)
    elif args.pack:
        pack(args, cuda)
    else:
        compare(args, cuda)


if __name__ == "__main__":
    main()
