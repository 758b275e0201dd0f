"""``segkit-export``: a checkpoint as an ONNX or TorchScript model, checked against PyTorch.

The model maps ``(N, C_in, H, W)`` float images to ``(N, num_classes, H, W)`` logits, dynamic in
N, H and W (see :mod:`segkit.inference.export`). Before the file is moved into place it is run on random
images of two sizes and compared with the checkpoint's module (ONNX: by ONNX Runtime, if
installed). Beside it goes a JSON description (``export.json`` in the run directory, or
``<output minus suffix>.json``; with the ``provenance`` of ``metrics.json``). Examples::

    segkit-export ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt
    segkit-export ckpt_path=... format=torchscript output=unet.pt overwrite=true
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, ListConfig
from rich.console import Console

from segkit.atomic import atomic_path
from segkit.cli.argv import hoist_multirun_flag
from segkit.cli.common import training_normalization
from segkit.cli.errors import SegkitError, exit_on_user_error
from segkit.config_dir import config_dir
from segkit.errors import file_in_the_way, shown
from segkit.inference import export as ex
from segkit.models.loading import load_module
from segkit.training.provenance import collect_provenance

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
DEFAULT_SIDE = 64




def output_paths(cfg: DictConfig) -> tuple[Path, Path]:
    """``(model file, its JSON description)``, refusing a folder in their place, a file in their
    way and, without overwrite=true, an existing file."""
    if cfg.output is None:
        model = Path(cfg.paths.output_dir) / FORMATS[cfg.format]
        meta = model.with_name("export.json")
    else:
        model, where = Path(cfg.output), f"output={shown(cfg.output)}"
        if model.is_dir():
            example = shown(model / FORMATS[cfg.format])
            raise SegkitError(f"{where} is a folder; give the model file's path, e.g. output={example}")
        blocker = file_in_the_way(model)
        if blocker is not None:
            raise SegkitError(f"{where}: {shown(blocker)} is a file, not a folder; choose another output=")
        meta = model.with_suffix(".json")
        if meta == model:
            raise SegkitError(f"{where}: the .json name is taken by the description; use another suffix")
    for path, what in ((model, "model"), (meta, "description")):
        if path.exists() and not path.is_file():
            raise SegkitError(f"{shown(path)} is a folder, where the {what} would go; move it or pick another output=")
        if path.exists() and not cfg.overwrite:
            raise SegkitError(f"{shown(path)} exists; pass overwrite=true to replace it, or another output=")
    return model, meta


def check_onnx(opset: object) -> None:
    """Refuse an opset torch does not export, then a missing onnx package."""
    valid = ex.supported_opsets()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in valid:
        raise SegkitError(f"opset={shown(opset)}: torch {torch.__version__} exports ONNX opsets "
                          f"{valid.start} to {valid.stop - 1}; pass one of them, e.g. opset=17")
    ex.require_onnx()


def example_sizes(size: Any, min_side: int) -> list[tuple[int, int]]:
    """The traced size and a second, different one, which the export is checked on.

    Example:
        >>> example_sizes(None, 1), example_sizes([40, 50], 33)
        ([(64, 64), (77, 93)], [(40, 50), (53, 79)])
    """
    if size is None:
        height = width = max(DEFAULT_SIDE, min_side)
    elif isinstance(size, int):
        height = width = size
    elif isinstance(size, (list, tuple, ListConfig)) and len(size) == 2:
        height, width = (int(s) for s in size)
    else:
        raise SegkitError(f"size={size}: give one side (size=64) or [height,width] (size=[64,96])")
    if min(height, width) < min_side:
        raise SegkitError(f"size={size}: this model exports for inputs of at least {min_side} px per side; use more")
    return [(height, width), (height + 13, width + 29)]


def _write(net: torch.nn.Module, example: torch.Tensor, cfg: DictConfig, path: Path) -> ex.Runner | None:
    if cfg.format == "onnx":
        ex.export_onnx(net, example, path, int(cfg.opset))
        runner = ex.onnx_runner(path)
        if runner is None:
            warnings.warn("onnxruntime is not installed, so the ONNX model was not checked against PyTorch; "
                          "pip install 'segkit[export]'", stacklevel=2)
        return runner
    ex.export_torchscript(net, example, path)
    return ex.torchscript_runner(path)


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` as ``cfg.format``; return (and write) its JSON description."""
    if cfg.format not in FORMATS:
        raise SegkitError(f"format={shown(cfg.format)}: choose one of {', '.join(FORMATS)}")
    model_path, meta_path = output_paths(cfg)
    if cfg.format == "onnx":
        check_onnx(cfg.opset)
    module = load_module(cfg.ckpt_path)
    target = ex.exportable(module)
    sizes = example_sizes(cfg.size, target.min_side)
    in_channels = int(module.hparams["in_channels"])
    generator = torch.Generator().manual_seed(int(cfg.seed))
    inputs = [torch.randn(batch, in_channels, *hw, generator=generator) for batch, hw in zip((1, 2), sizes)]
    model_path.parent.mkdir(parents=True, exist_ok=True)
    console = Console(soft_wrap=True)
    # Written beside model_path and renamed onto it only once the check passed.
    with atomic_path(model_path) as tmp:
        runner = _write(target.net, inputs[0], cfg, tmp)
        diffs: dict[str, float] | None = None
        if runner is not None:
            diffs = {}
            for images in inputs:
                shape = "x".join(map(str, images.shape))
                diffs[shape], scale = ex.max_difference(module, runner, images)
                console.print(f"max |{cfg.format} - PyTorch| on {shape}: {diffs[shape]:.3g} (logits up to {scale:.3g})")
                # float32 rounding grows with the logits: atol plus rtol of their largest.
                if diffs[shape] > cfg.atol + cfg.rtol * scale:
                    raise SegkitError(
                        f"the exported {cfg.format} model differs from PyTorch by {diffs[shape]:.3g} on input {shape} "
                        f"(allowed: atol={cfg.atol} + rtol={cfg.rtol} x {scale:.3g}); nothing written; "
                        "raise atol= or rtol= to accept it"
                    )
        if model_path.exists() and not cfg.overwrite:  # created while we were exporting
            raise SegkitError(f"{model_path} exists; pass overwrite=true to replace it, or another output=")
    meta: dict[str, Any] = {
        "format": cfg.format,
        "file": model_path.name,
        "exporter": f"torch.onnx.export(dynamo=False), opset {cfg.opset}" if cfg.format == "onnx" else "torch.jit.trace",
        "model": type(module).__name__,
        "note": target.note,
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        "input": {
            "name": ex.INPUT_NAME, "dtype": "float32", "shape": ["batch", in_channels, "height", "width"],
            "dynamic_axes": {str(k): v for k, v in ex.DYNAMIC_AXES.items()}, "min_side": target.min_side,
        },
        "output": {"name": ex.OUTPUT_NAME, "shape": ["batch", module.num_classes, "height", "width"]},
        "num_classes": module.num_classes,
        "class_names": list(module.class_names),
        "in_channels": in_channels,
        **training_normalization(cfg.ckpt_path),
        **module.input_normalization(),
        "max_abs_diff": diffs,
        "tolerance": {"atol": cfg.atol, "rtol": cfg.rtol},
        "provenance": collect_provenance(),  # versions, commit, machine, command line (as in metrics.json)
    }
    with atomic_path(meta_path) as partial:
        partial.write_text(json.dumps(meta, indent=2) + "\n")
    console.print(f"wrote {model_path}\nwrote {meta_path}")
    return meta


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
@exit_on_user_error("segkit-export")
def hydra_main(cfg: DictConfig) -> None:
    export(cfg)


def main() -> None:
    """Console entry point ``segkit-export``."""
    sys.argv = hoist_multirun_flag(sys.argv)
    hydra_main()


if __name__ == "__main__":
    main()
