"""Tiny data sets shaped like users' data, written into temp dirs by the tests.

Odd and varying sizes, 16-bit and float TIFFs, 1/3/4 channels, instance masks whose objects
touch, colour masks, 0/255 masks: what microscopes, scanners and annotation tools write.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

# (height, width) of the images of each split: every one different, odd sides included.
SIZES = {"train": [(37, 53), (48, 41), (29, 66)], "val": [(45, 31), (33, 57)]}


def touching_instances(height: int, width: int, seed: int) -> np.ndarray:
    """Instance ids: two discs that touch (no background between them), and a lone third."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width]
    ids = np.zeros((height, width), np.uint16)
    radius = max(4, min(height, width) // 6)
    cy, cx = height // 2, width // 3
    for index, (y, x) in enumerate(((cy, cx), (cy, cx + 2 * radius - 1)), start=1):
        ids[(rows - y) ** 2 + (cols - x) ** 2 <= radius**2] = index
    y, x = radius + 1, width - radius - 2
    ids[((rows - y) ** 2 + (cols - x) ** 2 <= (radius // 2) ** 2) & (ids == 0)] = 3 + int(rng.integers(0, 5))
    return ids


def nuclei_image(ids: np.ndarray, seed: int, dtype: type = np.uint16) -> np.ndarray:
    """Bright objects on a dim background with noise, in the 16-bit range (up to ~20,000)."""
    rng = np.random.default_rng(seed)
    image = 800 + 15000 * (ids > 0) + rng.normal(0, 300, ids.shape)
    return np.clip(image, 0, 60000).astype(dtype)


def write_nuclei_folder(root: Path, channels_first: int = 0) -> Path:
    """``root/{train,val}``: 16-bit grey TIFFs (``channels_first`` > 0: that many channels as
    (C, H, W)) with 16-bit instance-label TIFF masks whose objects touch."""
    for split, sizes in SIZES.items():
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for n, (height, width) in enumerate(sizes):
            seed = 10 * list(SIZES).index(split) + n
            ids = touching_instances(height, width, seed)
            image = nuclei_image(ids, seed)
            if channels_first:
                image = np.stack([image] * channels_first)
            # (C, H, W) as planar samples (axes SYX), as ImageJ-free writers store channels.
            extra = {"photometric": "minisblack", "planarconfig": "separate"} if channels_first else {}
            tifffile.imwrite(root / split / "images" / f"cell{n}.tif", image, **extra)
            tifffile.imwrite(root / split / "masks" / f"cell{n}.tif", ids)
    return root


def write_masks_folder(root: Path, masks: dict[str, list[np.ndarray]], suffix: str = ".png") -> Path:
    """``root/{split}/masks`` as given, with random 8-bit RGB images of the same sizes."""
    rng = np.random.default_rng(0)
    for split, arrays in masks.items():
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for n, mask in enumerate(arrays):
            pixels = rng.integers(0, 256, (*mask.shape[:2], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / "images" / f"s{n}.png")
            if suffix == ".png":
                Image.fromarray(mask).save(root / split / "masks" / f"s{n}.png")
            else:
                tifffile.imwrite(root / split / "masks" / f"s{n}{suffix}", mask)
    return root


def binary_masks(value: int = 255) -> dict[str, list[np.ndarray]]:
    """0 background and one ``value`` rectangle per mask, of the SIZES."""
    out: dict[str, list[np.ndarray]] = {}
    for split, sizes in SIZES.items():
        out[split] = []
        for height, width in sizes:
            mask = np.zeros((height, width), np.uint8)
            mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = value
            out[split].append(mask)
    return out


def index_masks(classes: int = 4, absent_from_val: int = 3, test: bool = True) -> dict[str, list[np.ndarray]]:
    """Class-index masks of the SIZES (and a test split): vertical bands of classes
    ``0..classes-1`` (``absent_from_val`` left out of val) and a 2-row band of 255 (ignored)."""
    sizes = {**SIZES, **({"test": [(40, 44)]} if test else {})}
    out: dict[str, list[np.ndarray]] = {}
    for split, split_sizes in sizes.items():
        present = [c for c in range(classes) if split != "val" or c != absent_from_val]
        out[split] = []
        for height, width in split_sizes:
            mask = (np.arange(width)[None, :] * len(present) // width).repeat(height, axis=0)
            mask = np.asarray(present, np.uint8)[mask]
            mask[height // 2: height // 2 + 2] = 255
            out[split].append(mask)
    return out
