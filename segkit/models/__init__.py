"""LightningModules: one base (loss, metrics, optimiser, logging) and one per architecture."""

from segkit.models.base import SegmentationModule
from segkit.models.fcn import FCNModule
from segkit.models.patch_cnn import PatchCNNModule
from segkit.models.smp import SMPModule
from segkit.models.unet import UNetModule
from segkit.models.unet_paper import UNetPaperModule

__all__ = ["FCNModule", "PatchCNNModule", "SMPModule", "SegmentationModule", "UNetModule", "UNetPaperModule"]
