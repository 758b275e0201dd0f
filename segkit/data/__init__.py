"""LightningDataModules and datasets."""

from segkit.data.base import SegmentationDataModule
from segkit.data.modules.em import EMDataModule, EMDataset
from segkit.data.modules.folder import FolderDataModule
from segkit.data.modules.isbi import ISBI2012DataModule
from segkit.data.modules.shapes import ShapesDataModule, ShapesDataset
from segkit.data.modules.voc import VOCDataModule
from segkit.data.modules.patches import PatchDataModule

__all__ = [
    "EMDataModule", "EMDataset", "FolderDataModule", "ISBI2012DataModule", "PatchDataModule",
    "SegmentationDataModule", "ShapesDataModule", "ShapesDataset", "VOCDataModule",
]
