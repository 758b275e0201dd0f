"""FCN-8s latency: segkit's net against torchfcn's ``FCN8s``, the reference PyTorch port.

Both nets get the same weights (checked: same output) and the same input, one image at a time
as the reference recipe trains. *Forward* is an inference pass (``torch.inference_mode``, eval
mode); a *training step* is forward + summed cross-entropy + backward + an SGD step (momentum
0.99). In both nets the bilinear upsamplings are frozen, as the reference and torchfcn's
trainer keep them. Variants of segkit's net: fp32, channels_last, and bf16 autocast where the
device computes bf16 natively (a CPU without AVX512-BF16/AMX emulates it, many times slower,
so it is skipped there and the reason reported). Runs alternate between the nets so that
drift in machine load hits both alike (in alternating order); each variant's best and median are reported.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from segkit.errors import SegkitError
from segkit.nets import FCN8s

# torchfcn's layer names for segkit's FCN-8s parameters (same order as VGG16's convs).
_VGG_CONV_NAMES = [f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for i in range(1, n + 1)]
_VGG_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
_HEAD_NAMES = ["score_fr", "score_pool3", "score_pool4", "upscore2", "upscore_pool4", "upscore8"]
INSTALL_HINT = "pip install --no-deps torchfcn (its `fcn` dependency pulls in chainer; a stand-in replaces it)"


def load_torchfcn_fcn8s() -> type[nn.Module]:
    """torchfcn's ``FCN8s`` class.

    torchfcn imports the ``fcn`` package (which needs chainer) only to download its Caffe
    weights, and its package ``__init__`` imports a trainer needing pytz, scikit-image and
    distutils. Where those are missing, ``torchfcn.models`` is imported on its own with a
    stand-in ``fcn`` module whose download raises.
    """
    try:
        return importlib.import_module("torchfcn.models").FCN8s
    except ImportError:
        pass
    spec = importlib.util.find_spec("torchfcn")
    if spec is None or not spec.submodule_search_locations:
        raise SegkitError(f"the fcn benchmark compares against torchfcn, which is not installed: {INSTALL_HINT}")
    if importlib.util.find_spec("fcn") is None:
        stand_in = types.ModuleType("fcn")
        stand_in.data = types.SimpleNamespace(cached_download=_no_download)  # type: ignore[attr-defined]
        sys.modules["fcn"] = stand_in
    package = types.ModuleType("torchfcn")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["torchfcn"] = package
    return importlib.import_module("torchfcn.models.fcn8s").FCN8s


def _no_download(*args: object, **kwargs: object) -> None:
    raise RuntimeError("the benchmark's stand-in for the `fcn` package cannot download weights")


def torchfcn_state_dict(net: FCN8s) -> dict[str, torch.Tensor]:
    """segkit's FCN-8s weights under torchfcn's parameter names.

    Example:
        >>> state = torchfcn_state_dict(FCN8s(num_classes=21))
        >>> tuple(state["fc6.weight"].shape), tuple(state["upscore8.weight"].shape)
        ((4096, 512, 7, 7), (21, 21, 16, 16))
    """
    ours = net.state_dict()
    state: dict[str, torch.Tensor] = {}
    for name, index in zip(_VGG_CONV_NAMES, _VGG_CONV_INDICES):
        state[f"{name}.weight"], state[f"{name}.bias"] = ours[f"features.{index}.weight"], ours[f"features.{index}.bias"]
    for name, key in (("fc6", "fc.0"), ("fc7", "fc.3"), *((n, n) for n in _HEAD_NAMES)):
        state[f"{name}.weight"] = ours[f"{key}.weight"]
        if f"{key}.bias" in ours:
            state[f"{name}.bias"] = ours[f"{key}.bias"]
    return state


def matched_pair(num_classes: int = 21, seed: int = 0) -> tuple[FCN8s, nn.Module]:
    """segkit's FCN-8s with random non-zero weights, and torchfcn's with the same weights."""
    torch.manual_seed(seed)
    ours = FCN8s(num_classes)
    with torch.no_grad():  # non-zero score layers, so the skips are exercised
        for layer in (ours.score_fr, ours.score_pool4, ours.score_pool3):
            nn.init.normal_(layer.weight, std=0.01)
    reference = load_torchfcn_fcn8s()(n_class=num_classes)
    reference.load_state_dict(torchfcn_state_dict(ours))
    for module in reference.modules():
        if isinstance(module, nn.ConvTranspose2d):
            module.weight.requires_grad_(False)
    return ours, reference


def bf16_support(device: torch.device) -> str | None:
    """``None`` where ``device`` computes bf16 natively, else why not."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16")):
        return None
    return "this CPU has no AVX512-BF16/AMX: bf16 would be emulated (measured ~17x slower), skipped"


@dataclass
class Variant:
    """One timed configuration: a net, a memory format, an autocast dtype."""

    name: str
    net: nn.Module
    channels_last: bool = False
    bf16: bool = False
    forward_s: list[float] = field(default_factory=list)
    train_step_s: list[float] = field(default_factory=list)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _steps(variant: Variant, image: torch.Tensor, target: torch.Tensor, device: torch.device) -> tuple[Callable, Callable]:
    net = variant.net
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-10, momentum=0.99)

    def forward() -> None:
        net.eval()
        with torch.inference_mode(), variant.autocast(device):
            net(image)

    def train_step() -> None:
        net.train()
        optimizer.zero_grad(set_to_none=True)
        with variant.autocast(device):
            loss = F.cross_entropy(net(image), target, ignore_index=255, reduction="sum")
        loss.backward()
        optimizer.step()

    return forward, train_step


def measure_fcn_latency(size: int = 500, repeats: int = 5, warmup: int = 1, device: str = "cpu", progress: Callable[[str], None] | None = None) -> dict[str, Variant]:
    """Forward and training-step seconds of each variant at ``size x size`` (batch 1)."""
    dev = torch.device(device)
    ours, reference = matched_pair()
    image = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        ours_out, ref_out = ours.eval()(image), reference.eval()(image)
    if not torch.allclose(ours_out, ref_out, rtol=1e-4, atol=1e-4 * ref_out.abs().max().item()):
        raise RuntimeError("segkit's and torchfcn's FCN-8s disagree on the same weights; not comparable")
    ours_last = FCN8s(21)
    ours_last.load_state_dict(ours.state_dict())
    variants = [Variant("torchfcn FCN8s, fp32", reference), Variant("segkit FCN8s, fp32", ours),
                Variant("segkit FCN8s, fp32 channels_last", ours_last, channels_last=True)]
    if bf16_support(dev) is None:
        bf16_net = FCN8s(21)
        bf16_net.load_state_dict(ours.state_dict())
        variants.append(Variant("segkit FCN8s, bf16 autocast channels_last", bf16_net, channels_last=True, bf16=True))
    target = torch.randint(0, 21, (1, size, size), device=dev)
    steps = {}
    for v in variants:
        v.net.to(dev)
        x = image.to(dev)
        if v.channels_last:
            v.net.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        steps[v.name] = _steps(v, x, target, dev)
    for repeat in range(warmup + repeats):
        # Reverse the order every other round, so no variant always runs right after another
        # one's large allocations and frees (page faults cost seconds per training step here).
        for v in variants if repeat % 2 == 0 else variants[::-1]:
            if progress:
                progress(f"{'warm-up' if repeat < warmup else f'run {repeat - warmup + 1}/{repeats}'}: {v.name}")
            forward, train_step = steps[v.name]
            forward_s, train_s = _timed(forward, dev), _timed(train_step, dev)
            if repeat >= warmup:
                v.forward_s.append(forward_s)
                v.train_step_s.append(train_s)
    return {v.name: v for v in variants}


def summarise(variants: dict[str, Variant]) -> dict[str, dict[str, float]]:
    """Best and median seconds per variant, and segkit fp32's time over torchfcn's."""
    summary = {
        name: {"forward_best_s": min(v.forward_s), "forward_median_s": statistics.median(v.forward_s),
               "train_step_best_s": min(v.train_step_s), "train_step_median_s": statistics.median(v.train_step_s)}
        for name, v in variants.items()
    }
    ours, ref = summary["segkit FCN8s, fp32"], summary["torchfcn FCN8s, fp32"]
    summary["segkit_over_torchfcn"] = {key: ours[key] / ref[key] for key in ours}
    return summary

