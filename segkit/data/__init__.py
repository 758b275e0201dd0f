"""LightningDataModules and datasets."""

from segkit.data.base import SegmentationDataModule
from segkit.data.shapes import ShapesDataModule, ShapesDataset
from segkit.data.voc import VOCDataModule

__all__ = ["SegmentationDataModule", "ShapesDataModule", "ShapesDataset", "VOCDataModule"]
