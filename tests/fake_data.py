"""Tiny fake data trees for data modules of public data sets (no download in tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segkit.palette import voc_palette

# (height, width) of the fake images: different sizes, as in VOC.
FAKE_VOC_SIZES = ((40, 56), (48, 36), (33, 45), (52, 52), (37, 61))
FAKE_VOC_SPLITS = {"train": ["2007_000001", "2007_000002", "2007_000003"], "val": ["2008_000004", "2008_000005"]}


def fake_voc_mask(height: int, width: int, label: int) -> np.ndarray:
    """Background, one ``label`` rectangle and a 255 (ignore) band around it, as VOC draws."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4 - 1 : 3 * height // 4 + 1, width // 4 - 1 : 3 * width // 4 + 1] = 255
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = label
    return mask


def make_fake_voc(root: Path, year: str = "2012", seg11valid: list[str] | None = None) -> Path:
    """Write ``root/VOCdevkit/VOC<year>`` with JPEG images, palette PNG masks and split lists.

    Returns ``root`` (what ``VOCDataModule(root=...)`` takes).
    """
    voc = root / "VOCdevkit" / f"VOC{year}"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = [i for split in FAKE_VOC_SPLITS.values() for i in split]
    for n, (image_id, (height, width)) in enumerate(zip(ids, FAKE_VOC_SIZES)):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        mask = Image.fromarray(fake_voc_mask(height, width, label=n + 1), mode="P")
        mask.putpalette(voc_palette(256).flatten().tolist())
        mask.save(voc / "SegmentationClass" / f"{image_id}.png")
    lists = {**FAKE_VOC_SPLITS, "trainval": ids}
    if seg11valid is not None:
        lists["seg11valid"] = seg11valid
    for name, members in lists.items():
        (voc / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("\n".join(members) + "\n")
    return root
