"""LightningDataModules and datasets."""

from segkit.data.base import SegmentationDataModule
from segkit.data.shapes import ShapesDataModule, ShapesDataset

__all__ = ["SegmentationDataModule", "ShapesDataModule", "ShapesDataset"]
