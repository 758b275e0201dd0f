"""The hand-written PyTorch loop that segkit's defaults are compared with on users' kinds of data.

What a competent researcher writes in about 60 lines when they skip frameworks: read every pair
into memory once, scale the pixels (8-bit / 255, 16-bit by each image's 1st-99.8th
percentiles), standardise with the training set's mean and std, then train segkit's default
U-Net size (depth 3, width 16, batch norm) on random crops with flips, with AdamW at a constant
1e-3 and cross entropy, without any validation until the time is spent. The final weights
are scored on the whole validation images, one confusion matrix over the split (as segkit's
``val/mIoU``).

The data are a ``data=folder`` tree (``root/{train,val}/{images,masks}/<name>.<ext>``), PNG or
TIFF, with masks read as segkit reads them for ``data.mask_type`` ``index``, ``binary``
(non-zero = 1) or ``instances`` (the separated foreground: touching objects' shared borders
are background).

Example::

    python -m segkit.benchmarks.userdata hand-loop /tmp/nuclei --seconds 120 \\
        --num-classes 2 --in-channels 1 --mask-type instances
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segkit.benchmarks.userdata_render import IGNORE_INDEX, separated_foreground
from segkit.errors import SegkitError
from segkit.nets.unet import UNet

MASK_TYPES = ("index", "binary", "instances")
# A crop, batch and learning rate a practitioner would pick for a small U-Net on a CPU: 96-px
# crops hold a few objects of the generated sets, batch 16 keeps batch-norm statistics steady,
# and 1e-3 is AdamW's usual safe constant rate.
CROP, BATCH, LEARNING_RATE = 96, 16, 1e-3


def read_array(path: Path) -> np.ndarray:
    """A PNG/JPEG (PIL) or TIFF (tifffile) file as an array, as stored."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    return np.asarray(Image.open(path))


def scaled_image(raw: np.ndarray, in_channels: int) -> np.ndarray:
    """``(C, H, W)`` float32 in about [0, 1]: 8-bit / 255, wider types by the image's own
    1st-99.8th percentiles (what microscopists do to 16-bit images)."""
    image = raw[..., None] if raw.ndim == 2 else raw
    image = image[..., :in_channels] if image.shape[-1] >= in_channels else np.repeat(image, in_channels, -1)
    if raw.dtype == np.uint8:
        scaled = image.astype(np.float32) / 255
    else:
        low, high = np.percentile(image, (1.0, 99.8))
        scaled = (image.astype(np.float32) - low) / max(float(high - low), 1e-6)
    return np.ascontiguousarray(scaled.transpose(2, 0, 1), dtype=np.float32)


def class_mask(raw: np.ndarray, mask_type: str) -> np.ndarray:
    """int64 class indices of a mask file's array."""
    if mask_type == "binary":
        return (raw != 0).astype(np.int64)
    if mask_type == "instances":
        return separated_foreground(raw).astype(np.int64)
    return raw.astype(np.int64)


def load_split(root: Path, split: str, in_channels: int, mask_type: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every ``(image (C, H, W) float32, mask (H, W) int64)`` pair of a split, masks matched by name."""
    masks = {p.stem: p for p in (Path(root) / split / "masks").glob("*") if p.is_file()}
    pairs = []
    for path in sorted(p for p in (Path(root) / split / "images").glob("*") if p.is_file()):
        if path.stem not in masks:
            raise SegkitError(f"{path}: no mask named {path.stem}.* in {Path(root) / split / 'masks'}")
        pairs.append((scaled_image(read_array(path), in_channels), class_mask(read_array(masks[path.stem]), mask_type)))
    if not pairs:
        raise SegkitError(f"{Path(root) / split / 'images'}: no images; write a data set with segkit.benchmarks.userdata")
    return pairs


def hand_loop(root: Path, seconds: float = 240, seed: int = 0, num_classes: int = 4, in_channels: int = 3,
              mask_type: str = "index") -> dict[str, Any]:
    """Train for ``seconds`` (after loading) and return ``{"val_mIoU", "per_class_IoU", "steps",
    "seconds"}``, the scores of the final weights on the whole validation images.

    Example:
        >>> import tempfile
        >>> from segkit.benchmarks.userdata import write_folder_dataset
        >>> root = write_folder_dataset(Path(tempfile.mkdtemp()) / "s", train=2, val=1)
        >>> result = hand_loop(root, seconds=0)  # one step
        >>> 0 <= result["val_mIoU"] <= 1 and result["steps"] >= 1
        True
    """
    if mask_type not in MASK_TYPES:
        raise SegkitError(f"mask_type={mask_type!r} is not one of {', '.join(MASK_TYPES)}")
    train, val = (load_split(root, split, in_channels, mask_type) for split in ("train", "val"))
    pixels = np.concatenate([image.reshape(in_channels, -1) for image, _ in train], axis=1)
    mean, std = pixels.mean(axis=1, dtype=np.float32), pixels.std(axis=1, dtype=np.float32) + np.float32(1e-6)
    standardise = [(torch.from_numpy((image - mean[:, None, None]) / std[:, None, None]), torch.from_numpy(mask))
                   for image, mask in train]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = UNet(num_classes, in_channels=in_channels, depth=3, base_width=16, batch_norm=True)
    net = net.to(memory_format=torch.channels_last)  # faster convolutions on CPU; a good loop uses it
    optimizer = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE)

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = standardise[int(rng.integers(len(standardise)))]
        pad_h, pad_w = max(0, CROP - image.shape[1]), max(0, CROP - image.shape[2])
        image = F.pad(image, (0, pad_w, 0, pad_h))
        mask = F.pad(mask, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        y, x = int(rng.integers(mask.shape[0] - CROP + 1)), int(rng.integers(mask.shape[1] - CROP + 1))
        image, mask = image[:, y:y + CROP, x:x + CROP], mask[y:y + CROP, x:x + CROP]
        for dim in (-1, -2):
            if rng.random() < 0.5:
                image, mask = image.flip(dim), mask.flip(dim)
        return image, mask

    net.train()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps == 0:
        images, masks = (torch.stack(t) for t in zip(*(sample() for _ in range(BATCH))))
        loss = F.cross_entropy(net(images.contiguous(memory_format=torch.channels_last)), masks,
                               ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    train_seconds = time.perf_counter() - start

    net.eval()
    hist = torch.zeros(num_classes * num_classes, dtype=torch.int64)
    with torch.no_grad():
        for image, mask in val:
            batch = torch.from_numpy((image - mean[:, None, None]) / std[:, None, None])[None]
            pred = net(batch).argmax(1)[0]
            target = torch.from_numpy(mask)
            valid = (target >= 0) & (target < num_classes)
            hist += torch.bincount(target[valid] * num_classes + pred[valid], minlength=num_classes**2)
    hist = hist.reshape(num_classes, num_classes).double()
    iou = hist.diagonal() / (hist.sum(0) + hist.sum(1) - hist.diagonal())
    return {"val_mIoU": float(iou.nanmean()), "per_class_IoU": [float(v) for v in iou],
            "steps": steps, "seconds": train_seconds}
