"""segkit-export: ONNX / TorchScript files that compute what the module computes, at any size."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from helpers import console_command, describe, needs, run_cli, task_config

import segkit.cli.export
import segkit.inference.export
from segkit.cli.errors import SegkitError
from segkit.cli.export import export
from segkit.models import FCNModule, UNetModule
from segkit.models.base import SegmentationModule
from segkit.models.loading import load_module

EXPORT_CMD = console_command("segkit-export", "segkit.cli.export")
NEEDS_ONNX = needs("onnx", "pip install 'segkit[export]'")
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.15]
# Sizes no export traces or checks itself (the CLI uses 64x64 and 77x93), not multiples of 4.
CHECK_SHAPES = [(1, 37, 90), (3, 51, 42)]
# Two models whose exports differ (padded to a multiple, the net as it is) for the tests of the
# command itself; every architecture's export is checked by tests/test_architecture_contract.py.
MODELS = {
    "unet": lambda: UNetModule(num_classes=3, depth=2, base_width=4, class_names=["bg", "disc", "square"]),
    "fcn8s": lambda: FCNModule(num_classes=3, arch="fcn8s", width_mult=0.0625),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A segkit checkpoint per model in ``<run>/checkpoints/``, beside the run's ``.hydra/config.yaml``.

    All-zero parameters get random values: FCN score layers start at zero, and zero logits
    would match anything.
    """
    run = tmp_path_factory.mktemp("export_run")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(f"data:\n  mean: {MEAN}\n  std: {STD}\n  root: ${{paths.data_dir}}\n")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    torch.manual_seed(0)
    paths = {}
    for name, build in MODELS.items():
        module = build()
        with torch.no_grad():
            for parameter in module.parameters():
                if not parameter.any():
                    parameter.normal_(std=0.1)
        trainer.strategy.connect(module)
        paths[name] = run / "checkpoints" / f"{name}.ckpt"
        trainer.save_checkpoint(paths[name])
    return paths


def assert_matches_module(ckpt: Path, run, in_channels: int) -> None:
    """``run(images)`` equals the checkpoint's ``module(images)`` to 1e-4 on CHECK_SHAPES."""
    module = load_module(str(ckpt)).eval()
    generator = torch.Generator().manual_seed(1)
    for batch, height, width in CHECK_SHAPES:
        images = torch.randn(batch, in_channels, height, width, generator=generator)
        with torch.no_grad():
            expected = module(images).numpy()
        got = run(images)
        assert got.shape == expected.shape == (batch, module.num_classes, height, width)
        assert np.abs(expected).max() > 0.1, "logits too small to tell a wrong export apart"
        assert np.abs(got - expected).max() < 1e-4, (height, width)


@NEEDS_ONNX
@pytest.mark.parametrize("model", list(MODELS))
def test_onnx_runtime_matches_pytorch_on_two_other_sizes(checkpoints: dict[str, Path], model: str, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")  # an optional extra: segkit[export]
    meta = export(task_config("export", [f"ckpt_path={checkpoints[model]}"], tmp_path))
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    in_channels = meta["in_channels"]
    assert session.get_inputs()[0].shape == ["batch", in_channels, "height", "width"]
    assert_matches_module(checkpoints[model], lambda x: session.run(["logits"], {"images": x.numpy()})[0], in_channels)
    assert json.loads((tmp_path / "export.json").read_text()) == meta
    assert meta["format"] == "onnx" and meta["input"]["dynamic_axes"] == {"0": "batch", "2": "height", "3": "width"}
    assert len(meta["max_abs_diff"]) == 2 and max(meta["max_abs_diff"].values()) < 1e-4
    assert meta["mean"] == MEAN and meta["std"] == STD


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
@pytest.mark.parametrize("model", ["unet", "fcn8s"])
def test_torchscript_matches_pytorch_on_two_other_sizes(checkpoints: dict[str, Path], model: str, tmp_path: Path) -> None:
    output = tmp_path / "sub" / "net.pt"
    args = [f"ckpt_path={checkpoints[model]}", "format=torchscript", f"output={output}"]
    meta = export(task_config("export", args, tmp_path))
    loaded = torch.jit.load(str(output))

    def run(images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(images).numpy()

    assert_matches_module(checkpoints[model], run, 3)
    assert json.loads((tmp_path / "sub" / "net.json").read_text())["exporter"] == "torch.jit.trace"
    assert meta["class_names"] == (["bg", "disc", "square"] if model == "unet" else ["class_0", "class_1", "class_2"])


@NEEDS_ONNX
def test_refuses_to_overwrite_unless_asked(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "m.onnx"
    args = [f"ckpt_path={checkpoints['unet']}", f"output={output}"]
    export(task_config("export", args, tmp_path))
    before = output.read_bytes()
    with pytest.raises(SegkitError, match=r"m\.onnx exists; pass overwrite=true"):
        export(task_config("export", [*args, "seed=7"], tmp_path))
    assert output.read_bytes() == before
    export(task_config("export", [*args, "overwrite=true", "format=torchscript"], tmp_path))
    assert output.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]  # no temp files left


@NEEDS_ONNX
def test_a_failed_check_writes_nothing(
    checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segkit.inference.export, "max_difference", lambda module, run, images: (0.5, 1.0))
    with pytest.raises(SegkitError, match="differs from PyTorch by 0.5"):
        export(task_config("export", [f"ckpt_path={checkpoints['fcn8s']}"], tmp_path / "out"))
    assert not list((tmp_path / "out").iterdir())


@NEEDS_ONNX
def test_without_onnxruntime_the_check_is_skipped_with_a_warning(
    checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    with pytest.warns(UserWarning, match=r"pip install 'segkit\[export\]'"):
        meta = export(task_config("export", [f"ckpt_path={checkpoints['unet']}"], tmp_path))
    assert meta["max_abs_diff"] is None and (tmp_path / "model.onnx").is_file()


def test_a_new_module_whose_net_traces_exports_with_no_registration() -> None:
    class Custom(SegmentationModule):
        def __init__(self, num_classes: int = 2, in_channels: int = 3, **kwargs: object) -> None:
            super().__init__(num_classes, **kwargs)
            self.net = torch.nn.Conv2d(in_channels, num_classes, 3, padding=1)

    module = Custom()
    target = segkit.inference.export.exportable(module)
    assert target.net is module.net and target.min_side == 1


def test_what_is_not_a_segkit_module_is_refused_by_name() -> None:
    with pytest.raises(SegkitError, match="cannot export a Conv2d: segkit exports SegmentationModule subclasses"):
        segkit.inference.export.exportable(torch.nn.Conv2d(3, 2, 1))  # type: ignore[arg-type]


@NEEDS_ONNX
def test_cli_writes_model_and_description_into_its_run_directory(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli(EXPORT_CMD, [f"ckpt_path={checkpoints['unet']}"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    (run_dir,) = (tmp_path / "logs" / "export" / "runs").iterdir()
    assert (run_dir / "model.onnx").is_file()
    assert json.loads((run_dir / "export.json").read_text())["num_classes"] == 3
    assert "max |onnx - PyTorch| on 2x3x77x93" in proc.stdout


def test_missing_checkpoint_is_a_one_line_error_with_exit_code_2(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such.ckpt"
    proc = run_cli(EXPORT_CMD, [f"ckpt_path={missing}"], tmp_path)
    assert proc.returncode == 2, describe(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("segkit-export: error:")]
    assert len(errors) == 1 and str(missing) in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
