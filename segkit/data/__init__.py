"""LightningDataModules and datasets."""

from segkit.data.base import SegmentationDataModule
from segkit.data.em import EMDataModule, EMDataset
from segkit.data.folder import FolderDataModule
from segkit.data.isbi import ISBI2012DataModule
from segkit.data.shapes import ShapesDataModule, ShapesDataset
from segkit.data.voc import VOCDataModule
from segkit.data.windows import PatchDataModule

__all__ = [
    "EMDataModule", "EMDataset", "FolderDataModule", "ISBI2012DataModule", "PatchDataModule",
    "SegmentationDataModule", "ShapesDataModule", "ShapesDataset", "VOCDataModule",
]
