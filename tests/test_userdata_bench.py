"""The user-data benchmark: its generators keep their promises, its scorers score right."""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import segkit.benchmarks.userdata as userdata
import segkit.benchmarks.userdata_render as userdata_render
from segkit.benchmarks.userdata import (
    hand_loop,
    main,
    object_f1,
    otsu_scores,
    separated_foreground,
    write_folder_dataset,
    write_nuclei_dataset,
)

tifffile = pytest.importorskip("tifffile")


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("ud") / "folder", seed=0, train=16, val=4)


@pytest.fixture(scope="module")
def nuclei_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nuclei_dataset(tmp_path_factory.mktemp("ud") / "nuclei", seed=0, train=2, val=3)


def _pngs(root: Path, split: str, kind: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted((root / split / kind).glob("*.png"))]


def test_folder_layout_sizes_and_classes(folder_root: Path) -> None:
    assert (folder_root / "classes.txt").read_text().split() == ["background", "star", "crescent", "blob"]
    for split, count in (("train", 16), ("val", 4)):
        images, masks = _pngs(folder_root, split, "images"), _pngs(folder_root, split, "masks")
        assert len(images) == len(masks) == count
        for image, mask in zip(images, masks):
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
            assert all(80 <= side <= 220 for side in mask.shape)
    masks = _pngs(folder_root, "train", "masks")
    sides = [side for mask in masks for side in mask.shape]
    assert any(side % 2 for side in sides) and len(set(sides)) > 10
    values = set(np.unique(np.concatenate([m.ravel() for m in masks])).tolist())
    assert values == {0, 1, 2, 3, 255}
    assert any(not {1, 2, 3} <= set(np.unique(m).tolist()) for m in masks), "every image holds every class"


def test_folder_band_is_two_pixels_wide_around_objects(folder_root: Path) -> None:
    mask = next(m for m in _pngs(folder_root, "train", "masks") if (m == 255).any())
    band = mask == 255
    # Outside the band, no two neighbouring pixels differ in class.
    for a, b in ((mask[:, :-1], mask[:, 1:]), (mask[:-1], mask[1:])):
        assert ((a == b) | (a == 255) | (b == 255)).all(), "two classes touch without an ignore band"
    assert 0.02 < band.mean() < 0.3


def test_folder_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = write_folder_dataset(tmp_path / "a", seed=3, train=2, val=1)
    b = write_folder_dataset(tmp_path / "b", seed=3, train=2, val=1)
    c = write_folder_dataset(tmp_path / "c", seed=4, train=2, val=1)
    for kind in ("images", "masks"):
        assert all(np.array_equal(x, y) for x, y in zip(_pngs(a, "train", kind), _pngs(b, "train", kind)))
    assert not np.array_equal(_pngs(a, "train", "images")[0], _pngs(c, "train", "images")[0])


def _class_colour_distance(class_colours: bool) -> list[float]:
    """Per class 1..3: mean RGB distance of its (non-band) pixels to the class's base hue."""
    by_class: dict[int, list[np.ndarray]] = {1: [], 2: [], 3: []}
    for seed in range(12):
        image, mask = userdata_render.render_folder_scene(np.random.default_rng(seed), class_colours)
        for cls in by_class:
            by_class[cls].append(image[mask == cls].astype(np.float32) / 255)
    hues = userdata_render.CLASS_HUES
    return [float(np.linalg.norm(np.concatenate(by_class[c]) - np.asarray(hues[c - 1]), axis=1).mean())
            for c in by_class]


def test_class_colours_keep_each_class_near_its_hue_and_random_colours_do_not() -> None:
    # Textures mix the hue with a darker shade, so distances are well above the jitter.
    near, random = _class_colour_distance(True), _class_colour_distance(False)
    assert all(n < 0.45 for n in near), near
    assert all(r > n + 0.1 for r, n in zip(random, near)), (random, near)


def test_class_colours_leave_shapes_and_labels_to_the_same_rules(tmp_path: Path) -> None:
    root = write_folder_dataset(tmp_path / "cc", seed=3, train=6, val=2, class_colours=True)
    masks = _pngs(root, "train", "masks")
    assert set(np.unique(np.concatenate([m.ravel() for m in masks])).tolist()) <= {0, 1, 2, 3, 255}
    assert all(80 <= side <= 220 for mask in masks for side in mask.shape)


def test_nuclei_are_16_bit_instances_with_touching_pairs(nuclei_root: Path) -> None:
    for split, count in (("train", 2), ("val", 3)):
        paths = sorted((nuclei_root / split / "images").glob("*.tif"))
        assert len(paths) == count
        for path in paths:
            image = tifffile.imread(path)
            instances = tifffile.imread(nuclei_root / split / "masks" / path.name)
            assert image.dtype == instances.dtype == np.uint16 and image.shape == instances.shape == (192, 176)
            assert image.max() > 10_000 and image.min() < 1_000
            ids = np.unique(instances[instances > 0])
            assert ids.tolist() == list(range(1, len(ids) + 1)) and len(ids) >= 10
            # Every nucleus is one 4-connected region, and its separated foreground one piece.
            for index, box in enumerate(ndimage.find_objects(instances), start=1):
                assert ndimage.label(instances[box] == index)[1] == 1
            assert ndimage.label(separated_foreground(instances))[1] == len(ids)
            # Touching: 4-neighbours with two different nonzero ids.
            a, b = instances[:, :-1].astype(int), instances[:, 1:].astype(int)
            assert ((a > 0) & (b > 0) & (a != b)).any()


def test_nuclei_are_deterministic_per_seed(tmp_path: Path) -> None:
    roots = [write_nuclei_dataset(tmp_path / str(s), seed=seed, train=0, val=1, size=(64, 72))
             for s, seed in enumerate((5, 5, 6))]
    images = [tifffile.imread(r / "val" / "images" / "nuclei_0000.tif") for r in roots]
    assert images[0].shape == (64, 72)
    assert np.array_equal(images[0], images[1]) and not np.array_equal(images[0], images[2])


def test_object_f1_perfect_and_merged() -> None:
    instances = np.zeros((20, 30), np.uint16)
    instances[4:14, 3:10], instances[4:14, 10:17], instances[2:8, 22:28] = 1, 2, 3
    assert object_f1(separated_foreground(instances), instances)["f1"] == 1.0
    merged = object_f1(instances > 0, instances)  # 1 and 2 become one component
    assert merged["matched"] == 1 and merged["predicted"] == 2 and merged["true"] == 3
    assert merged["f1"] == pytest.approx(2 * 1 / 5)
    assert object_f1(np.zeros_like(instances, bool), instances)["recall"] == 0.0


def test_otsu_scores_in_unit_range(nuclei_root: Path) -> None:
    scores = otsu_scores(nuclei_root, "val")
    assert scores["images"] == 3
    for key in ("iou_background", "iou_foreground", "mIoU", "precision", "recall", "f1"):
        assert 0.0 <= scores[key] <= 1.0, key


def test_hand_loop_smoke(tmp_path: Path) -> None:
    result = hand_loop(write_folder_dataset(tmp_path / "tiny", seed=1, train=4, val=2), seconds=3)
    assert math.isfinite(result["val_mIoU"]) and 0.0 <= result["val_mIoU"] <= 1.0
    assert result["steps"] >= 1 and result["seconds"] >= 3


def test_cli_refuses_non_empty_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("x")
    assert main(["write-folder", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not an empty directory" in err and "\n" not in err
    assert main(["write-nuclei", str(tmp_path / "new"), "--train", "1", "--val", "1", "--size", "48", "40"]) == 0
    assert '"root"' in capsys.readouterr().out


@pytest.mark.parametrize("module", [userdata, userdata_render])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
