"""LightningDataModules and datasets."""

from segkit.data.base import SegmentationDataModule
from segkit.data.shapes import ShapesDataModule, ShapesDataset
from segkit.data.voc import VOCDataModule
from segkit.data.windows import PatchDataModule

__all__ = ["SegmentationDataModule", "ShapesDataModule", "ShapesDataset", "VOCDataModule", "PatchDataModule"]
