"""The EM membrane generator keeps its promises: ISBI-style masks, a plausible membrane share, and
images that need a learned model (no global threshold separates membrane from interior)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from segkit.benchmarks.userdata_em import render_em, write_em_dataset
from segkit.errors import SegkitError

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def renders() -> list[tuple[np.ndarray, np.ndarray]]:
    return [render_em(np.random.default_rng(seed), 208, 224) for seed in SEEDS]


def best_threshold_error(image: np.ndarray, membrane: np.ndarray) -> float:
    """The smallest share of misclassified pixels over every rule ``membrane = image < t``."""
    below_membrane = np.concatenate([[0], np.cumsum(np.bincount(image[membrane], minlength=256))])
    below_interior = np.concatenate([[0], np.cumsum(np.bincount(image[~membrane], minlength=256))])
    missed_membrane = membrane.sum() - below_membrane  # membrane pixels at or above t
    return float(((missed_membrane + below_interior) / image.size).min())


def test_image_and_mask_are_8_bit_single_channel_of_the_asked_size() -> None:
    image, mask = render_em(np.random.default_rng(0), 70, 90)
    assert image.dtype == np.uint8 and mask.dtype == np.uint8
    assert image.shape == mask.shape == (70, 90)


def test_masks_are_isbi_style_0_membrane_255_interior(renders: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for _, mask in renders:
        assert set(np.unique(mask).tolist()) == {0, 255}


def test_membranes_are_10_to_30_percent_of_pixels(renders: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for _, mask in renders:
        assert 0.10 <= (mask == 0).mean() <= 0.30


def test_interiors_are_many_cells_separated_by_membrane(renders: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for _, mask in renders:
        _, cells = ndimage.label(mask == 255)
        assert cells >= 10  # a tessellation, not one background with lines on it


def test_the_same_seed_gives_the_same_image_and_another_seed_another() -> None:
    first = render_em(np.random.default_rng(5), 96, 112)
    again = render_em(np.random.default_rng(5), 96, 112)
    other = render_em(np.random.default_rng(6), 96, 112)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[1], other[1])


def test_membranes_are_darker_but_no_global_threshold_separates_them(
        renders: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for image, mask in renders:
        membrane = mask == 0
        assert image[membrane].mean() < image[~membrane].mean() - 20
        assert best_threshold_error(image, membrane) >= 0.05


def test_some_cells_hold_dark_organelles_labelled_interior(renders: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for image, mask in renders:
        membrane = mask == 0
        smoothed = ndimage.gaussian_filter(image.astype(np.float32), 1.5)  # noise averaged away
        deep_inside = ndimage.distance_transform_edt(~membrane) > 3
        dark = deep_inside & (smoothed < np.median(smoothed[membrane]))
        assert dark.sum() >= 200  # a few organelles' worth of pixels as dark as a membrane


def test_write_em_dataset_writes_a_folder_tree_of_grey_pngs(tmp_path: Path) -> None:
    root = write_em_dataset(tmp_path / "em", seed=3, train=3, val=2, size_range=(60, 72))
    assert root == tmp_path / "em"
    for split, count in (("train", 3), ("val", 2)):
        names = [f"em_{i:04d}.png" for i in range(count)]
        assert sorted(p.name for p in (root / split / "images").iterdir()) == names
        assert sorted(p.name for p in (root / split / "masks").iterdir()) == names
        for name in names:
            image = Image.open(root / split / "images" / name)
            mask = Image.open(root / split / "masks" / name)
            assert image.mode == mask.mode == "L"
            assert image.size == mask.size and all(60 <= side <= 72 for side in image.size)
            assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}
    sizes = {Image.open(p).size for p in root.glob("*/images/*.png")}
    assert len(sizes) > 1  # sizes are drawn per image


def test_write_em_dataset_is_deterministic_in_its_seed(tmp_path: Path) -> None:
    one = write_em_dataset(tmp_path / "one", seed=1, train=1, val=1, size_range=(48, 56))
    two = write_em_dataset(tmp_path / "two", seed=1, train=1, val=1, size_range=(48, 56))
    for relative in ("train/images/em_0000.png", "val/masks/em_0000.png"):
        assert (one / relative).read_bytes() == (two / relative).read_bytes()


def test_write_em_dataset_refuses_a_non_empty_root(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SegkitError, match="not an empty directory"):
        write_em_dataset(tmp_path, train=1, val=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
