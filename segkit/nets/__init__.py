"""Plain ``torch.nn`` networks (no Lightning): each maps images to per-pixel logits."""

from segkit.nets.densify import densify
from segkit.nets.fcn import FCN8s, FCN8sAtOnce, FCN16s, FCN32s
from segkit.nets.patch_cnn import PatchCNN
from segkit.nets.unet import UNet
from segkit.nets.unet_paper import PaperUNet
from segkit.nets.vgg import convolutionalize
from segkit.nets.window_scan import naive_window_scores

__all__ = [
    "FCN8s", "FCN8sAtOnce", "FCN16s", "FCN32s", "PaperUNet", "PatchCNN", "UNet", "convolutionalize", "densify",
    "naive_window_scores",
]
