"""How segkit's defaults do on data they were not tuned to: two generated data sets, a classic
baseline and a hand-written training loop to compare segkit with.

- :func:`write_folder_dataset`: a ``data=folder`` tree of odd-sized RGB scenes, 4 classes
  (stars, crescents, blobs on a striped background), a 2-px ignore band (255) at every object
  boundary; see :mod:`segkit.benchmarks.userdata_render` for what is drawn.
- :func:`write_nuclei_dataset`: 16-bit TIFF nuclei images with 16-bit instance-label masks.
- :func:`otsu_scores`: Otsu thresholding on the nuclei, scored per pixel (one confusion matrix)
  and per object (:func:`object_f1`).
- :func:`hand_loop`: a plain PyTorch U-Net loop as a user would write it, on a folder tree.

Command line::

    python -m segkit.benchmarks.userdata write-folder OUT [--seed 0 --train 160 --val 40 --class-colours]
    python -m segkit.benchmarks.userdata write-nuclei OUT [--seed 0 --train 24 --val 8 --size 192 176]
    python -m segkit.benchmarks.userdata otsu ROOT [--split val]
    python -m segkit.benchmarks.userdata score ROOT PREDICTIONS [--split val]   # segkit-predict masks
    python -m segkit.benchmarks.userdata hand-loop ROOT [--seconds 240 --seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segkit.benchmarks.userdata_render import (
    FOLDER_CLASS_NAMES,
    IGNORE_INDEX,
    render_folder_scene,
    render_nuclei,
    separated_foreground,
)
from segkit.benchmarks.userdata_scores import (
    object_f1,
    otsu_scores,
    otsu_threshold,
    predicted_scores,
)
from segkit.errors import SegkitError
from segkit.nets.unet import UNet

__all__ = [
    "hand_loop",
    "main",
    "object_f1",
    "otsu_scores",
    "otsu_threshold",
    "predicted_scores",
    "separated_foreground",
    "write_folder_dataset",
    "write_nuclei_dataset",
]

_SPLITS = ("train", "val")


def _empty_root(root: Path) -> Path:
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise SegkitError(f"{root} exists and is not an empty directory; choose a new output directory")
    return root


def _split_rngs(seed: int, counts: Sequence[int]) -> list[tuple[str, int, np.random.Generator]]:
    """One generator per image, keyed by (seed, split, index): a larger set extends a smaller one."""
    return [(split, i, np.random.default_rng([seed, s, i]))
            for s, (split, count) in enumerate(zip(_SPLITS, counts)) for i in range(count)]


def write_folder_dataset(root: Path, seed: int = 0, train: int = 160, val: int = 40,
                         class_colours: bool = False) -> Path:
    """Write ``root/{train,val}/{images,masks}/<name>.png`` and ``root/classes.txt``; returns root.
    ``class_colours``: each class keeps a hue family (else every object's colours are random).

    Train with ``segkit-train data=folder data.root=ROOT data.num_classes=4``.

    Example:
        >>> import tempfile
        >>> root = write_folder_dataset(Path(tempfile.mkdtemp()) / "scenes", train=2, val=1)
        >>> sorted(p.name for p in (root / "train" / "masks").iterdir())
        ['scene_0000.png', 'scene_0001.png']
        >>> (root / "classes.txt").read_text().split()
        ['background', 'star', 'crescent', 'blob']
    """
    root = _empty_root(root)
    for split in _SPLITS:
        for kind in ("images", "masks"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
    for split, i, rng in _split_rngs(seed, (train, val)):
        image, mask = render_folder_scene(rng, class_colours)
        Image.fromarray(image).save(root / split / "images" / f"scene_{i:04d}.png")
        Image.fromarray(mask).save(root / split / "masks" / f"scene_{i:04d}.png")
    (root / "classes.txt").write_text("\n".join(FOLDER_CLASS_NAMES) + "\n")
    return root


def write_nuclei_dataset(root: Path, seed: int = 0, train: int = 24, val: int = 8,
                         size: tuple[int, int] = (192, 176)) -> Path:
    """Write 16-bit ``root/{train,val}/images/<name>.tif`` and instance-label
    ``root/{train,val}/masks/<name>.tif`` (uint16, 0 = background, 1..N); returns root.

    For segkit: ``data=folder data.root=ROOT data.num_classes=2 data.mask_type=instances
    data.in_channels=1``.

    Example:
        >>> import tempfile, tifffile
        >>> root = write_nuclei_dataset(Path(tempfile.mkdtemp()) / "nuclei", train=1, val=1, size=(64, 48))
        >>> image = tifffile.imread(root / "val" / "images" / "nuclei_0000.tif")
        >>> image.dtype, image.shape
        (dtype('uint16'), (64, 48))
    """
    import tifffile

    root = _empty_root(root)
    for split in _SPLITS:
        for kind in ("images", "masks"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
    height, width = size
    for split, i, rng in _split_rngs(seed, (train, val)):
        image, instances = render_nuclei(rng, height, width)
        tifffile.imwrite(root / split / "images" / f"nuclei_{i:04d}.tif", image)
        tifffile.imwrite(root / split / "masks" / f"nuclei_{i:04d}.tif", instances)
    return root


def hand_loop(root: Path, seconds: float = 240, seed: int = 0) -> dict[str, Any]:
    """A plain PyTorch loop on a folder tree: segkit's default U-Net size (depth 3, width 16,
    batch norm), random 80-px crops (ignore-padded) with flips, batch 16, AdamW 1e-3, cross
    entropy; trains for ``seconds`` and returns the mIoU on whole val images.

    Example:
        >>> import tempfile
        >>> root = write_folder_dataset(Path(tempfile.mkdtemp()) / "s", train=2, val=1)
        >>> result = hand_loop(root, seconds=0)  # one step
        >>> 0 <= result["val_mIoU"] <= 1 and result["steps"] >= 1
        True
    """
    def load(split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pairs = []
        for path in sorted((Path(root) / split / "images").glob("*.png")):
            image = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
            mask = np.asarray(Image.open(path.parent.parent / "masks" / path.name), np.int64)
            pairs.append((torch.from_numpy((image - 0.5) / 0.25).permute(2, 0, 1), torch.from_numpy(mask)))
        return pairs

    train, val = load("train"), load("val")
    if not train or not val:
        raise SegkitError(f"{root}: needs PNG images in train/images and val/images; write some with write-folder")
    names = Path(root) / "classes.txt"
    num_classes = (len(names.read_text().split()) if names.is_file()
                   else 1 + max(int(m[m != IGNORE_INDEX].max()) for _, m in train + val))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = UNet(num_classes, in_channels=3, depth=3, base_width=16, batch_norm=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    crop, steps, start = 80, 0, time.perf_counter()

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = train[int(rng.integers(len(train)))]
        pad_h, pad_w = max(0, crop - image.shape[1]), max(0, crop - image.shape[2])
        image = F.pad(image, (0, pad_w, 0, pad_h))
        mask = F.pad(mask, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        y, x = int(rng.integers(mask.shape[0] - crop + 1)), int(rng.integers(mask.shape[1] - crop + 1))
        image, mask = image[:, y:y + crop, x:x + crop], mask[y:y + crop, x:x + crop]
        for dim in (-1, -2):
            if rng.random() < 0.5:
                image, mask = image.flip(dim), mask.flip(dim)
        return image, mask

    net.train()
    while time.perf_counter() - start < seconds or steps == 0:
        images, masks = (torch.stack(t) for t in zip(*(sample() for _ in range(16))))
        loss = F.cross_entropy(net(images), masks, ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    train_seconds = time.perf_counter() - start

    net.eval()
    hist = torch.zeros(num_classes * num_classes, dtype=torch.int64)
    with torch.no_grad():
        for image, mask in val:
            pred = net(image[None]).argmax(1)[0]
            valid = mask != IGNORE_INDEX
            hist += torch.bincount(mask[valid] * num_classes + pred[valid], minlength=num_classes**2)
    hist = hist.reshape(num_classes, num_classes).double()
    iou = hist.diagonal() / (hist.sum(0) + hist.sum(1) - hist.diagonal())
    return {"val_mIoU": float(iou.nanmean()), "per_class_IoU": [float(v) for v in iou],
            "steps": steps, "seconds": train_seconds}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; prints a JSON dict (see the module docstring); errors exit 2."""
    parser = argparse.ArgumentParser(prog="python -m segkit.benchmarks.userdata", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    folder = commands.add_parser("write-folder", help="write a data=folder tree of RGB scenes")
    nuclei = commands.add_parser("write-nuclei", help="write 16-bit nuclei TIFFs with instance masks")
    for sub, train, val in ((folder, 160, 40), (nuclei, 24, 8)):
        sub.add_argument("out", type=Path)
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--train", type=int, default=train)
        sub.add_argument("--val", type=int, default=val)
    folder.add_argument("--class-colours", action="store_true",
                        help="each class keeps a hue family (default: random colours per object)")
    nuclei.add_argument("--size", type=int, nargs=2, default=(192, 176), metavar=("H", "W"))
    otsu = commands.add_parser("otsu", help="Otsu baseline scores on a nuclei tree")
    otsu.add_argument("root", type=Path)
    otsu.add_argument("--split", default="val")
    score = commands.add_parser("score", help="score segkit-predict masks on a nuclei tree")
    score.add_argument("root", type=Path)
    score.add_argument("predictions", type=Path)
    score.add_argument("--split", default="val")
    loop = commands.add_parser("hand-loop", help="train a plain PyTorch U-Net loop on a folder tree")
    loop.add_argument("root", type=Path)
    loop.add_argument("--seconds", type=float, default=240)
    loop.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.command == "write-folder":
            started = time.perf_counter()
            root = write_folder_dataset(args.out, args.seed, args.train, args.val, args.class_colours)
            result: dict[str, object] = {"root": str(root), "seconds": time.perf_counter() - started}
        elif args.command == "write-nuclei":
            started = time.perf_counter()
            root = write_nuclei_dataset(args.out, args.seed, args.train, args.val, tuple(args.size))
            result = {"root": str(root), "seconds": time.perf_counter() - started}
        elif args.command == "otsu":
            result = otsu_scores(args.root, args.split)
        elif args.command == "score":
            result = predicted_scores(args.root, args.predictions, args.split)
        else:
            result = hand_loop(args.root, args.seconds, args.seed)
    except (SegkitError, OSError) as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
