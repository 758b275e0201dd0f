"""The patch CNN's dense form against naive window-by-window scanning (N4, one image).

*Naive*: the 95 x 95 window around each pixel, cut from the mirror-padded image and classified
in batches (:func:`segkit.nets.naive_window_scores`). Scanning all 262,144 windows of a
512 x 512 image takes tens of minutes on a CPU, so a random sample of pixels is timed and the
time extrapolated linearly (windows are independent and equally costly). *Dense*: one pass of
:func:`segkit.nets.densify`'s net over the whole image. Efficiency is the dense pass's
multiply-accumulates per second (those it actually performs, border context included) as a
fraction of a large fp32 matrix product's, measured in the same run: the machine's practical
limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from segkit.nets.densify import DenseWindowNet, _SharedConv, densify
from segkit.nets.patch_cnn import PatchCNN, macs_per_window
from segkit.nets.window_scan import naive_window_scores


@dataclass
class DenseResult:
    """Seconds and operation counts of one benchmark run."""

    size: int
    dense_s: list[float]
    dilated_s: float
    naive_sample_s: float
    sampled_pixels: int
    naive_macs_per_pixel: int
    dense_macs: int
    matmul_macs_per_s: float
    max_abs_difference: float

    @property
    def naive_s(self) -> float:
        """Naive time for every pixel, extrapolated from the sample."""
        return self.naive_sample_s * self.size * self.size / self.sampled_pixels

    @property
    def speedup(self) -> float:
        return self.naive_s / min(self.dense_s)

    @property
    def dense_macs_per_s(self) -> float:
        return self.dense_macs / min(self.dense_s)

    @property
    def efficiency(self) -> float:
        """Dense MAC/s over the matrix product's MAC/s."""
        return self.dense_macs_per_s / self.matmul_macs_per_s

    @property
    def naive_efficiency(self) -> float:
        return self.naive_macs_per_pixel * self.sampled_pixels / self.naive_sample_s / self.matmul_macs_per_s


def _best(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def matmul_macs_per_s(n: int = 2048, repeats: int = 5) -> float:
    """Multiply-accumulates per second of an ``n x n`` fp32 matrix product (best of ``repeats``).

    Example:
        >>> matmul_macs_per_s(64, repeats=1) > 0
        True
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    return n**3 / min(_best(lambda: a @ b, repeats))


def count_dense_macs(dense: DenseWindowNet, image: torch.Tensor) -> int:
    """Multiply-accumulates the dense pass performs on ``image`` (its convolutions)."""
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal total
        out_channels, in_channels, kh, kw = module.shape
        total += output.numel() * in_channels * kh * kw

    handles = [m.register_forward_hook(count) for m in dense.modules() if isinstance(m, _SharedConv)]
    try:
        dense(image)
    finally:
        for handle in handles:
            handle.remove()
    return total


@torch.inference_mode()
def measure_dense_patch(size: int = 512, sampled_pixels: int = 1024, repeats: int = 5, seed: int = 0,
                        progress: Callable[[str], None] | None = None) -> DenseResult:
    """Time N4 densely and naively on one random ``size x size`` grey image."""
    torch.manual_seed(seed)
    net = PatchCNN(num_classes=2, in_channels=1, preset="n4").eval()
    image = torch.rand(1, 1, size, size)
    say = progress or (lambda text: None)
    say("matrix product")
    matmul = matmul_macs_per_s()
    dense = densify(net)
    say("dense pass (fragments)")
    macs = count_dense_macs(dense, image)  # also the warm-up
    dense_s = _best(lambda: dense(image), repeats)
    say("dense pass (dilated kernels)")
    dilated = densify(net, strategy="dilated")
    dilated(image)
    dilated_s = min(_best(lambda: dilated(image), max(1, repeats // 2)))
    say(f"naive scan of {sampled_pixels} random pixels")
    pixels = torch.stack([torch.randint(size, (sampled_pixels,)), torch.randint(size, (sampled_pixels,))], dim=1)
    naive_window_scores(net, image[0], pixels=pixels[:64])  # warm-up
    start = time.perf_counter()
    naive = naive_window_scores(net, image[0], pixels=pixels)
    naive_sample_s = time.perf_counter() - start
    scores = dense(image)[0][:, pixels[:, 0], pixels[:, 1]].T
    difference = (scores - naive).abs().max().item()
    return DenseResult(size, dense_s, dilated_s, naive_sample_s, sampled_pixels,
                       macs_per_window(net, net.window, 1), macs, matmul, difference)
