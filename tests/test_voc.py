"""The VOC data module on a tiny fake VOC tree (torchvision's VOCSegmentation layout)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from segkit.contracts.fake_data import FAKE_VOC_SIZES, FAKE_VOC_SPLITS, make_fake_voc

from segkit.data import VOCDataModule
from segkit.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from segkit.errors import SegkitError


def test_val_batches_are_whole_images_with_palette_indices_and_ignore_bands(tmp_path: Path) -> None:
    dm = VOCDataModule(root=str(make_fake_voc(tmp_path)), num_workers=0)
    dm.setup("fit")
    batches = list(dm.val_dataloader())
    assert len(batches) == len(FAKE_VOC_SPLITS["val"])
    first_val = len(FAKE_VOC_SPLITS["train"])
    for n, (image, mask) in enumerate(batches):
        height, width = FAKE_VOC_SIZES[first_val + n]
        assert image.shape == (1, 3, height, width) and mask.shape == (1, height, width)
        # The mask holds the palette *indices* (label = file position + 1), not RGB colours.
        assert set(mask.unique().tolist()) == {0, first_val + n + 1, 255}


def test_training_crops_pad_with_the_ignore_index_so_mixed_sizes_batch(tmp_path: Path) -> None:
    dm = VOCDataModule(root=str(make_fake_voc(tmp_path)), crop_size=50, batch_size=3, num_workers=0)
    dm.setup("fit")
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (3, 3, 50, 50) and masks.shape == (3, 50, 50)
    # Every fake image is smaller than 50 on some side, so each crop has padding marked 255.
    assert all((m == 255).any() for m in masks)


def test_inputs_are_normalised_with_imagenet_statistics(tmp_path: Path) -> None:
    dm = VOCDataModule(root=str(make_fake_voc(tmp_path)), num_workers=0)
    dm.setup("validate")
    image, _ = dm.val_set[0]
    assert dm.mean == list(IMAGENET_MEAN) and dm.std == list(IMAGENET_STD)
    # Uniform noise in [0, 1] normalised per channel: mean about (0.5 - m) / s.
    expected = (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(image.mean(dim=(1, 2)), expected, atol=0.15)


def test_seg11valid_reads_the_fcn_papers_id_list(tmp_path: Path) -> None:
    ids = ["2007_000002", "2008_000005"]  # any ids of the tree, as VOC2011 val ids are in VOC2012
    dm = VOCDataModule(root=str(make_fake_voc(tmp_path, seg11valid=ids)), val_split="seg11valid", num_workers=0)
    dm.setup("validate")
    assert [Path(p).stem for p in dm.val_set.images] == ids
    assert dm.test_set is dm.val_set


def test_missing_seg11valid_list_names_the_file_and_where_to_get_it(tmp_path: Path) -> None:
    dm = VOCDataModule(root=str(make_fake_voc(tmp_path)), val_split="seg11valid", num_workers=0)
    with pytest.raises(SegkitError, match=r"seg11valid\.txt.*reference repo"):
        dm.setup("validate")


def test_missing_tree_says_how_to_get_it(tmp_path: Path) -> None:
    dm = VOCDataModule(root=str(tmp_path / "nowhere"), num_workers=0)
    with pytest.raises(SegkitError, match=r"data.root=.*nowhere.*data.download=true"):
        dm.setup("fit")


def test_batches_of_whole_images_need_a_crop(tmp_path: Path) -> None:
    with pytest.raises(SegkitError, match=r"data.batch_size=4 .*data.crop_size"):
        VOCDataModule(root=str(tmp_path), batch_size=4)
