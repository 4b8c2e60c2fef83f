"""Zero-cost scores of a network at initialization: synflow, NASWOT, grad_norm and snip.

Each score is written from its paper's formula. The weights they sum over are those of every Conv2d and
Linear layer (attention modules' included): the layers SNIP and SynFlow prune. Norm scales and biases are
left out of the sums.

- **synflow** (Tanaka et al., NeurIPS 2020): every parameter replaced by its absolute value, one input of all
  ones, R = the sum of the outputs; score = sum over weights of w * dR/dw. For a bias-free stack of L linear
  layers R = 1^T |W_L| ... |W_1| 1 and the score is L * R (each layer's sum equals R). Computed in float64
  on a copy, in eval mode: BatchNorm then uses its running statistics (0 and 1 at initialization), so it is
  the positive affine map x |gamma| / sqrt(1 + eps) + |beta| and the net stays a positive function of its
  input, as the score assumes; in train mode one all-ones image would be normalized by its own statistics
  and the score would no longer be the path norm. float32 overflows on deep nets; float64 does not here (up to
  1e40 on the spaces at 16 x 16). LayerNorm (ConvNeXt) has no running statistics and normalizes the input by
  its own, so there the score is computed all the same but is no path norm (about 1 on a ConvNeXt point).
- **naswot** (Mellor et al., ICML 2021): each of a minibatch's N images gets a binary code, one bit per unit
  of every activation layer (1 where the layer's input is > 0: for ReLU, where the unit is active); K[i, j] =
  N_A - Hamming(c_i, c_j) = number of bits where codes i and j agree; score = log |det K|.
- **grad_norm** (Abdelfattah et al., ICLR 2021): the Euclidean norm of the gradient of the mean
  cross-entropy loss of one minibatch with respect to all the weights, taken as one vector (not a sum of
  per-layer norms).
- **snip** (Lee et al., ICLR 2019): the connection sensitivity sum over weights of |w * dL/dw|, the same
  loss and minibatch.

naswot, grad_norm and snip share one forward and one backward pass in train mode (BatchNorm normalizes
with the minibatch's statistics, as the first training step does) with dropout and drop-path off, so the
scores do not depend on dropout's draws. `measure` builds the point under `torch.manual_seed(seed)`, which
is the initialization a trial seeded the same way trains from.
"""
from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from dse.record import ZEROCOST as SCORES  # synflow, naswot, grad_norm, snip

# Images per minibatch (naswot's kernel is BATCH x BATCH). Mellor et al. use 128; 32 keeps a default-budget point
# (<= 10 MFLOPs at 28 x 28) near 0.3 CPU seconds on one thread, where 64 took 0.5-0.8 s (bench/zerocost.py).
BATCH = 32
# Activations whose input's sign makes naswot's code; gates (sigmoid, softmax, tanh) are not units that switch.
_NOT_UNITS = (nn.Sigmoid, nn.Softmax, nn.Tanh, nn.Hardsigmoid, nn.LogSoftmax, nn.Identity)
_RANDOM = (nn.Dropout, nn.Dropout2d)


def weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights the scores sum over: those of every Conv2d and Linear layer."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def activations(model: nn.Module) -> list[nn.Module]:
    """The activation layers whose units make naswot's binary codes."""
    out = []
    for m in model.modules():
        kind = type(m).__module__
        is_act = kind.startswith("torch.nn.modules.activation") or kind.startswith("timm.layers.activations")
        if is_act and not isinstance(m, _NOT_UNITS) and not list(m.children()):
            out.append(m)
    return out


def synflow(model: nn.Module, shape: tuple[int, ...]) -> float:
    """Tanaka et al.'s synaptic flow of `model` for one input of `shape` (C, H, W); `model` is left unchanged."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    device = next(net.parameters()).device
    net(torch.ones((1, *shape), dtype=torch.float64, device=device)).sum().backward()
    with torch.no_grad():
        return float(sum((w * w.grad).sum() for w in weights(net) if w.grad is not None))


def kernel_logdet(codes: torch.Tensor | list[torch.Tensor]) -> float:
    """log |det K| of NASWOT's kernel K[i, j] = bits where rows i and j of the 0/1 codes agree."""
    parts = [codes] if isinstance(codes, torch.Tensor) else codes
    n = parts[0].shape[0]
    k = torch.zeros(n, n, dtype=torch.float64, device=parts[0].device)
    for c in parts:
        c = c.reshape(n, -1).float()  # 0/1: the float32 product is exact while a part has < 2^24 units
        ones = c.sum(1, dtype=torch.float64)
        # agree = both 1 + both 0 = c c^T + (units - s_i - s_j + c c^T)
        k += 2 * (c @ c.T).double() - ones[:, None] - ones[None, :] + c.shape[1]
    return float(torch.linalg.slogdet(k)[1])


def _no_dropout(model: nn.Module) -> list[nn.Module]:
    """Put dropout and drop-path layers in eval mode; return them."""
    off = [m for m in model.modules() if isinstance(m, _RANDOM) or type(m).__name__ == "DropPath"]
    for m in off:
        m.eval()
    return off


def data_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """naswot, grad_norm and snip of `model` on the minibatch (x, y): one forward and one backward pass in
    train mode, dropout off; `model`'s gradients are cleared afterwards."""
    was_training = model.training
    model.train()
    _no_dropout(model)
    codes = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: codes.append((inp[0] > 0).detach()))
             for m in activations(model)]
    model.zero_grad(set_to_none=True)
    try:
        loss = nn.functional.cross_entropy(model(x), y)
    finally:
        for h in hooks:
            h.remove()
    loss.backward()
    ws = [w for w in weights(model) if w.grad is not None]
    with torch.no_grad():
        norm = math.sqrt(float(sum((w.grad.double() ** 2).sum() for w in ws)))
        snip = float(sum((w.grad.double() * w.double()).abs().sum() for w in ws))
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    naswot = kernel_logdet(codes) if codes else float("nan")
    return {"naswot": naswot, "grad_norm": norm, "snip": snip}


def scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """All four scores of `model` on the normalized minibatch `x` with labels `y`."""
    return {"synflow": synflow(model, tuple(x.shape[1:])), **data_scores(model, x, y)}


def minibatch(data, batch: int = BATCH, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` training images of a loaded dse.train.datasets.Data, drawn with `seed`, normalized as training
    normalizes them (no augmentation)."""
    from dse.train.datasets import Batches, Split

    split = data.train
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(len(split), generator=gen)[:batch].to(split.x.device)
    sample = Split(split.x.index_select(0, idx), split.y.index_select(0, idx))
    return next(iter(Batches(sample, data, batch_size=len(idx))))


def initial(point, data, seed: int = 0) -> nn.Module:
    """The point built at `data`'s geometry under torch.manual_seed(seed), the global generator left as it was."""
    from dse.network import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build(point, num_classes=data.num_classes, in_chans=data.in_chans, image_size=data.image_size)


def measure(point, data, seed: int = 0, batch: int = BATCH) -> dict:
    """The point built at initialization `seed` and scored on a minibatch of `data`'s training images: the four
    scores (None where one is not finite), and the wall and CPU seconds the build and scoring took."""
    start, cpu = time.perf_counter(), time.process_time()
    model = initial(point, data, seed)
    x, y = minibatch(data, batch, seed)
    model = model.to(x.device)
    found = scores(model, x, y)
    out = {k: (float(v) if math.isfinite(v) else None) for k, v in found.items()}
    return {**out, "batch": int(len(y)), "seconds": round(time.perf_counter() - start, 4),
            "cpu_seconds": round(time.process_time() - cpu, 4)}


def for_trial(point, data, seed: int = 0) -> dict | None:
    """`measure` for a trial's record: None when the data are not held in memory (streamed ImageNet, a replay) or
    the scoring fails; a trial trains all the same."""
    split = getattr(data, "train", None)
    if not isinstance(getattr(split, "x", None), torch.Tensor):
        return None
    try:
        return measure(point, data, seed)
    except Exception:  # noqa: BLE001 - a score is a by-product: the trial goes on without it
        return None
