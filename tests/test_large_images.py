"""Training from slides too large to decode whole: each sample reads only its crop of the image and
of the mask, preflight reads only their headers, and samples stay reproducible by seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import segkit.data.files.large as large
import segkit.data.files.preflight as preflight
from segkit.data import FolderDataModule
from segkit.data.files.masks import MaskDecoder
from segkit.data.sampling import SampleKey

HEIGHT, WIDTH, CROP = 301, 517, 64


@pytest.fixture()
def slides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder whose training image counts as large (the threshold lowered for the test): a
    float32 tiled TIFF whose pixel values are their own positions, y * WIDTH + x, and an
    instance mask of 16 x 16 blocks; val holds one small ordinary pair."""
    monkeypatch.setattr(large, "LARGE_PIXELS", 100_000)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    for split, (h, w) in (("train", (HEIGHT, WIDTH)), ("val", (40, 30))):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir(parents=True)
        tifffile.imwrite(tmp_path / split / "images" / "s.tif", (yy * WIDTH + xx)[:h, :w].astype(np.float32), tile=(48, 80))
        blocks = ((yy // 16) * 40 + xx // 16 + 1)[:h, :w].astype(np.uint16)
        blocks[(yy % 16 == 0)[:h, :w]] = 0
        tifffile.imwrite(tmp_path / split / "masks" / "s.tif", blocks, tile=(32, 32))
    return tmp_path


def module(root: Path) -> FolderDataModule:
    # range [0, 1], mean 0, std 1: a sample's pixels are the raw values, so each tells its position.
    dm = FolderDataModule(root=str(root), num_classes=2, in_channels=1, mask_type="instances", crop_size=CROP,
                          batch_size=2, num_workers=0, intensity="range", value_range=[0.0, 1.0], mean=[0.0],
                          std=[1.0], hflip=False)
    dm.setup("fit")
    return dm


def test_a_sample_is_the_crop_of_the_image_and_mask_at_one_place(slides: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    real = preflight.decode_pair
    monkeypatch.setattr(preflight, "decode_pair", lambda pair, *a: decoded.append(Path(pair[0]).parent.parent.name)
                        or real(pair, *a))
    dm = module(slides)
    assert "train" not in decoded  # preflight read the large pair's headers only
    mask = tifffile.imread(slides / "train" / "masks" / "s.tif")
    corners = set()
    for seed in range(6):
        image, classes, instances = dm.train_set[SampleKey(0, seed=seed)]
        assert image.shape == (1, CROP, CROP)
        top, left = divmod(int(image[0, 0, 0]), WIDTH)
        expected = np.arange(top, top + CROP)[:, None] * WIDTH + np.arange(left, left + CROP)[None, :]
        np.testing.assert_array_equal(image[0].numpy(), expected)
        np.testing.assert_array_equal(instances.numpy(), mask[top:top + CROP, left:left + CROP])
        corners.add((top, left))
    assert len(corners) > 1  # different seeds, different places
    again = dm.train_set[SampleKey(0, seed=3)]
    assert all(torch.equal(a, b) for a, b in zip(again, dm.train_set[SampleKey(0, seed=3)]))
    assert "train" not in decoded  # nor did any sample


def test_a_batch_of_crops_trains(slides: Path) -> None:
    dm = module(slides)
    images, classes, _ = next(iter(dm.train_dataloader()))
    assert images.shape[1:] == (1, CROP, CROP) and set(classes.unique().tolist()) <= {0, 1, 255}


def test_validation_scores_every_pixel_of_a_large_image_once_in_tiles(slides: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import segkit.data.files.large as tiles

    monkeypatch.setattr(tiles, "EVAL_TILE", 128)
    (slides / "val" / "images" / "big.tif").write_bytes((slides / "train" / "images" / "s.tif").read_bytes())
    (slides / "val" / "masks" / "big.tif").write_bytes((slides / "train" / "masks" / "s.tif").read_bytes())
    monkeypatch.setattr("segkit.data.files.pairs.EVAL_MARGIN", 16)
    dm = module(slides)
    names = [dm.val_set.sample_name(i) for i in range(len(dm.val_set))]
    assert names[:2] == ["big.tif@0,0", "big.tif@0,128"] and names[-1] == "s.tif" and len(names) == 3 * 5 + 1
    mask = tifffile.imread(slides / "val" / "masks" / "big.tif")
    whole, _ = MaskDecoder("instances", 2)(mask[..., None], Path("big.tif"))  # as the whole mask decodes
    scored = np.zeros(mask.shape, int)
    for index in range(len(names) - 1):
        image, classes = dm.val_set[index]
        top, left = divmod(int(image[0, 0, 0]), WIDTH)  # the tile's first pixel, context included
        window = (slice(top, top + classes.shape[0]), slice(left, left + classes.shape[1]))
        kept = classes.numpy() != 255
        scored[window] += kept
        np.testing.assert_array_equal(classes.numpy()[kept], whole[window][kept])
    assert scored.min() == scored.max() == 1  # every pixel once, context never
    assert dm.val_set.instance_labels(0) is None and dm.val_set.instance_labels(len(names) - 1).shape == (40, 30)
