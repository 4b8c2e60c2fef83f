"""The network as data: a small tree of typed nodes that a family makes from a Point.

Families (dse.families) turn a Point into one `Net` of these nodes; interpreters read it: dse.graph.count
(params, FLOPs, activations, receptive field; no torch) and dse.graph.build (an nn.Module from timm layers).
A node says what a layer is, never how to count or build it. Containers: `Seq` runs its nodes in order,
`Add` sums its branches, `Concat` concatenates them along channels. An empty `Seq` is the identity.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Conv:
    """A 2-D convolution; padding -1 is (kernel - 1) // 2 x dilation ('same' for odd kernels)."""

    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    padding: int = -1
    groups: int = 1
    bias: bool = False
    dilation: int = 1

    @property
    def pad(self) -> int:
        """Padding in pixels."""
        return (self.kernel - 1) // 2 * self.dilation if self.padding < 0 else self.padding


@dataclass(frozen=True)
class Norm:
    """bn (BatchNorm2d), ln (LayerNorm over channels, eps 1e-6) or none; 2 x c affine params."""

    c: int
    kind: str = "bn"


@dataclass(frozen=True)
class Act:
    """An activation by timm's name (relu, silu, gelu, ...)."""

    name: str


@dataclass(frozen=True)
class Pool:
    """A non-global max or avg pool."""

    kind: str
    kernel: int
    stride: int
    padding: int = 0


@dataclass(frozen=True)
class GlobalPool:
    """Adaptive avg or max pooling to size x size, then flatten (size 1: global pooling)."""

    kind: str = "avg"
    size: int = 1


@dataclass(frozen=True)
class Flatten:
    """c x h x w -> c * h * w features."""


@dataclass(frozen=True)
class Linear:
    """A fully connected layer."""

    cin: int
    cout: int
    bias: bool = True


@dataclass(frozen=True)
class Dropout:
    """Dropout with probability p."""

    p: float


@dataclass(frozen=True)
class DropPath:
    """Stochastic depth on a residual branch (timm's DropPath)."""

    p: float


@dataclass(frozen=True)
class LayerScale:
    """Per-channel learned scale of a residual branch (ConvNeXt), initialised at `init`."""

    c: int
    init: float = 1e-6


@dataclass(frozen=True)
class Attention:
    """A timm attention module. se/eca/cbam/se_mb keep the shape; sk/splat replace a k x k conv-norm-act.

    se_mb is EfficientNet's squeeze-excite (reduced width `rd` given, biased 1 x 1 convs, the net's act).
    """

    kind: str
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    ratio: float = 0.0625
    act: str = "relu"
    rd: int = 0


@dataclass(frozen=True)
class Shuffle:
    """Channel shuffle over `groups` groups (ShuffleNet)."""

    groups: int


@dataclass(frozen=True)
class Slice:
    """Channels [start, stop) of the input (ShuffleNet's channel split)."""

    start: int
    stop: int


@dataclass(frozen=True)
class Subsample:
    """Every stride-th pixel, channels zero-padded or cut to `cout` (He et al. option A shortcut)."""

    stride: int
    cout: int


@dataclass(frozen=True)
class Seq:
    """Nodes applied in order; no nodes: the identity."""

    nodes: tuple = ()


@dataclass(frozen=True)
class Add:
    """The sum of its branches' outputs (a residual block: branch, then shortcut); `label` names it in errors."""

    branches: tuple
    label: str = ""


@dataclass(frozen=True)
class Concat:
    """Its branches' outputs concatenated along channels (dense layers, inception modules)."""

    branches: tuple


@dataclass(frozen=True)
class Net:
    """A whole network: its input geometry, `features` up to the last feature map, then `head`."""

    in_chans: int
    image_size: int
    features: Seq
    head: Seq


def seq(*parts) -> Seq:
    """A Seq of nodes and nested lists/Seqs, flattened one level (Seqs inside stay Seqs only when named)."""
    out = []
    for part in parts:
        if isinstance(part, (list, tuple)):
            out.extend(part)
        elif isinstance(part, Seq):
            out.extend(part.nodes)
        elif part is not None:
            out.append(part)
    return Seq(tuple(out))
