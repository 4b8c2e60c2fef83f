"""The counting interpreter: params, multiply-adds, activations and receptive field of a graph, without torch.

- FLOPs are multiply-adds of conv and linear layers (the ResNet/ResNeXt papers' and torchvision's convention:
  `FlopCounterMode` total / 2 on one forward pass); attention modules add their own convs' multiply-adds.
- Activations are the output elements of every convolution (Conv1d included), every linear layer and every
  non-global pooling layer, counted once per call (pycls's convention; Dollar et al., CVPR 2021).
- The receptive field is the size and effective stride of the input region that one unit of the last
  feature map sees through convolutions and pools (Araujo et al., Distill 2019). Global context (the pooled
  gates of SE, ECA, CBAM's channel branch, SK and Splat) is left out: it sees the whole image by design.
"""
from __future__ import annotations

from functools import singledispatch
from typing import NamedTuple

from dse.errors import UserError
from dse.graph import attention
from dse.graph.nodes import (Act, Add, Attention, Concat, Conv, Dropout, DropPath, Flatten, GlobalPool, LayerScale,
                             Linear, Net, Norm, Pool, Seq, Shuffle, Slice, Subsample)


class State(NamedTuple):
    """Costs so far and the current tensor: c x h x w, and the field (size r, stride j, start) of one unit.

    A NamedTuple rather than a frozen dataclass: counting makes one per node, and a tuple is built several
    times faster (this keeps dse.cost.measures above 1,000 points/s; bench/complexity.py)."""

    params: int
    macs: int
    acts: int
    c: int
    h: int
    w: int
    r: int = 1
    j: int = 1
    start: float = 0.0

    def cost(self, params: int = 0, macs: int = 0, acts: int = 0, c: int | None = None, h: int | None = None,
             w: int | None = None, r: int | None = None, j: int | None = None, start: float | None = None) -> "State":
        """Add costs and change the shape or field."""
        return State(self.params + params, self.macs + macs, self.acts + acts, self.c if c is None else c,
                     self.h if h is None else h, self.w if w is None else w, self.r if r is None else r,
                     self.j if j is None else j, self.start if start is None else start)

    def window(self, kernel: int, stride: int, padding: int, dilation: int = 1) -> dict:
        """The new h, w and field after a sliding window (floor mode)."""
        span = dilation * (kernel - 1) + 1
        h, w = (self.h + 2 * padding - span) // stride + 1, (self.w + 2 * padding - span) // stride + 1
        if h < 1 or w < 1:  # a geometry other than the point's own (Point.check refuses its own)
            raise UserError(f"image_size: too small for this point: a {self.h}x{self.w} px feature map vanishes "
                            f"in a {span}x{span}/{stride} window")
        return dict(h=h, w=w, r=self.r + (span - 1) * self.j, j=self.j * stride, start=self.start - padding * self.j)


class Measures(NamedTuple):
    """What a network costs: params, multiply-add FLOPs, activations, receptive field and its stride."""

    params: int
    flops: int
    acts: int
    rf: int
    rf_stride: int


@singledispatch
def step(node, s: State) -> State:
    """The state after `node` (one function per node type)."""
    raise TypeError(f"no count rule for {type(node).__name__}")


_RULES = step.registry  # live: the rules registered so far, by exact node type


def _next(node, s: State) -> State:
    """step(node, s), skipping singledispatch's lookup when the node's exact type has a rule (the hot path)."""
    rule = _RULES.get(type(node))
    return rule(node, s) if rule is not None else step(node, s)


@step.register
def _(node: Conv, s: State) -> State:
    if node.cin != s.c:
        raise ValueError(f"conv expects {node.cin} channels, gets {s.c}")
    shape = s.window(node.kernel, node.stride, node.pad, node.dilation)
    weights = node.cout * (node.cin // node.groups) * node.kernel ** 2
    out = shape["h"] * shape["w"]
    return s.cost(weights + (node.cout if node.bias else 0), weights * out, node.cout * out, c=node.cout, **shape)


@step.register
def _(node: Norm, s: State) -> State:
    return s.cost(0 if node.kind == "none" else 2 * node.c)


@step.register(Act)
@step.register(Dropout)
@step.register(DropPath)
@step.register(Shuffle)
def _(node, s: State) -> State:
    return s


@step.register
def _(node: LayerScale, s: State) -> State:
    return s.cost(node.c)


@step.register
def _(node: Pool, s: State) -> State:
    shape = s.window(node.kernel, node.stride, node.padding)
    return s.cost(acts=s.c * shape["h"] * shape["w"], **shape)


@step.register
def _(node: GlobalPool, s: State) -> State:
    flat = s.c * node.size ** 2
    return s.cost(acts=flat if node.size > 1 else 0, c=flat, h=1, w=1)


@step.register
def _(node: Flatten, s: State) -> State:
    return s.cost(c=s.c * s.h * s.w, h=1, w=1)


@step.register
def _(node: Linear, s: State) -> State:
    if node.cin != s.c:
        raise ValueError(f"linear expects {node.cin} features, gets {s.c}")
    return s.cost(node.cin * node.cout + (node.cout if node.bias else 0), node.cin * node.cout, node.cout, c=node.cout)


@step.register
def _(node: Attention, s: State) -> State:
    return attention.count(node, s)


@step.register
def _(node: Slice, s: State) -> State:
    return s.cost(c=node.stop - node.start)


@step.register
def _(node: Subsample, s: State) -> State:
    shape = s.window(1, node.stride, 0)
    return s.cost(c=node.cout, **shape)


@step.register
def _(node: Seq, s: State) -> State:
    for n in node.nodes:
        s = _next(n, s)
    return s


def _branches(node, s: State) -> list[State]:
    fresh = s._replace(params=0, macs=0, acts=0)
    return [_next(b, fresh) for b in node.branches]


def _union(s: State, outs: list[State], c: int) -> State:
    """Costs summed; the field is the union of the branches' fields."""
    start = min(o.start for o in outs)
    end = max(o.start + o.r - 1 for o in outs)
    return s.cost(sum(o.params for o in outs), sum(o.macs for o in outs), sum(o.acts for o in outs),
                  c=c, h=outs[0].h, w=outs[0].w, r=int(round(end - start)) + 1, j=max(o.j for o in outs), start=start)


@step.register
def _(node: Add, s: State) -> State:
    outs = _branches(node, s)
    shapes = [(o.c, o.h, o.w) for o in outs]
    if len(set(shapes)) > 1:
        raise UserError(f"{getattr(node, 'label', '') or 'a residual block'}: the shortcut gives {shapes[-1]} but "
                        f"the branch {shapes[0]}; residual blocks need odd kernels and matching strides")
    return _union(s, outs, outs[0].c)


@step.register
def _(node: Concat, s: State) -> State:
    outs = _branches(node, s)
    if len({(o.h, o.w) for o in outs}) > 1:
        raise UserError(f"concatenated branches disagree on their size: {[(o.h, o.w) for o in outs]}")
    return _union(s, outs, sum(o.c for o in outs))


_last: tuple = (None, 0, 0, None)  # (features, in_chans, image_size, state) of the last features() call


def features(net: Net) -> State:
    """The state at the last feature map (before the head).

    Remembers its last answer: dse.families.net counts the features to size the head, then measure() asks
    again for the same (immutable) features object. Holding that object keeps its id from being reused."""
    global _last
    feats, chans, size, state = _last
    if feats is net.features and chans == net.in_chans and size == net.image_size:
        return state
    state = step(net.features, State(0, 0, 0, net.in_chans, net.image_size, net.image_size))
    _last = (net.features, net.in_chans, net.image_size, state)
    return state


def measure(net: Net) -> Measures:
    """Params, FLOPs, activations and receptive field (size, stride) of the whole network."""
    feat = features(net)
    out = step(net.head, feat)
    return Measures(out.params, out.macs, out.acts, feat.r, feat.j)



def parts(net: Net) -> list[State]:
    """Each top-level part of `features` (a family's stem, then its stages), then the head: each part's own
    costs, with its output shape and the field so far."""
    s = State(0, 0, 0, net.in_chans, net.image_size, net.image_size)
    out = []
    for part in (*net.features.nodes, net.head):
        after = step(part, s)
        out.append(after._replace(params=after.params - s.params, macs=after.macs - s.macs, acts=after.acts - s.acts))
        s = after
    return out
