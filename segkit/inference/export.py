"""Export a segkit model to ONNX or TorchScript, with dynamic batch, height and width.

What is exported is what ``module(images)`` computes in eval mode: ``(N, C_in, H, W)`` float
images -> ``(N, num_classes, H, W)`` logits. ``module`` itself cannot be traced (a
LightningModule), and some forwards branch on Python ints computed from the input's size,
which a trace would bake in; each architecture's ``exportable()`` therefore returns a plain
``nn.Module`` whose size arithmetic is all tensor ops under tracing (the forms are in
:mod:`segkit.nets.traceable`; a module whose net traces as it is needs no override):

- U-Net: reflect-padded to a multiple of ``2**depth`` outside the net (the net's own
  ``if pad`` is then always false), cropped back;
- FCN: the net as it is (its crops are traced as size-dependent slices);
- patch CNN: the ``dilated`` dense form (exact, like the module's ``fragments`` one, which
  writes into preallocated views and does not trace) on the mirror-padded image;
- paper U-Net: one pass over the image mirror-padded to a valid size (what overlap-tile
  computes, tile by tile).

Every export is checked against ``module(images)`` by :func:`max_difference`.

Example:
    >>> from segkit.models import UNetModule
    >>> module = UNetModule(num_classes=3, depth=2, base_width=4).eval()
    >>> target = exportable(module)
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "unet.pt"
    >>> export_torchscript(target.net, torch.randn(1, 3, 32, 32), path)
    >>> max_difference(module, torchscript_runner(path), torch.randn(2, 3, 45, 70))[0] < 1e-5
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segkit.errors import SegkitError
from segkit.models.base import SegmentationModule
from segkit.nets.traceable import Exportable

INPUT_NAME, OUTPUT_NAME = "images", "logits"
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}
Runner = Callable[[np.ndarray], np.ndarray]


def exportable(module: SegmentationModule) -> Exportable:
    """The traceable equivalent of ``module(images)`` (eval mode, CPU, float32): what the
    module's own :meth:`~segkit.models.base.SegmentationModule.exportable` returns."""
    if not isinstance(module, SegmentationModule):
        raise SegkitError(f"cannot export a {type(module).__name__}: segkit exports SegmentationModule subclasses")
    return module.cpu().float().eval().exportable()


@contextmanager
def _quiet() -> Iterator[None]:
    """Silences tracer warnings (every export is checked numerically on other sizes instead)
    and torch's notices that the legacy ONNX exporter and ``torch.jit`` are deprecated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        yield


def supported_opsets() -> range:
    """The ONNX opsets torch's TorchScript-based exporter writes (7 to 20 in torch 2.14)."""
    try:  # a private module: a torch that moves it gets the range of torch 2.3
        from torch.onnx import _constants

        low = _constants.ONNX_MIN_OPSET
        high = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):
        low, high = 7, 17
    return range(low, high + 1)


def require_onnx() -> None:
    """Refuse ONNX export, before any work, when the ``onnx`` package torch writes it with is missing."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise SegkitError(
            "format=onnx needs the onnx package, which is not installed: pip install 'segkit[export]' "
            "(or export with format=torchscript)"
        ) from None


def export_onnx(net: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    """Write ``net`` as ONNX, dynamic in batch, height and width.

    The TorchScript-based exporter (``dynamo=False``): torch's default, dynamo-based one needs
    ``onnxscript``, which segkit does not depend on.
    """
    require_onnx()
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                net, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: DYNAMIC_AXES, OUTPUT_NAME: DYNAMIC_AXES},
            )
    except ModuleNotFoundError as error:
        raise SegkitError(f"ONNX export needs {error.name}: pip install 'segkit[export]'") from None
    except torch.onnx.errors.OnnxExporterError as error:  # e.g. an op the opset lacks (opset 9: no dynamic Pad)
        reason = (str(error).splitlines() or [""])[0].split(" [Caused by")[0][:300]
        raise SegkitError(f"opset={opset}: torch's ONNX exporter cannot export this model: {reason}; "
                          "try a higher opset= (the default is 17)") from None


def export_torchscript(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Write ``net`` traced as TorchScript (``torch.jit.load`` reads it back).

    Traced, not scripted: the nets' Python (f-string errors, comprehensions) does not script,
    and their size arithmetic is traced as tensor ops, so other sizes give the right results.
    """
    with _quiet(), torch.no_grad():
        torch.jit.save(torch.jit.trace(net, (example,), check_trace=False), str(path))


def onnx_runner(path: Path) -> Runner | None:
    """``images -> logits`` by ONNX Runtime on the CPU; ``None`` if it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def torchscript_runner(path: Path) -> Runner:
    """``images -> logits`` by the TorchScript file at ``path``."""
    with _quiet():
        loaded = torch.jit.load(str(path), map_location="cpu")

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(images)).numpy()

    return run


def max_difference(module: nn.Module, run: Runner, images: torch.Tensor) -> tuple[float, float]:
    """``(largest |run(images) - module(images)|, largest |module(images)|)``."""
    with torch.no_grad():
        expected = module.eval()(images)
    try:
        got = torch.from_numpy(np.asarray(run(images.numpy())))
    except Exception as error:  # noqa: BLE001 (ONNX Runtime and TorchScript raise their own types)
        first_line = (str(error).splitlines() or [""])[0][:300]
        shape = tuple(images.shape)
        raise SegkitError(f"the exported model fails on input {shape}: {type(error).__name__}: {first_line}") from None
    if got.shape != expected.shape:
        raise SegkitError(f"the exported model gave logits of shape {tuple(got.shape)} for input "
                          f"{tuple(images.shape)}, PyTorch {tuple(expected.shape)}")
    return float((got - expected).abs().max()), float(expected.abs().max())
