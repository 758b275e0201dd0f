"""Tiny fake data trees, as the data modules read them from disk (no download in tests): what the
data-module contract (``contract_config``) and the suite write into temporary folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from segkit.data.modules.isbi import LABELS_FILE, VOLUME_FILE
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


def make_fake_voc(root: Path, year: str = "2012", seg11valid: list[str] | None = None,
                  sizes: Sequence[tuple[int, int]] = FAKE_VOC_SIZES) -> Path:
    """Write ``root/VOCdevkit/VOC<year>`` with JPEG images, palette PNG masks and split lists.

    ``sizes``: ``(height, width)`` of each image, the train ids' first, then the val ids'.
    Returns ``root`` (what ``VOCDataModule(root=...)`` takes).
    """
    voc = root / "VOCdevkit" / f"VOC{year}"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = [i for split in FAKE_VOC_SPLITS.values() for i in split]
    if len(sizes) != len(ids):
        raise ValueError(f"sizes: {len(sizes)} given for the {len(ids)} fake VOC images")
    for n, (image_id, (height, width)) in enumerate(zip(ids, sizes)):
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


def make_fake_isbi(root: Path, pages: int = 5, size: tuple[int, int] = (32, 32), label_pages: int | None = None,
               label_size: tuple[int, int] | None = None) -> Path:
    """A tiny ISBI stack: volume page i is filled with 40 * i + 10; each label page has
    membrane (dark, 0..30) on its left half and cell (bright, 225..255) on its right."""
    root.mkdir(parents=True, exist_ok=True)
    volume = [Image.fromarray(np.full(size, 40 * i + 10, np.uint8)) for i in range(pages)]
    lh, lw = label_size or size
    label = np.full((lh, lw), 255, np.uint8)
    label[:, : lw // 2] = 0
    label[0, 0], label[0, -1] = 30, 225  # lossy-compression-like values either side of 128
    labels = [Image.fromarray(label) for _ in range(pages if label_pages is None else label_pages)]
    volume[0].save(root / VOLUME_FILE, save_all=True, append_images=volume[1:])
    labels[0].save(root / LABELS_FILE, save_all=True, append_images=labels[1:])
    return root


def make_fake_folder(root: Path, sizes: Sequence[tuple[int, int]] = ((37, 53), (48, 41), (33, 60), (45, 45)),
                     num_classes: int = 3) -> Path:
    """A ``data=folder`` tree (``root/{train,val}/{images,masks}``): RGB PNGs of odd, varying
    sizes, index masks with a 255 (ignore) band, the last class absent from val."""
    rng = np.random.default_rng(0)
    for split, members in (("train", sizes[:-1]), ("val", sizes[-1:])):
        for folder in ("images", "masks"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for n, (height, width) in enumerate(members):
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / split / "images" / f"{split}{n}.png")
            label = 1 + n % (num_classes - 1) if split == "train" else 1
            Image.fromarray(fake_voc_mask(height, width, label)).save(root / split / "masks" / f"{split}{n}.png")
    return root
