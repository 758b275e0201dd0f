"""Peak memory of predicting one large image, as segkit-predict does it.

Each size runs in a fresh Python process (peak resident memory, ``ru_maxrss``, only grows), which
writes a PNG of that size (smooth colour gradients with rectangles: a real photo's
compressibility, not noise's), opens it, predicts it with ``inference.mode`` windows of a
default U-Net (random weights: memory does not depend on them) and saves the mask PNG. It
reports the peak, the resident memory before the image was opened (interpreter, torch, the
model) and the time. The test image is written by the calling process, so its encoding does
not count.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class MemoryRun:
    """One prediction: ``size`` x ``size`` px; memory in MiB."""

    size: int
    mode: str
    peak_mib: float
    before_image_mib: float
    seconds: float
    windows: int


def _rss_mib() -> float:
    """Current resident memory of this process (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def write_test_image(path: Path, size: int) -> None:
    """A ``size`` x ``size`` RGB PNG of gradients and rectangles, built band by band."""
    image = Image.new("RGB", (size, size))
    rng = np.random.default_rng(0)
    columns = np.linspace(0, 255, size, dtype=np.float32)
    for top in range(0, size, 1024):
        rows = np.arange(top, min(top + 1024, size), dtype=np.float32)[:, None] * 255 / size
        band = np.stack([np.broadcast_to(columns, (len(rows), size)), np.broadcast_to(rows, (len(rows), size)),
                         (columns[None] + rows) % 256], axis=-1).astype(np.uint8)
        for _ in range(8):
            y, x = rng.integers(0, len(rows)), rng.integers(0, size)
            band[y:y + 200, x:x + 300] = rng.integers(0, 256, 3)
        image.paste(Image.fromarray(band), (0, top))
    image.save(path)


def run_one(size: int, mode: str, window: int, workdir: Path) -> MemoryRun:
    """In this process: predict a ``size`` image (call in a fresh process for a clean peak)."""
    import torch

    from segkit.inference.predict import InferenceConfig, predict_image
    from segkit.nets import UNet

    torch.manual_seed(0)
    net = UNet(num_classes=6, in_channels=3, depth=3, base_width=16).eval()  # segkit-train's default net
    source = workdir / f"image_{size}.png"
    before = _rss_mib()
    counter = {"windows": 0}
    start = time.perf_counter()
    Image.MAX_IMAGE_PIXELS = None
    image = Image.open(source)
    image.load()
    mask = predict_image(net, image, [0.5] * 3, [0.25] * 3, InferenceConfig(mode=mode, window=window),  # type: ignore[arg-type]
                         on_window=lambda: counter.__setitem__("windows", counter["windows"] + 1))
    image.close()
    Image.frombuffer("L", (size, size), mask, "raw", "L", 0, 1).save(workdir / f"mask_{size}.png")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return MemoryRun(size, mode, peak, before, seconds, counter["windows"])


def measure_predict_memory(sizes: list[int], mode: str = "slide", window: int = 512) -> list[MemoryRun]:
    """One fresh process per size; returns their measurements."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="segkit-bench-memory-") as workdir:
        for size in sizes:
            write_test_image(Path(workdir) / f"image_{size}.png", size)
            command = [sys.executable, "-m", "segkit.benchmarks.predict_memory", "--size", str(size),
                       "--mode", mode, "--window", str(window), "--workdir", workdir]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"predicting {size}x{size} failed: {result.stderr.strip().splitlines()[-1:]}")
            runs.append(MemoryRun(**json.loads(result.stdout.strip().splitlines()[-1])))
    return runs


def _main() -> None:
    parser = argparse.ArgumentParser(description="Peak memory of predicting one image (one size per process).")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--mode", default="slide")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    print(json.dumps(run_one(args.size, args.mode, args.window, args.workdir).__dict__))


if __name__ == "__main__":
    _main()
