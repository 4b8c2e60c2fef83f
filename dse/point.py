"""Point: one CNN architecture as a frozen, hashable tree of dataclasses.

A Point is pure data. Its family (dse.families) turns it into a graph that `dse.cost` counts and
`dse.network` builds, and it round-trips through
dict / YAML / JSON. Every design choice is a name from a small table below; unknown names raise a
`UserError` that lists the valid ones. Validation happens on construction, so a Point that exists is
a Point that can be built.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import NamedTuple

from dse.channels import SK_PATHS, SPLAT_RADIX, splat_channels
from dse.errors import UserError

# Skip types: none (plain net), identity (zero-pad + subsample when shapes change: He et al. option A),
# projection (1x1 conv [+ norm] only when shapes change: option B), dense (concatenation; dense blocks).
SKIPS = ("none", "identity", "projection", "dense")
# Attention: se/eca/cbam are applied to a block's output before the add; sk and splat replace the
# block's spatial k x k conv (timm SelectiveKernel / SplitAttn).
ATTENTIONS = ("none", "se", "eca", "cbam", "sk", "splat")
STEM_TYPES = ("none", "conv", "conv_bare", "patch")  # conv_bare: conv only (pre-activation nets); patch:
# a biased k x k / k conv and a norm (ConvNeXt)
POOL_WINDOWS = {"none": None, "max2": ("max", 2, 2, 0), "max3": ("max", 3, 2, 1), "max3_valid": ("max", 3, 2, 0),
                "avg2": ("avg", 2, 2, 0)}  # (kind, kernel, stride, padding)
POOLS = tuple(POOL_WINDOWS)  # 2x2/2; 3x3/2 pad 1; 3x3/2 no pad; 2x2/2 avg
HEAD_POOLS = ("avg", "max", "adaptive", "flatten")  # adaptive: adaptive avg to pool_size x pool_size
HEAD_TYPES = ("linear", "conv")  # conv: NIN-style 1x1 conv to classes, then global average
ACTS = ("relu", "relu6", "silu", "gelu", "tanh", "leaky_relu", "hard_swish", "sigmoid")
NORMS = ("bn", "ln", "none")  # ln: LayerNorm over channels (ConvNeXt)
PADDINGS = ("same", "valid")



class BlockRule(NamedTuple):
    """A block type: the family that makes it and what it accepts. Point.check applies these, so a family's
    graph-maker can assume them."""

    family: str  # the dse.families module whose stage(point, index, cin, drop_path_rates) makes its stages
    attentions: tuple[str, ...] = ATTENTIONS  # the point-wide attentions this block implements
    paddings: tuple[str, ...] = ("same",)  # residual adds and concatenations need 'same'
    one_kernel: bool = False  # one spatial (depthwise or grouped) conv per block
    dropout: bool = True  # takes the point's inner dropout
    drop_path: bool = True  # has a branch that stochastic depth can drop
    strides: bool = True  # the stage's first block may stride (dense and inception stages downsample by pool)
    even_width: bool = False  # the width is split in halves (ShuffleNet V2)
    expansion: bool = False  # needs an expansion ratio > 0 (the stage's, or the point's when the stage's is 0)
    needs: tuple[str, ...] = ()  # point fields that must be > 0 when a stage has this block
    cardinality: bool = False  # its k x k conv has `cardinality` groups of bottleneck_width (scaled by width)
    group_width: bool = False  # its k x k conv (width x bottleneck_ratio channels) has groups of `group_width`
    patchify: bool = False  # a stage that strides starts with an s x s / s conv (ConvNeXt's downsampling layer)
    preact: bool = False  # a net whose last stage has this block ends in a norm-act before pooling
    widths: str = "width"  # its output width: the stage's `width`, its `branches` (inception) or `growth` (dense:
    # each layer adds growth_rate)
    ignores: tuple[str, ...] = ()  # point fields this block has no use for: a point none of whose stages uses
    # one of them may not set it (two ids for one net)
    uses: tuple[str, ...] = ()  # the BLOCK_FIELDS its family reads; a point none of whose stages reads one holds
    # its default (Point.__post_init__), so one net has one id
    skip: str = ""  # the skip its family always makes ("": the point's `skip`); a point none of whose stages reads
    # `skip` holds this one


MOBILE_ATTENTIONS = ("none", "se", "eca", "cbam")
RESIDUAL_USES = ("attn_ratio", "cardinality", "bottleneck_width")
# The point fields that only some block types read, and their defaults: a point none of whose stages reads one
# is made with the default (a space that sets cardinality for every block type draws one id per net).
BLOCK_FIELDS = {"cardinality": 1, "bottleneck_width": 64, "growth_rate": 0, "compression": 1.0, "dense_bottleneck": 0,
                "expansion": 6.0, "group_width": 0, "bottleneck_ratio": 1.0, "layer_scale": 0.0, "attn_ratio": 0.0625,
                "dropout": 0.0, "drop_path": 0.0}
RATIO_ATTENTIONS = ("se", "cbam", "sk", "splat")  # the attentions that have a reduction ratio (eca has none)
# Every block type, its name written once: the family module that makes it (dse.families) and its rule.
BLOCK_RULES = {
    # conv-norm-act per kernel in `kernels` (VGG, AlexNet, LeNet, NIN mlpconv)
    "plain": BlockRule("plain", paddings=PADDINGS, ignores=("attention", "drop_path"), skip="none"),
    # post-activation residual block, one conv per kernel (ResNet-18/34, WRN block types)
    "basic": BlockRule("residual", uses=("attn_ratio",)),
    # 1x1 reduce, k x k grouped (cardinality), 1x1 expand (ResNet-50, ResNeXt, WRN-50-2)
    "bottleneck": BlockRule("residual", needs=("bottleneck_width",), cardinality=True, uses=RESIDUAL_USES),
    # BN-act-conv per kernel (pre-act ResNet, Wide ResNet)
    "preact_basic": BlockRule("residual", preact=True, uses=("attn_ratio",)),
    # pre-activation bottleneck (pre-act ResNet-164/1001)
    "preact_bottleneck": BlockRule("residual", needs=("bottleneck_width",), cardinality=True, preact=True,
                                   uses=RESIDUAL_USES),
    # DenseNet layer [BN-act-1x1 (bottleneck)]-BN-act-k x k conv, concatenated; its net has skip 'dense'
    "dense": BlockRule("dense", attentions=("none",), strides=False, ignores=("drop_path",), preact=True,
                       widths="growth", skip="dense", uses=("growth_rate", "compression", "dense_bottleneck")),
    # GoogLeNet module: 1x1 | 1x1-3x3 | 1x1-3x3(5x5) | pool-1x1, widths from `branches`
    "inception": BlockRule("inception", attentions=("none",), strides=False, ignores=("drop_path",),
                           widths="branches", skip="none"),
    # depthwise-separable convs (MobileNet-v1; with a projection skip, Xception-like)
    "dwsep": BlockRule("mobile", attentions=MOBILE_ATTENTIONS, uses=("attn_ratio",)),
    # inverted residual: 1x1 expand by the point's `expansion`, k x k depthwise, 1x1 project (MobileNet-v2)
    "inverted": BlockRule("mobile", attentions=MOBILE_ATTENTIONS, needs=("expansion",),
                          uses=("attn_ratio", "expansion")),
    # RegNet X/Y bottleneck: 1x1 to width x bottleneck_ratio, 3x3 in groups of group_width, [SE from the block's
    # input width], 1x1; projection where the shape changes
    "regnet": BlockRule("regnet", attentions=("none", "se"), one_kernel=True, dropout=False,
                        needs=("group_width", "bottleneck_ratio"), group_width=True,
                        uses=("group_width", "bottleneck_ratio")),
    # EfficientNet MBConv: [1x1 expand by the stage's expansion], k x k depthwise, SE, 1x1
    "mbconv": BlockRule("efficientnet", attentions=("none", "se"), one_kernel=True, dropout=False, expansion=True,
                        uses=("attn_ratio", "expansion")),
    # ShuffleNet V2 unit: channel split (stride 1) or two branches (stride 2), concat, shuffle
    "shuffle": BlockRule("shufflenet", attentions=("none", "se"), one_kernel=True, dropout=False, drop_path=False,
                         even_width=True, skip="none", uses=("attn_ratio",)),
    # ConvNeXt block: k x k depthwise, norm, 1x1 expand, act, 1x1 project, layer scale; a stage that downsamples
    # starts with norm + an s x s / s conv
    "convnext": BlockRule("convnext", attentions=("none",), one_kernel=True, dropout=False, expansion=True,
                          patchify=True, skip="identity", uses=("expansion", "layer_scale")),
}
BLOCK_TYPES = tuple(BLOCK_RULES)
GROUPED = tuple(b for b, rule in BLOCK_RULES.items() if rule.cardinality)  # k x k conv: cardinality x d
PREACT = tuple(b for b, rule in BLOCK_RULES.items() if rule.preact)  # nets that end in a norm-act before pooling

MAX_IMAGE_SIZE = 1 << 16  # the largest input side searched for when a point's own is too small


def _window(h: int, kernel: int, stride: int, padding: int) -> int:
    """The output side of a sliding window (floor mode), as torch and dse.graph.count compute it."""
    return (h + 2 * padding - kernel) // stride + 1


def _pooled(h: int, name: str) -> int:
    geo = POOL_WINDOWS[name]
    return h if geo is None else _window(h, *geo[1:])


def _one_of(path: str, value, valid) -> None:
    if value not in valid:
        raise UserError(f"{path}: unknown value {value!r}; valid: {', '.join(map(str, valid))}")


def _positive(path: str, value, allow_zero: bool = False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (value >= 0 if allow_zero else value > 0):
        raise UserError(f"{path}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


# Upper bounds on every count a point sets, far above any named point (the largest has 8 stages, 333 blocks,
# a stage 111 deep, widths to 3,712, kernels to 11, 2 hidden layers, 1,000 classes). Point.check holds them
# first, before anything sized by them is counted or built: a stage depth of 10**8 is refused, not allocated.
MAX_STAGES = 64
MAX_DEPTH = 1024  # blocks in one stage
MAX_BLOCKS = 4096  # blocks in the whole point
MAX_WIDTH = 1 << 16  # channels of any layer; also cardinality, group width, growth rate, bottleneck width
MAX_KERNEL = 1024  # a kernel's side, a stride, a padding
MAX_LIST = 16  # kernels per block, hidden layers in the head
MAX_CLASSES = 1_000_000
MAX_RATIO = 64  # expansion, bottleneck_ratio, dense_bottleneck


def _at_most(path: str, value, limit) -> None:
    """Raise UserError when a number is over its limit (other types are left to the field's own check)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > limit:
        raise UserError(f"{path}: {value!r} is over the limit of {limit:,}")


def _check_sizes(point) -> None:
    """Raise UserError naming the first count of `point` that is over its bound."""
    _at_most("stages (number of stages)", len(point.stages), MAX_STAGES)
    for i, s in enumerate(point.stages):
        at = f"stages[{i}]"
        for name, limit in (("depth", MAX_DEPTH), ("width", MAX_WIDTH), ("stride", MAX_KERNEL),
                            ("expansion", MAX_RATIO)):
            _at_most(f"{at}.{name}", getattr(s, name), limit)
        _at_most(f"{at}.kernels (number of kernels)", len(s.kernels), MAX_LIST)
        _at_most(f"{at}.branches (number of modules)", len(s.branches), MAX_DEPTH)
        for k in s.kernels:
            _at_most(f"{at}.kernels", k, MAX_KERNEL)
        for b in s.branches:
            _at_most(f"{at}.branches (widths per module)", len(b), MAX_LIST)
            for w in b:
                _at_most(f"{at}.branches", w, MAX_WIDTH)
    blocks = sum(s.depth for s in point.stages if isinstance(s.depth, int))
    _at_most("stages (blocks in all stages)", blocks, MAX_BLOCKS)
    for name, limit in (("width", MAX_WIDTH), ("kernel", MAX_KERNEL), ("stride", MAX_KERNEL), ("padding", MAX_KERNEL)):
        _at_most(f"stem.{name}", getattr(point.stem, name), limit)
    _at_most("head.hidden (number of layers)", len(point.head.hidden), MAX_LIST)
    for w in point.head.hidden:
        _at_most("head.hidden", w, MAX_WIDTH)
    _at_most("head.conv", point.head.conv, MAX_WIDTH)
    _at_most("head.pool_size", point.head.pool_size, MAX_IMAGE_SIZE)
    for name, limit in (("cardinality", MAX_WIDTH), ("bottleneck_width", MAX_WIDTH), ("growth_rate", MAX_WIDTH),
                        ("group_width", MAX_WIDTH), ("in_chans", MAX_WIDTH), ("image_size", MAX_IMAGE_SIZE),
                        ("num_classes", MAX_CLASSES), ("expansion", MAX_RATIO), ("bottleneck_ratio", MAX_RATIO),
                        ("dense_bottleneck", MAX_RATIO)):
        _at_most(name, getattr(point, name), limit)


@dataclass(frozen=True)
class Stem:
    """The first conv: `type` conv (conv-norm-act), conv_bare (conv only) or none; then `pool`."""

    type: str = "conv"
    width: int = 16
    kernel: int = 3
    stride: int = 1
    padding: int = -1  # -1: kernel // 2
    pool: str = "none"

    def check(self, path: str = "stem") -> None:
        """Raise UserError on a bad field."""
        _one_of(f"{path}.type", self.type, STEM_TYPES)
        _one_of(f"{path}.pool", self.pool, POOLS)
        if self.type != "none":
            for name in ("width", "kernel", "stride"):
                _positive(f"{path}.{name}", getattr(self, name))
            if self.padding < -1:
                raise UserError(f"{path}.padding: must be >= 0 (or -1 for kernel // 2), got {self.padding}")


@dataclass(frozen=True)
class Stage:
    """`depth` blocks of type `block` at `width` output channels; the first block has `stride`.

    `kernels` are the k x k sizes of the block's spatial convs (WRN's B(3,1,3) is (3, 1, 3); a
    bottleneck's middle conv is (3,)). `pool` runs after the stage (VGG's max-pool; for dense stages
    it also adds the transition layer). `branches` holds one width tuple per inception module:
    (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj). Dense and inception stages leave width at 0.
    """

    block: str
    depth: int
    width: int = 0
    stride: int = 1
    kernels: tuple[int, ...] = (3,)
    pool: str = "none"
    padding: str = "same"
    branches: tuple[tuple[int, ...], ...] = ()
    expansion: float = 0.0  # mbconv/convnext: this stage's expansion ratio (0: the point's `expansion`)

    def check(self, path: str) -> None:
        """Raise UserError on a bad field."""
        _one_of(f"{path}.block", self.block, BLOCK_TYPES)
        _one_of(f"{path}.pool", self.pool, POOLS)
        _one_of(f"{path}.padding", self.padding, PADDINGS)
        _positive(f"{path}.depth", self.depth)
        _positive(f"{path}.stride", self.stride)
        if not self.kernels:
            raise UserError(f"{path}.kernels: needs at least one kernel size")
        for k in self.kernels:
            _positive(f"{path}.kernels", k)
            if self.padding == "same" and k % 2 == 0:
                raise UserError(f"{path}.kernels: kernel {k} is even; 'same' padding needs odd kernels (1, 3, 5, 7, ...)")
        widths = BLOCK_RULES[self.block].widths
        if widths == "branches":
            if len(self.branches) != self.depth or any(len(b) != 6 for b in self.branches):
                raise UserError(f"{path}.branches: {self.block} needs {self.depth} tuples of 6 widths "
                                "(1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj)")
            for b in self.branches:
                for w in b:
                    _positive(f"{path}.branches", w)
        elif widths == "width":
            _positive(f"{path}.width", self.width)


@dataclass(frozen=True)
class Head:
    """Global pooling, optional hidden fc layers (VGG/AlexNet/LeNet), dropout, classifier."""

    pool: str = "avg"
    pool_size: int = 1
    hidden: tuple[int, ...] = ()
    dropout: float = 0.0
    type: str = "linear"
    conv: int = 0  # > 0: a 1x1 conv-norm-act to this width before pooling (EfficientNet 1280, ShuffleNet 1024)
    norm: bool = False  # a norm after pooling (ConvNeXt)

    def check(self, path: str = "head") -> None:
        """Raise UserError on a bad field."""
        _one_of(f"{path}.pool", self.pool, HEAD_POOLS)
        _one_of(f"{path}.type", self.type, HEAD_TYPES)
        _positive(f"{path}.pool_size", self.pool_size)
        for w in self.hidden:
            _positive(f"{path}.hidden", w)
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"{path}.dropout: must be in [0, 1), got {self.dropout}")
        if self.type == "conv" and self.hidden:
            raise UserError(f"{path}.hidden: a conv head takes no hidden layers")
        _positive(f"{path}.conv", self.conv, allow_zero=True)


@dataclass(frozen=True)
class Point:
    """A whole network. `name` is a label only: it is not part of `id`."""

    stages: tuple[Stage, ...]
    stem: Stem = field(default_factory=Stem)
    head: Head = field(default_factory=Head)
    skip: str = "projection"
    cardinality: int = 1
    bottleneck_width: int = 64  # d: per-group width of the first grouped stage; later stages scale with width
    growth_rate: int = 0  # dense stages
    compression: float = 1.0  # dense transitions: out = floor(compression * in)
    dense_bottleneck: int = 0  # dense layer 1x1 width = dense_bottleneck * growth_rate (4 for -BC); 0 = none
    expansion: float = 6.0  # inverted residual expansion ratio
    group_width: int = 0  # regnet: channels per group of the 3x3 conv
    bottleneck_ratio: float = 1.0  # regnet: the 3x3 conv's width = width x bottleneck_ratio
    layer_scale: float = 0.0  # convnext: initial value of the branch's per-channel scale (0: none)
    attention: str = "none"
    attn_ratio: float = 0.0625  # reduction of se/cbam/sk/splat (timm rd_ratio)
    drop_path: float = 0.0  # stochastic depth: last block's rate, linear decay from 0
    dropout: float = 0.0  # inside blocks (WRN: between the convs; dense: after each conv)
    act: str = "relu"
    norm: str = "bn"  # bn, or none (then convs carry a bias: VGG, AlexNet, LeNet)
    image_size: int = 32  # default geometry used by dse.build / dse.complexity when not given
    in_chans: int = 3
    num_classes: int = 10
    name: str = ""

    def __post_init__(self):
        self.check()
        for name, value in _canonical(self).items():
            object.__setattr__(self, name, value)

    def check(self) -> None:
        """Raise UserError naming the first bad field."""
        if not self.stages:
            raise UserError("stages: a point needs at least one stage")
        _check_sizes(self)
        self.stem.check()
        self.head.check()
        for i, stage in enumerate(self.stages):
            stage.check(f"stages[{i}]")
        _one_of("skip", self.skip, SKIPS)
        _one_of("attention", self.attention, ATTENTIONS)
        _one_of("act", self.act, ACTS)
        _one_of("norm", self.norm, NORMS)
        _positive("cardinality", self.cardinality)
        for name in ("image_size", "in_chans", "num_classes"):
            _positive(name, getattr(self, name))
        blocks = {s.block for s in self.stages}
        if (self.skip == "dense") != ("dense" in blocks):
            raise UserError(f"skip: dense stages need skip 'dense' and only they use it (skip={self.skip!r}, "
                            f"blocks={sorted(blocks)})")
        for name in dict.fromkeys(name for s in self.stages for name in BLOCK_RULES[s.block].needs):
            _positive(name, getattr(self, name))
        if blocks & set(GROUPED):
            for i, mid in enumerate(self.mid_widths()):
                if mid and mid % self.cardinality:
                    raise UserError(f"cardinality: {self.cardinality} does not divide the grouped conv width "
                                    f"{mid} of stages[{i}]")
        if self.skip == "dense":  # the dense blocks' own fields
            _positive("growth_rate", self.growth_rate)
            _positive("dense_bottleneck", self.dense_bottleneck, allow_zero=True)
            if not 0.0 < self.compression <= 1.0:
                raise UserError(f"compression: must be in (0, 1], got {self.compression}")
        for i, stage in enumerate(self.stages):
            _positive(f"stages[{i}].expansion", stage.expansion, allow_zero=True)
            self._check_block(i)
        if self.attention in ("sk", "splat"):
            self._check_split_attention()
        for name, unset in (("attention", "none"), ("drop_path", 0.0)):
            if getattr(self, name) != unset and all(name in BLOCK_RULES[s.block].ignores for s in self.stages):
                raise UserError(f"{name}: no stage of this point uses it (blocks "
                                f"{', '.join(sorted({s.block for s in self.stages}))}); valid: {unset!r}")
        _positive("layer_scale", self.layer_scale, allow_zero=True)
        if not 0.0 < self.attn_ratio <= 1.0:
            raise UserError(f"attn_ratio: must be in (0, 1], got {self.attn_ratio}")
        for name in ("drop_path", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        where = self.vanishes(self.image_size)
        if where:
            need = self.smallest_image_size()
            raise UserError(f"image_size: {self.image_size} px is too small for this point: the feature map "
                            f"vanishes at {where}; it needs at least "
                            f"{need if need else f'more than {MAX_IMAGE_SIZE}'} px")

    def vanishes(self, size: int) -> str | None:
        """Where the feature map of a size x size input shrinks below 1 px (None: it never does). Convs with
        'same' padding keep ceil(size / stride); 'valid' convs, pools and ConvNeXt's s x s / s downsampling
        shrink it further."""
        h, stem = size, self.stem
        if stem.type != "none":
            h = _window(h, stem.kernel, stem.stride, stem.kernel // 2 if stem.padding < 0 else stem.padding)
            if h < 1:
                return "stem"
        h = _pooled(h, stem.pool)
        if h < 1:
            return "stem.pool"
        for i, stage in enumerate(self.stages):
            if stage.padding == "valid":  # plain stages only (BLOCK_RULES): every conv shrinks the map
                for b in range(stage.depth):
                    for j, k in enumerate(stage.kernels):
                        h = _window(h, k, stage.stride if b == 0 and j == 0 else 1, 0)
                        if h < 1:
                            return f"stages[{i}] block {b}"
            elif BLOCK_RULES[stage.block].patchify and stage.stride > 1:
                h = _window(h, stage.stride, stage.stride, 0)
            elif stage.stride > 1:
                h = (h - 1) // stage.stride + 1
            if h < 1:
                return f"stages[{i}]"
            h = _pooled(h, stage.pool)
            if h < 1:
                return f"stages[{i}].pool"
        return None

    def smallest_image_size(self) -> int | None:
        """The smallest input side whose feature map never vanishes (None: none up to MAX_IMAGE_SIZE)."""
        if self.vanishes(MAX_IMAGE_SIZE):
            return None
        low, high = 1, MAX_IMAGE_SIZE  # vanishes(high) is None; the side only grows the maps
        while low < high:
            mid = (low + high) // 2
            low, high = (mid + 1, high) if self.vanishes(mid) else (low, mid)
        return low

    def _check_block(self, i: int) -> None:
        """Stage `i` against its block's rule (BLOCK_RULES) and the block's own arithmetic."""
        stage, rule, where = self.stages[i], BLOCK_RULES[self.stages[i].block], f"stages[{i}]"
        block = stage.block
        if self.attention not in rule.attentions:
            raise UserError(f"attention: attention {self.attention!r} is not supported for block {block!r}; "
                            f"supported: {', '.join(rule.attentions)}")
        if stage.padding not in rule.paddings:
            raise UserError(f"{where}.padding: {block} blocks need 'same' padding, got {stage.padding!r}")
        if rule.one_kernel and len(stage.kernels) != 1:
            raise UserError(f"{where}.kernels: a {block} block has one depthwise or grouped kernel, "
                            f"got {list(stage.kernels)}")
        if not rule.strides and stage.stride != 1:
            raise UserError(f"{where}.stride: {block} stages keep their resolution (downsample with the stage "
                            f"pool); got {stage.stride}")
        if rule.even_width and stage.width % 2:
            raise UserError(f"{where}.width: a {block} stage's width is split in two halves, so it must be even; "
                            f"got {stage.width}")
        if rule.expansion and (stage.expansion or self.expansion) <= 0:
            raise UserError(f"{where}.expansion: {block} needs an expansion ratio > 0 (the stage's, or the "
                            f"point's when the stage's is 0); got {stage.expansion or self.expansion}")
        for name, allowed, lacks in (("dropout", rule.dropout, "inner dropout (use head.dropout)"),
                                     ("drop_path", rule.drop_path, "residual branch to drop")):
            if not allowed and getattr(self, name) > 0:
                raise UserError(f"{name}: {block} blocks have no {lacks}; valid: 0 (got {getattr(self, name)})")
        if rule.group_width:
            mid = int(round(stage.width * self.bottleneck_ratio))
            if mid < 1 or mid % min(self.group_width, mid):
                raise UserError(f"group_width: {self.group_width} does not divide the 3x3 conv width {mid} of "
                                f"{where}")

    def _check_split_attention(self) -> None:
        """sk and splat replace a residual block's first k x k conv (k > 1) and split its input channels:
        every conv they replace must split evenly (timm's SelectiveKernel and SplitAttn)."""
        c, mids = (self.stem.width if self.stem.type != "none" else self.in_chans), self.mid_widths()
        for i, stage in enumerate(self.stages):
            first = next((j for j, k in enumerate(stage.kernels) if k > 1), None)
            rule = BLOCK_RULES[stage.block]
            if rule.cardinality and first is not None:
                convs = {(mids[i], mids[i], self.cardinality)}
            elif "attention" not in rule.ignores and first is not None:  # the other residual blocks
                convs = {(c if first == 0 else stage.width, stage.width, 1)}  # the first block's, then the rest
                convs |= {(stage.width, stage.width, 1)} if stage.depth > 1 else set()
            else:  # plain stages keep their convs
                convs = set()
            for cin, cout, groups in sorted(convs):
                if self.attention == "sk" and (cin % SK_PATHS or (cin // SK_PATHS) % min(cout, groups)):
                    raise UserError(f"attention: 'sk' splits {cin} input channels of stages[{i}] over {SK_PATHS} "
                                    f"paths; cardinality {groups} must divide {cin // SK_PATHS}")
                rd = splat_channels(cin, self.attn_ratio)
                if self.attention == "splat" and (cin % (groups * SPLAT_RADIX) or cout % groups or rd % groups):
                    raise UserError(f"attention: 'splat' needs cardinality {groups} to divide {cin // SPLAT_RADIX} "
                                    f"input, {cout} output and {rd} attention channels of stages[{i}]")
            c = stage.width

    # ----- derived quantities shared by dse.arch and dse.complexity -----
    def mid_widths(self) -> tuple[int, ...]:
        """Grouped k x k conv width per stage: cardinality x d, scaled by width / first grouped width (0 elsewhere)."""
        ref = next((s.width for s in self.stages if s.block in GROUPED), 0)
        return tuple(self.cardinality * max(1, round(self.bottleneck_width * s.width / ref))
                     if s.block in GROUPED else 0 for s in self.stages)

    def num_blocks(self) -> int:
        """Total number of blocks (for drop-path decay)."""
        return sum(s.depth for s in self.stages)

    def drop_path_rates(self) -> list[float]:
        """Stochastic-depth rate of every block, linear from 0 to `drop_path` (timm's convention)."""
        n = self.num_blocks()
        return [self.drop_path * i / max(n - 1, 1) for i in range(n)]

    # ----- serialisation -----
    def to_dict(self) -> dict:
        """Plain dict (lists, not tuples) fit for YAML/JSON."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "Point":
        """Inverse of to_dict; unknown keys raise UserError naming them and the valid ones."""
        if not isinstance(data, dict):
            raise UserError(f"a point must be a mapping, got {type(data).__name__}")
        data = dict(data)
        _no_unknown("point", data, cls)
        stages = data.get("stages")
        if not isinstance(stages, (list, tuple)):
            raise UserError("stages: must be a list of stage mappings")
        data["stages"] = tuple(_stage(i, s) for i, s in enumerate(stages))
        if "stem" in data:
            data["stem"] = _sub("stem", data["stem"], Stem)
        if "head" in data:
            head = _sub("head", data["head"], Head, tuple_keys=("hidden",))
            data["head"] = head
        try:
            return cls(**data)
        except TypeError as exc:  # wrong value types that slip through
            raise UserError(f"point: {exc}") from None

    def to_json(self) -> str:
        """Canonical JSON (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def id(self) -> str:
        """Stable 10-hex id of the architecture (the name is not part of it).

        Fields added after ids were first stored leave the id unchanged while they hold their defaults.
        """
        data = _without_late_defaults(self.to_dict())
        data.pop("name")
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    def replace(self, **changes) -> "Point":
        """A copy with fields changed (validated again)."""
        return replace(self, **changes)

    def thinned(self, factor: float, min_width: int = 4) -> "Point":
        """The same layout with every channel count x `factor` (at least `min_width`): a CPU proxy of the point.

        Scales stem, stage and inception branch widths, the per-group width d, the growth rate and the
        head's hidden layers; depth, cardinality, kernels, strides and skips stay. Cardinality still divides
        every grouped width (it is C x d); shuffle stages keep even widths (rounded up); regnet's group width
        scales too, and its stage widths round up until the group width divides the 3x3 conv's width. factor 1
        returns the point itself.
        """
        if not 0.0 < factor <= 1.0:
            raise UserError(f"model.width_scale: must be in (0, 1], got {factor}")
        if factor == 1.0:
            return self

        def thin(w: int, step: int = 1) -> int:
            out = max(min_width, round(w * factor)) if w else w
            return out + (-out) % step

        group_width = max(1, round(self.group_width * factor)) if self.group_width else 0

        def width(s: Stage) -> int:
            rule = BLOCK_RULES[s.block]
            w = thin(s.width, 2 if rule.even_width else 1)
            while rule.group_width and ((m := round(w * self.bottleneck_ratio)) < 1 or m % min(group_width, m)):
                w += 1  # the group width divides the k x k conv's width w x bottleneck_ratio
            return w

        stages = tuple(replace(s, width=width(s), branches=tuple(tuple(thin(w) for w in b) for b in s.branches))
                       for s in self.stages)
        return replace(self, stages=stages, stem=replace(self.stem, width=thin(self.stem.width)),
                       head=replace(self.head, hidden=tuple(thin(w) for w in self.head.hidden), conv=thin(self.head.conv)),
                       bottleneck_width=max(1, round(self.bottleneck_width * factor)),
                       growth_rate=thin(self.growth_rate), group_width=group_width)


def _reads(point: Point, skip: str, stage: Stage, name: str) -> bool:
    """Whether the family of `stage`'s block reads the point-wide field `name` (one of BLOCK_FIELDS) in a point
    with `skip`."""
    rule = BLOCK_RULES[stage.block]
    if name == "drop_path":  # on a residual branch: none where the point's skip is 'none'
        return rule.drop_path and (rule.skip or skip) != "none"
    if name == "dropout":  # plain: after a stage's pool; basic blocks: between their convs; the rest: always
        return rule.dropout and (stage.pool != "none" if rule.family == "plain" else
                                 len(stage.kernels) > 1 or rule.cardinality or rule.family != "residual")
    if name == "expansion" and rule.expansion:
        return stage.expansion == 0  # mbconv and convnext fall back on the point's ratio
    if name == "attn_ratio" and point.attention not in RATIO_ATTENTIONS:
        return False
    return name in rule.uses


def _canonical_stage(stage: Stage) -> Stage:
    """The stage with the fields its block does not read at their defaults."""
    rule = BLOCK_RULES[stage.block]
    return replace(stage, expansion=stage.expansion if rule.expansion else 0.0,
                   width=stage.width if rule.widths == "width" else 0,
                   branches=stage.branches if rule.widths == "branches" else ())


def _canonical(point: Point) -> dict:
    """The fields of `point` that no stage reads and that differ from their defaults, set to the defaults: two
    points that make one net are one point, with one id."""
    skips, out = {BLOCK_RULES[s.block].skip for s in point.stages}, {}
    if len(skips) == 1 and "" not in skips and point.skip not in skips:
        out["skip"] = skips.pop()
    skip = out.get("skip", point.skip)
    out |= {name: default for name, default in BLOCK_FIELDS.items()
            if getattr(point, name) != default and not any(_reads(point, skip, s, name) for s in point.stages)}
    stages = tuple(_canonical_stage(s) for s in point.stages)
    return {**out, "stages": stages} if stages != point.stages else out


LATE_DEFAULTS = {"group_width": 0, "bottleneck_ratio": 1.0, "layer_scale": 0.0}
LATE_STAGE_DEFAULTS = {"expansion": 0.0}
LATE_HEAD_DEFAULTS = {"conv": 0, "norm": False}


def _drop(data: dict, defaults: dict) -> dict:
    return {k: v for k, v in data.items() if not (k in defaults and v == defaults[k])}


def _without_late_defaults(data: dict) -> dict:
    """The dict without fields that were added later and still hold their defaults (ids stay stable)."""
    data = _drop(data, LATE_DEFAULTS)
    data["stages"] = [_drop(s, LATE_STAGE_DEFAULTS) for s in data["stages"]]
    data["head"] = _drop(data["head"], LATE_HEAD_DEFAULTS)
    return data


def _no_unknown(path: str, data: dict, cls) -> None:
    known = {f.name for f in fields(cls)}
    extra = sorted(set(data) - known)
    if extra:
        raise UserError(f"{path}: unknown key {extra[0]!r}; valid: {', '.join(sorted(known))}")


def _sub(path: str, data, cls, tuple_keys=()):
    if not isinstance(data, dict):
        raise UserError(f"{path}: must be a mapping, got {data!r}")
    _no_unknown(path, data, cls)
    data = {k: tuple(v) if k in tuple_keys and isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**data)
    except TypeError as exc:
        raise UserError(f"{path}: {exc}") from None


def _stage(i: int, data) -> Stage:
    path = f"stages[{i}]"
    if isinstance(data, Stage):
        return data
    if not isinstance(data, dict):
        raise UserError(f"{path}: must be a mapping, got {data!r}")
    data = dict(data)
    if "kernels" in data:
        k = data["kernels"]
        data["kernels"] = tuple(k) if isinstance(k, (list, tuple)) else (k,)
    if "branches" in data:
        data["branches"] = tuple(tuple(b) for b in data["branches"])
    if "block" not in data or "depth" not in data:
        raise UserError(f"{path}: needs 'block' and 'depth'")
    return _sub(path, data, Stage)
