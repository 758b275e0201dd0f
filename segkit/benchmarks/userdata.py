"""Generated data sets unlike ``shapes`` for checking segkit's defaults, the classic baselines,
and a hand-written training loop to compare segkit with.

- :func:`write_folder_dataset`: a ``data=folder`` tree of odd-sized RGB scenes, 4 classes
  (stars, crescents, blobs on a striped background), a 2-px ignore band (255) at every object
  boundary; see :mod:`segkit.benchmarks.userdata_render` for what is drawn.
- :func:`write_nuclei_dataset`: 16-bit TIFF nuclei images with 16-bit instance-label masks.
- :func:`~segkit.benchmarks.userdata_em.write_em_dataset`: 8-bit grey EM-like membrane
  images with 0/255 masks.
- :func:`otsu_scores`: Otsu thresholding on the nuclei, scored per pixel (one confusion matrix)
  and per object (:func:`object_f1`).
- :func:`~segkit.benchmarks.hand_loop.hand_loop`: a plain PyTorch U-Net loop as a user would
  write it, on any of these trees.

Command line::

    python -m segkit.benchmarks.userdata write-folder OUT [--seed 0 --train 160 --val 40 --class-colours]
    python -m segkit.benchmarks.userdata write-nuclei OUT [--seed 0 --train 24 --val 8 --size 192 176]
    python -m segkit.benchmarks.userdata write-em OUT [--seed 0 --train 24 --val 8]
    python -m segkit.benchmarks.userdata otsu ROOT [--split val]
    python -m segkit.benchmarks.userdata score ROOT PREDICTIONS [--split val]   # segkit-predict masks
    python -m segkit.benchmarks.userdata hand-loop ROOT [--seconds 240 --seed 0 --num-classes 4
                                                        --in-channels 3 --mask-type index]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from segkit.benchmarks.hand_loop import MASK_TYPES, hand_loop
from segkit.benchmarks.userdata_render import (
    FOLDER_CLASS_NAMES,
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


def _new_tree(root: Path) -> Path:
    """``root/{train,val}/{images,masks}`` made; ``root`` must be new or an empty directory."""
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise SegkitError(f"{root} exists and is not an empty directory; choose a new output directory")
    for split in _SPLITS:
        for kind in ("images", "masks"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
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
    root = _new_tree(root)
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

    root = _new_tree(root)
    height, width = size
    for split, i, rng in _split_rngs(seed, (train, val)):
        image, instances = render_nuclei(rng, height, width)
        tifffile.imwrite(root / split / "images" / f"nuclei_{i:04d}.tif", image)
        tifffile.imwrite(root / split / "masks" / f"nuclei_{i:04d}.tif", instances)
    return root


def _num_classes(root: Path, given: int | None) -> int:
    if given is not None:
        return given
    names = Path(root) / "classes.txt"
    if not names.is_file():
        raise SegkitError(f"{root} has no classes.txt; give --num-classes")
    return len(names.read_text().split())


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; prints a JSON dict (see the module docstring); errors exit 2."""
    parser = argparse.ArgumentParser(prog="python -m segkit.benchmarks.userdata", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    folder = commands.add_parser("write-folder", help="write a data=folder tree of RGB scenes")
    nuclei = commands.add_parser("write-nuclei", help="write 16-bit nuclei TIFFs with instance masks")
    em = commands.add_parser("write-em", help="write 8-bit grey EM-like membrane images with 0/255 masks")
    for sub, train, val in ((folder, 160, 40), (nuclei, 24, 8), (em, 24, 8)):
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
    loop.add_argument("--num-classes", type=int, default=None,
                      help="default: the lines of ROOT/classes.txt")
    loop.add_argument("--in-channels", type=int, default=3)
    loop.add_argument("--mask-type", choices=MASK_TYPES, default="index")
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
        elif args.command == "write-em":
            from segkit.benchmarks.userdata_em import write_em_dataset

            started = time.perf_counter()
            root = write_em_dataset(args.out, args.seed, args.train, args.val)
            result = {"root": str(root), "seconds": time.perf_counter() - started}
        elif args.command == "otsu":
            result = otsu_scores(args.root, args.split)
        elif args.command == "score":
            result = predicted_scores(args.root, args.predictions, args.split)
        else:
            result = hand_loop(args.root, args.seconds, args.seed, _num_classes(args.root, args.num_classes),
                               args.in_channels, args.mask_type)
    except (SegkitError, OSError) as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
