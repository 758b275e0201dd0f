"""Plain ``torch.nn`` networks (no Lightning): each maps images to per-pixel logits."""

from segkit.nets.fcn import FCN8s, FCN8sAtOnce, FCN16s, FCN32s
from segkit.nets.unet import UNet
from segkit.nets.vgg import convolutionalize

__all__ = ["FCN8s", "FCN8sAtOnce", "FCN16s", "FCN32s", "UNet", "convolutionalize"]
