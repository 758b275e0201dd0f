"""EM membrane data: synthetic ISBI-like slices (``em``) and the ISBI 2012 TIFF stacks (``isbi2012``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from segkit.contracts.fake_data import make_fake_isbi
from scipy import ndimage
from torch.utils.data import Dataset

from segkit.data import EMDataModule, EMDataset, ISBI2012DataModule
from segkit.data.modules.em import EM_MEAN, EM_STD
from segkit.data.modules.isbi import LABELS_FILE, VOLUME_FILE
from segkit.errors import SegkitError


def test_same_seed_and_index_give_the_same_slice_and_other_indices_differ() -> None:
    first = EMDataset("val", length=3, image_size=64, seed=7)
    second = EMDataset("val", length=3, image_size=64, seed=7)
    for index in range(3):
        assert all(torch.equal(a, b) for a, b in zip(first[index], second[index]))
    image_0, mask_0 = first[0]
    image_1, mask_1 = first[1]
    assert not torch.equal(image_0, image_1) and not torch.equal(mask_0, mask_1)
    assert not torch.equal(image_0, EMDataset("val", length=3, image_size=64, seed=8)[0][0])


def test_masks_hold_only_cell_and_membrane_and_both_appear() -> None:
    dataset = EMDataset("test", length=4, image_size=96)
    for index in range(4):
        assert set(dataset[index][1].unique().tolist()) == {0, 1}


def test_membrane_fraction_is_like_isbi() -> None:
    # ISBI 2012's labels are roughly 20% membrane; thin synthetic membranes give a bit less.
    fractions = [EMDataset("val", length=6, image_size=256).render(i)[1].mean() for i in range(6)]
    assert 0.10 <= np.mean(fractions) <= 0.35, fractions
    assert all(0.05 <= f <= 0.40 for f in fractions), fractions


def test_membranes_are_dark_and_dark_organelles_inside_cells_are_labelled_cell() -> None:
    dataset = EMDataset("val", length=4, image_size=128)
    distractors = 0
    for index in range(4):
        image, mask = dataset.render(index)
        membrane, cell = image[mask == 1], image[mask == 0]
        assert membrane.mean() < cell.mean() - 0.15
        # Label-0 pixels well clear of any membrane (so not just its blurred edge) yet darker
        # than a typical membrane pixel: organelles, which intensity alone would call membrane.
        clear = ndimage.distance_transform_edt(mask == 0) > 5
        distractors += int((image[clear] < np.median(membrane)).sum())
    assert distractors >= 100


def test_datamodule_loaders_yield_one_channel_normalised_images_and_long_masks() -> None:
    dm = EMDataModule(image_size=48, train_size=4, val_size=3, test_size=2, batch_size=2, num_workers=0)
    assert (dm.num_classes, dm.in_channels, dm.membrane_class) == (2, 1, 1)
    assert list(dm.class_names) == ["cell", "membrane"]
    dm.setup("fit")
    for loader, size in ((dm.train_dataloader(), 2), (dm.val_dataloader(), 2), (dm.test_dataloader(), 2)):
        images, masks = next(iter(loader))
        assert images.shape == (size, 1, 48, 48) and images.dtype == torch.float32
        assert masks.shape == (size, 48, 48) and masks.dtype == torch.int64
    images, masks = next(iter(dm.val_dataloader()))
    raw_image, raw_mask = dm.val_set.render(0)
    torch.testing.assert_close(images[0, 0], (torch.from_numpy(raw_image) - EM_MEAN[0]) / EM_STD[0])
    assert torch.equal(masks[0], torch.from_numpy(raw_mask).long())


def test_training_augmentation_keeps_image_and_mask_aligned() -> None:
    # Rotations, flips, shifts, elastic deformation and grey-value jitter move image and mask
    # together: the membranes under the augmented mask are still the dark pixels.
    dm = EMDataModule(image_size=64, train_size=8, num_workers=0)
    dm.setup("fit")
    torch.manual_seed(0)
    changed = 0
    for index in range(8):
        image, mask = dm.train_set[index]
        raw = (torch.from_numpy(dm.train_set.render(index)[0]) - EM_MEAN[0]) / EM_STD[0]
        changed += not torch.allclose(image[0], raw, atol=1e-4)
        assert set(mask.unique().tolist()) <= {0, 1, 255}
        assert image[0][mask == 1].mean() < image[0][mask == 0].mean() - 0.3, index
    assert changed == 8
    plain = EMDataModule(image_size=64, train_size=8, num_workers=0, augment=False)
    plain.setup("fit")
    image, mask = plain.train_set[3]
    assert torch.equal(mask, torch.from_numpy(plain.train_set.render(3)[1]).long())


@pytest.mark.parametrize("size", [(96, 160), (160, 96), 40])
def test_any_image_size_works(size: int | tuple[int, int]) -> None:
    height, width = (size, size) if isinstance(size, int) else size
    image, mask = EMDataset("train", length=2, image_size=size)[1]
    assert image.shape == (1, height, width) and image.dtype == torch.float32
    assert mask.shape == (height, width) and mask.dtype == torch.int64


def test_isbi_labels_become_membrane_1_and_cell_0(tmp_path: Path) -> None:
    dm = ISBI2012DataModule(root=str(make_fake_isbi(tmp_path)), num_workers=0)
    dm.setup("fit")
    image, mask = dm.val_set[0]
    assert image.shape == (1, 32, 32) and mask.shape == (32, 32) and mask.dtype == torch.int64
    expected = torch.zeros(32, 32, dtype=torch.long)
    expected[:, :16] = 1
    assert torch.equal(mask, expected)
    assert (dm.num_classes, dm.in_channels, dm.membrane_class) == (2, 1, 1)


def test_isbi_splits_slices_by_index_and_test_reuses_val(tmp_path: Path) -> None:
    def slice_ids(dataset: Dataset) -> list[int]:  # volume page i holds 40 * i + 10 (before normalisation)
        values = [dataset[n][0][0, 0, 0].item() * EM_STD[0] + EM_MEAN[0] for n in range(len(dataset))]
        return [round((v * 255 - 10) / 40) for v in values]

    root = str(make_fake_isbi(tmp_path))
    default = ISBI2012DataModule(root=root, num_workers=0, augment=False)
    default.setup("fit")
    assert slice_ids(default.train_set) == [0, 1] and slice_ids(default.val_set) == [2, 3, 4]
    chosen = ISBI2012DataModule(root=root, val_slices=[3, 1], num_workers=0, augment=False)
    chosen.setup("fit")
    assert slice_ids(chosen.train_set) == [0, 2, 4] and slice_ids(chosen.val_set) == [1, 3]
    assert chosen.test_set is chosen.val_set
    images, masks = next(iter(chosen.train_dataloader()))
    assert images.shape == (1, 1, 32, 32) and masks.shape == (1, 32, 32)


@pytest.mark.parametrize("missing", ["root", VOLUME_FILE, LABELS_FILE])
def test_isbi_missing_files_name_the_path_the_source_and_the_key(tmp_path: Path, missing: str) -> None:
    root = tmp_path / "isbi"
    if missing != "root":
        make_fake_isbi(root)
        (root / missing).unlink()
    expected = VOLUME_FILE if missing == "root" else missing
    dm = ISBI2012DataModule(root=str(root), num_workers=0)
    with pytest.raises(SegkitError, match=rf"{root / expected}: no such file.*isbi-2012.*data\.root="):
        dm.setup("fit")


def test_isbi_stacks_of_different_lengths_or_page_sizes_are_rejected(tmp_path: Path) -> None:
    root = make_fake_isbi(tmp_path / "count", pages=5, label_pages=4)
    with pytest.raises(SegkitError, match=rf"{VOLUME_FILE} has 5 pages but .*{LABELS_FILE} has 4"):
        ISBI2012DataModule(root=str(root), num_workers=0).setup("fit")
    root = make_fake_isbi(tmp_path / "size", size=(32, 32), label_size=(32, 24))
    with pytest.raises(SegkitError, match=rf"{VOLUME_FILE} and .*{LABELS_FILE}: pages differ in size \(32x24, 32x32\)"):
        ISBI2012DataModule(root=str(root), num_workers=0).setup("fit")


@pytest.mark.parametrize("bad", [5, -1])
def test_isbi_val_slice_out_of_range_names_the_value_and_the_valid_range(tmp_path: Path, bad: int) -> None:
    dm = ISBI2012DataModule(root=str(make_fake_isbi(tmp_path)), val_slices=[0, bad], num_workers=0)
    with pytest.raises(SegkitError, match=rf"data\.val_slices: {bad} is out of range.*0\.\.4"):
        dm.setup("fit")
