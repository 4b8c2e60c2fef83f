"""Point -> nn.Module, from timm layers. `dse.arch.build` is also `dse.build`."""
from dse.arch.net import Net, build

__all__ = ["Net", "build"]
