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

    python -m segkit.benchmarks.userdata write-folder OUT [--seed 0 --train 160 --val 40]
    python -m segkit.benchmarks.userdata write-nuclei OUT [--seed 0 --train 24 --val 8 --size 192 176]
    python -m segkit.benchmarks.userdata otsu ROOT [--split val]
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
from scipy import ndimage

from segkit.benchmarks.userdata_render import (
    FOLDER_CLASS_NAMES,
    IGNORE_INDEX,
    render_folder_scene,
    render_nuclei,
    separated_foreground,
)
from segkit.errors import SegkitError
from segkit.nets.unet import UNet

__all__ = ["write_folder_dataset", "write_nuclei_dataset", "otsu_threshold", "object_f1", "otsu_scores",
           "hand_loop", "separated_foreground", "main"]

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


def write_folder_dataset(root: Path, seed: int = 0, train: int = 160, val: int = 40) -> Path:
    """Write ``root/{train,val}/{images,masks}/<name>.png`` and ``root/classes.txt``; returns root.

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
        image, mask = render_folder_scene(rng)
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


def otsu_threshold(image: np.ndarray, bins: int = 1024) -> float:
    """Otsu's threshold (maximal between-class variance) from a ``bins``-bin histogram:
    the lower edge of the first foreground bin, so foreground is ``image >= threshold``.

    Example:
        >>> 120 < otsu_threshold(np.array([100, 110, 120, 5000, 5100, 5200], np.uint16)) <= 5000
        True
    """
    counts, edges = np.histogram(image, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1].astype(np.float64)
    w1 = counts.sum() - w0
    m0 = np.cumsum(counts * centres)[:-1] / np.maximum(w0, 1)
    m1 = ((counts * centres).sum() - np.cumsum(counts * centres)[:-1]) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(between.argmax()) + 1])


def object_f1(pred_fg: np.ndarray, instances: np.ndarray) -> dict[str, Any]:
    """Object-level scores: 4-connected components of ``pred_fg`` matched to the instances of
    ``instances`` (0 = background) at IoU > 0.5, a one-to-one matching by construction.

    Returns ``precision``, ``recall``, ``f1`` and the counts ``matched``, ``predicted``, ``true``.

    Example:
        >>> inst = np.array([[1, 1, 0, 2, 2]])
        >>> object_f1(inst > 0, inst)["f1"], object_f1(np.ones((1, 5), bool), inst)["f1"]
        (1.0, 0.0)
    """
    pred, n_pred = ndimage.label(pred_fg)
    true_ids = np.unique(instances[instances > 0])
    n_true = int(true_ids.size)
    matched = 0
    if n_pred and n_true:
        lookup = np.zeros(int(instances.max()) + 1, np.int64)
        lookup[true_ids] = np.arange(1, n_true + 1)
        true = lookup[instances]
        joint = np.bincount((pred * (n_true + 1) + true).ravel(), minlength=(n_pred + 1) * (n_true + 1))
        inter = joint.reshape(n_pred + 1, n_true + 1)[1:, 1:]
        area_pred = np.bincount(pred.ravel(), minlength=n_pred + 1)[1:]
        area_true = np.bincount(true.ravel(), minlength=n_true + 1)[1:]
        iou = inter / (area_pred[:, None] + area_true[None, :] - inter)
        matched = int((iou > 0.5).sum())
    return _f1(matched, n_pred, n_true)


def _f1(matched: int, predicted: int, true: int) -> dict[str, Any]:
    precision = matched / predicted if predicted else float(true == 0)
    recall = matched / true if true else 1.0
    f1 = 2 * matched / (predicted + true) if predicted + true else 1.0
    return {"precision": precision, "recall": recall, "f1": f1, "matched": matched, "predicted": predicted, "true": true}


def otsu_scores(root: Path, split: str = "val") -> dict[str, Any]:
    """Otsu per image of ``root/split`` (a :func:`write_nuclei_dataset` tree) against the
    separated foreground (touching instances' border pixels are background, as segkit labels
    them): ``iou_background``, ``iou_foreground``, ``mIoU`` from one confusion matrix over the
    split, and object ``precision``/``recall``/``f1`` from the pooled counts of :func:`object_f1`.

    Example:
        >>> import tempfile
        >>> root = write_nuclei_dataset(Path(tempfile.mkdtemp()) / "n", train=0, val=1, size=(64, 64))
        >>> 0 <= otsu_scores(root)["mIoU"] <= 1
        True
    """
    import tifffile

    images = sorted((Path(root) / split / "images").glob("*.tif"))
    if not images:
        raise SegkitError(f"{Path(root) / split / 'images'}: no .tif images; write some with write-nuclei")
    hist = np.zeros((2, 2), np.int64)
    counts = np.zeros(3, np.int64)
    for path in images:
        image = tifffile.imread(path)
        instances = tifffile.imread(path.parent.parent / "masks" / path.name)
        pred = image >= otsu_threshold(image)
        truth = separated_foreground(instances)
        hist += np.bincount(truth.ravel() * 2 + pred.ravel(), minlength=4).reshape(2, 2)
        scores = object_f1(pred, instances)
        counts += [scores["matched"], scores["predicted"], scores["true"]]
    iou = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    return {"images": len(images), "iou_background": float(iou[0]), "iou_foreground": float(iou[1]),
            "mIoU": float(iou.mean()), **_f1(*(int(c) for c in counts))}


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
    nuclei.add_argument("--size", type=int, nargs=2, default=(192, 176), metavar=("H", "W"))
    otsu = commands.add_parser("otsu", help="Otsu baseline scores on a nuclei tree")
    otsu.add_argument("root", type=Path)
    otsu.add_argument("--split", default="val")
    loop = commands.add_parser("hand-loop", help="train a plain PyTorch U-Net loop on a folder tree")
    loop.add_argument("root", type=Path)
    loop.add_argument("--seconds", type=float, default=240)
    loop.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.command == "write-folder":
            started = time.perf_counter()
            root = write_folder_dataset(args.out, args.seed, args.train, args.val)
            result: dict[str, object] = {"root": str(root), "seconds": time.perf_counter() - started}
        elif args.command == "write-nuclei":
            started = time.perf_counter()
            root = write_nuclei_dataset(args.out, args.seed, args.train, args.val, tuple(args.size))
            result = {"root": str(root), "seconds": time.perf_counter() - started}
        elif args.command == "otsu":
            result = otsu_scores(args.root, args.split)
        else:
            result = hand_loop(args.root, args.seconds, args.seed)
    except (SegkitError, OSError) as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
