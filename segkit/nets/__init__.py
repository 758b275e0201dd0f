"""Plain ``torch.nn`` networks (no Lightning): each maps images to per-pixel logits."""

from segkit.nets.unet import UNet

__all__ = ["UNet"]
