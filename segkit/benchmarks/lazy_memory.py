"""Peak memory of ``segkit-predict`` on slides larger than memory should allow: tiled 16-bit TIFF
and OME-Zarr inputs of several sizes, predicted by the same model, through the command as a user
launches it (a subprocess, output to a file).

If the input is read window by window and the label image written band by band, peak resident
memory barely grows with the image: the difference between a 16,384 x 16,384 slide (512 MiB of
16-bit pixels) and a 4,096 x 4,096 one is the benchmark's figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tifffile

TILE = 512


@dataclass(frozen=True)
class LargeRun:
    """One ``segkit-predict`` run on a ``size`` x ``size`` ``kind`` (tiff or zarr) input."""

    kind: str
    size: int
    input_mib: float
    peak_rss_mib: float
    seconds: float
    labels_ok: bool


def _tile_rows(size: int, top: int, rows: int) -> np.ndarray:
    """Rows ``[top, top + rows)`` of a deterministic 16-bit slide: dim background with bright discs."""
    yy, xx = np.mgrid[top:top + rows, 0:size]
    cells = (np.sin(yy / 9.0) * np.sin(xx / 11.0) > 0.6).astype(np.uint16)
    return (800 + 50 * ((yy * 31 + xx * 17) % 7) + 9000 * cells).astype(np.uint16)


def write_large_tiff(path: Path, size: int) -> None:
    """A ``size`` x ``size`` tiled, uncompressed 16-bit TIFF, written a tile row at a time."""
    def tiles() -> Iterator[np.ndarray]:
        for top in range(0, size, TILE):
            rows = np.zeros((TILE, -(-size // TILE) * TILE), np.uint16)
            height = min(TILE, size - top)
            rows[:height, :size] = _tile_rows(size, top, height)
            for left in range(0, rows.shape[1], TILE):
                yield rows[:, left:left + TILE]

    tifffile.imwrite(path, tiles(), shape=(size, size), dtype=np.uint16, tile=(TILE, TILE), photometric="minisblack")


def write_large_zarr(path: Path, size: int) -> None:
    """The same slide as an OME-Zarr (axes y, x; chunks of ``TILE``), a chunk row at a time."""
    import zarr

    group = zarr.open_group(str(path), mode="w")
    create = getattr(group, "create_array", None) or group.create_dataset  # zarr 3 / zarr 2
    array = create("0", shape=(size, size), chunks=(TILE, TILE), dtype=np.uint16)
    for top in range(0, size, TILE):
        height = min(TILE, size - top)
        array[top:top + height] = _tile_rows(size, top, height)
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                                   "datasets": [{"path": "0"}]}]


def make_checkpoint(path: Path) -> Path:
    """A 1-channel, 2-class U-Net (depth 1, width 4: fast on a CPU; random weights: memory does not depend on them)."""
    import lightning as L
    import torch

    from segkit.data.spec import DataSpec
    from segkit.models import UNetModule

    torch.manual_seed(0)
    spec = DataSpec.of(2, None, 1, mean=[0.5], std=[0.25],
                       intensity={"mode": "percentile", "percentiles": [1.0, 99.8], "value_range": None})
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(UNetModule(num_classes=2, in_channels=1, depth=1, base_width=4, data_spec=spec))
    trainer.save_checkpoint(path)
    return path


# Runs the command as a child and prints the child's peak resident memory (ru_maxrss, KiB on Linux).
_LAUNCHER = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)")


def launch(script: str, arguments: list[str], log: Path) -> tuple[float, float]:
    """Run the console ``script`` beside this interpreter with ``arguments`` (stderr to ``log``),
    as a child of a fresh launcher process; its ``(peak resident MiB, seconds)``."""
    command = [str(Path(sys.executable).with_name(script)), *arguments]
    start = time.perf_counter()
    with log.open("w") as out:
        launched = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], stdout=subprocess.PIPE, stderr=out,
                                  text=True, check=False)
    seconds = time.perf_counter() - start
    peak_kib, code = (int(word) for word in launched.stdout.split()[-2:])
    if code != 0:
        raise RuntimeError(f"{script} failed; see {log}")
    return peak_kib / 1024, seconds


def predict_large(kind: str, size: int, workdir: Path, checkpoint: Path, window: int = 512) -> LargeRun:
    """Write the input, run ``segkit-predict`` on it (output to a log file), check the labels."""
    source = workdir / "inputs" / (f"slide_{size}.tif" if kind == "tiff" else f"slide_{size}.ome.zarr")
    source.parent.mkdir(exist_ok=True)
    (write_large_tiff if kind == "tiff" else write_large_zarr)(source, size)
    output = workdir / f"out_{kind}_{size}"
    peak_mib, seconds = launch("segkit-predict", [
        f"ckpt_path={checkpoint}", f"input={source}", f"output={output}", "progress_bar=false",
        f"inference.window={window}", "device=cpu", f"hydra.run.dir={workdir / 'hydra' / f'{kind}_{size}'}"],
        workdir / f"predict_{kind}_{size}.log")
    from segkit.data.files.lazy import open_planes

    (labels,) = open_planes(output / (f"slide_{size}.tif" if kind == "tiff" else f"slide_{size}.zarr"))
    ok = labels.shape[:2] == (size, size) and int(labels[size - 1:size, :].max()) <= 1
    labels.close()
    return LargeRun(kind, size, size * size * 2 / 2**20, peak_mib, seconds, ok)


def measure_large_predictions(sizes: list[int], kinds: list[str], workdir: Path, window: int = 512) -> list[LargeRun]:
    """Every kind at every size, one ``segkit-predict`` process each."""
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = make_checkpoint(workdir / "model.ckpt")
    runs = []
    for kind in kinds:
        for size in sizes:
            runs.append(predict_large(kind, size, workdir, checkpoint, window))
            for leftover in (workdir / "inputs").glob(f"slide_{size}*"):  # free the disk before the next input
                subprocess.run(["rm", "-rf", str(leftover)], check=False)
    return runs


@dataclass(frozen=True)
class LargeTraining:
    """``segkit-train`` on ``count`` training pairs of ``size`` x ``size`` (16-bit tiled TIFFs)."""

    size: int
    count: int
    image_mib: float
    peak_rss_mib: float
    seconds: float


def _write_pair(root: Path, name: str, size: int) -> None:
    write_large_tiff(root / "images" / f"{name}.tif", size)
    def mask_tiles() -> Iterator[np.ndarray]:
        for top in range(0, size, TILE):
            rows = np.zeros((TILE, -(-size // TILE) * TILE), np.uint8)
            height = min(TILE, size - top)
            rows[:height, :size] = _tile_rows(size, top, height) > 5000
            for left in range(0, rows.shape[1], TILE):
                yield rows[:, left:left + TILE]

    tifffile.imwrite(root / "masks" / f"{name}.tif", mask_tiles(), shape=(size, size), dtype=np.uint8,
                     tile=(TILE, TILE), photometric="minisblack")


def train_large(workdir: Path, size: int, count: int = 3, steps: int = 30) -> LargeTraining:
    """Write ``count`` training pairs of ``size`` px and two small validation pairs, then run
    ``segkit-train data=folder`` for ``steps`` steps (a subprocess, output to a log file)."""
    root = workdir / f"folder_{size}"
    for split, side, number in (("train", size, count), ("val", 256, 2)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for index in range(number):
            _write_pair(root / split, f"{split}{index}", side)
    peak_mib, seconds = launch("segkit-train", [
        "data=folder", f"data.root={root}", "data.num_classes=2", "data.in_channels=1", "data.mask_type=binary",
        f"trainer.max_steps={steps}", "++trainer.limit_val_batches=0", "test=false", "trainer.accelerator=cpu",
        f"hydra.run.dir={workdir / 'hydra' / f'train_{size}'}"], workdir / f"train_{size}.log")
    subprocess.run(["rm", "-rf", str(root)], check=False)
    return LargeTraining(size, count, size * size * 2 / 2**20, peak_mib, seconds)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--kinds", nargs="+", default=["tiff", "zarr"])
    parser.add_argument("--train", action="store_true", help="segkit-train on 3 pairs of each size instead")
    args = parser.parse_args()
    if args.train:
        args.workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps([asdict(train_large(args.workdir, size)) for size in args.sizes], indent=1))
    else:
        print(json.dumps([asdict(run) for run in measure_large_predictions(args.sizes, args.kinds, args.workdir)], indent=1))
