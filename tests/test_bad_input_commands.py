"""Bad input to segkit-predict, -export, -report and -train: one line, exit 2, nothing written.

Each case is ``(command, argv, what the error line must name)``; ``{ckpt}``, ``{work}`` and
``{photos}`` are filled in per test. Every case also checks that nothing under the work folder
(inputs, existing files, outputs) was written or changed, that only Hydra's own bookkeeping
(``.hydra/``, ``<task>.log``) appeared under ``logs/``, and, for predict and export, that the
refusal came before the checkpoint was loaded or an image read.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from helpers import TINY, assert_one_line_error, run_in_process, tree_state
from PIL import Image
from torch.onnx import _constants as onnx_constants

import segkit.cli.export
import segkit.cli.predict
import segkit.cli.report
import segkit.cli.train
from segkit.models import UNetModule

OPSETS = f"{onnx_constants.ONNX_MIN_OPSET} to {onnx_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET}"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")


def report_main() -> None:
    """``segkit-report`` returns its exit status; a console script exits with it."""
    raise SystemExit(segkit.cli.report.main())


MAINS = {
    "predict": segkit.cli.predict.main,
    "export": segkit.cli.export.main,
    "report": report_main,
    "train": segkit.cli.train.main,
}


@dataclass(frozen=True)
class Case:
    command: str
    argv: tuple[str, ...]
    names: tuple[str, ...]
    images: tuple[str, ...] = ("a.png",)  # the files of {photos}
    hide_module: str | None = None  # made unimportable for the call


def case(command: str, argv: str, *names: str, id: str, images: tuple[str, ...] = ("a.png",),
         hide_module: str | None = None, marks: Any = ()) -> Any:
    """One row of the table (``argv`` is split on spaces)."""
    return pytest.param(Case(command, tuple(argv.split()), names, images, hide_module), id=id, marks=marks)


PREDICT = "ckpt_path={ckpt} input={photos} progress_bar=false"
EXPORT = "ckpt_path={ckpt}"
TRAIN = " ".join(TINY)
CASES = [
    # segkit-predict: where the masks go, which device, and two outputs of one run on one path.
    case("predict", f"{PREDICT} output={{work}}/notes.txt", "output={work}/notes.txt", "is a file",
         id="predict-output-is-a-file"),
    case("predict", f"{PREDICT} output={{work}}/notes.txt/out", "output={work}/notes.txt/out", "{work}/notes.txt",
         id="predict-output-under-a-file"),
    case("predict", f"{PREDICT} output={{work}}/taken overwrite=true", "{work}/taken/a.png", "is a folder",
         id="predict-an-output-is-a-folder"),
    case("predict", f"{PREDICT} output={{work}}/masks device=bogus", "device=bogus", "cpu", id="predict-device-bogus"),
    case("predict", f"{PREDICT} output={{work}}/masks device=cuda:99", "device=cuda:99", id="predict-device-cuda-99"),
    case("predict", f"{PREDICT} output={{work}}/masks device=cuda", "device=cuda", "CUDA", id="predict-device-cuda",
         marks=NO_CUDA),
    case("predict", f"{PREDICT} output={{work}}/masks device=meta", "device=meta", id="predict-device-meta"),
    case("predict", f"{PREDICT} output={{work}}/masks save.overlay=true",
         "{photos}/a.png", "{photos}/a_overlay.png", "{work}/masks/a_overlay.png",
         images=("a.png", "a_overlay.png"), id="predict-overlay-collides-with-a-mask"),
    case("predict", f"{PREDICT} output={{work}}/masks", "{photos}/a.png", "{photos}/a.jpg", "{work}/masks/a.png",
         images=("a.png", "a.jpg"), id="predict-same-stem"),
    case("predict", f"{PREDICT} output={{work}}/masks save.format=png", "{photos}/a.png", "{photos}/a.tif",
         "{work}/masks/a.png", images=("a.png", "a.tif"), id="predict-same-stem-as-png"),
    case("predict", f"{PREDICT} output={{work}}/masks save.format=jpeg", "save.format=jpeg", id="predict-bad-format"),
    case("predict", f"{PREDICT} output={{work}}/masks", "{photos}/x\\ny.png", "{photos}/x\\ny.jpg",
         images=("x\ny.png", "x\ny.jpg"), id="predict-same-stem-newline-in-the-names"),
    # segkit-export: the model file's path, the opset, the optional onnx package.
    case("export", f"{EXPORT} output={{work}}/taken overwrite=true", "output={work}/taken", "is a folder",
         id="export-output-is-a-folder-overwrite"),
    case("export", f"{EXPORT} output={{work}}/taken", "output={work}/taken", "is a folder",
         id="export-output-is-a-folder"),
    case("export", f"{EXPORT} output={{work}}/taken/m.onnx overwrite=true", "{work}/taken/m.json", "is a folder",
         id="export-description-path-is-a-folder"),
    case("export", f"{EXPORT} output={{work}}/notes.txt/m.onnx", "output={work}/notes.txt/m.onnx", "{work}/notes.txt",
         id="export-output-under-a-file"),
    case("export", f"{EXPORT} output={{work}}/m.onnx opset=1", "opset=1", OPSETS, id="export-opset-too-low"),
    case("export", f"{EXPORT} output={{work}}/m.onnx opset=99", "opset=99", OPSETS, id="export-opset-too-high"),
    case("export", f"{EXPORT} output={{work}}/m.onnx opset=seventeen", "opset=seventeen", OPSETS,
         id="export-opset-not-a-number"),
    case("export", f"{EXPORT} output={{work}}/m.onnx", "onnx", "pip install 'segkit[export]'", hide_module="onnx",
         id="export-without-onnx"),
    # segkit-report: --out must be a folder (or a path one can be made at).
    case("report", "{work}/sweep --out {work}/notes.txt", "--out {work}/notes.txt", "is a file",
         id="report-out-is-a-file"),
    case("report", "{work}/sweep --out {work}/notes.txt/report", "--out {work}/notes.txt/report", "{work}/notes.txt",
         id="report-out-under-a-file"),
    case("report", "--paired {work}/a {work}/b --out {work}/notes.txt", "--out {work}/notes.txt", "is a file",
         id="report-paired-out-is-a-file"),
    # segkit-train: optimiser arguments torch refuses, refused before the data is even set up.
    case("train", f"{TRAIN} model.optimizer.lr=-1", "model.optimizer", "AdamW", "Invalid learning rate: -1",
         id="train-negative-lr"),
    case("train", f"{TRAIN} model.optimizer.weight_decay=-0.5", "model.optimizer", "weight_decay", "-0.5",
         id="train-negative-weight-decay"),
    case("train", f"{TRAIN} +model.optimizer.momentum=0.9", "model.optimizer", "momentum",
         id="train-unknown-optimizer-argument"),
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny U-Net checkpoint in ``<run>/checkpoints/``, beside its run's ``.hydra/config.yaml``."""
    run = tmp_path_factory.mktemp("bad_input_run")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("data:\n  mean: [0.5, 0.5, 0.5]\n  std: [0.25, 0.25, 0.25]\n")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(UNetModule(num_classes=3, depth=2, base_width=4))
    path = run / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


def make_work(work: Path, images: tuple[str, ...]) -> None:
    """Input images, a file (``notes.txt``), folders where outputs would go (``taken/a.png/``,
    ``taken/m.json/``) and a finished run for segkit-report (``sweep/0/metrics.json``)."""
    (work / "photos").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    for name in images:
        Image.fromarray(pixels).save(work / "photos" / name, format="PNG")
    (work / "notes.txt").write_text("not a folder\n")
    for folder in ("taken/a.png", "taken/m.json"):
        (work / folder).mkdir(parents=True)
        (work / folder / "keep").write_text("mine\n")
    (work / "sweep" / "0").mkdir(parents=True)
    (work / "sweep" / "0" / "metrics.json").write_text('{"overrides": ["seed=1"], "val": {"mIoU": 0.5}}\n')


def non_hydra_files(logs: Path) -> list[Path]:
    """Files under ``logs/`` other than Hydra's run records (``.hydra/*.yaml``, ``<task>.log``)."""
    return [p for p in logs.rglob("*") if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"]


@pytest.fixture()
def long_work(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What predict and export started of their long work: loading the checkpoint, reading an image."""
    calls: list[str] = []

    def spy(module: object, name: str) -> None:
        real = getattr(module, name)

        def recorded(*args: Any) -> Any:
            calls.append(name)
            return real(*args)

        monkeypatch.setattr(module, name, recorded)

    spy(segkit.cli.predict, "load_module")
    spy(segkit.cli.predict, "read_image")
    spy(segkit.cli.export, "load_module")
    return calls


@pytest.mark.parametrize("bad", CASES)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    bad: Case, ckpt: Path, tmp_path: Path, long_work: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    make_work(work, bad.images)
    fill = {"ckpt": str(ckpt), "work": str(work), "photos": str(work / "photos")}
    if bad.hide_module:
        monkeypatch.setitem(sys.modules, bad.hide_module, None)  # `import onnx` raises ImportError
    before = tree_state(work)

    result = run_in_process(MAINS[bad.command], [arg.format(**fill) for arg in bad.argv], tmp_path)

    assert_one_line_error(result, *(name.format(**fill) for name in bad.names))
    assert result.error_lines[0].startswith(f"segkit-{bad.command}: error: ")
    assert tree_state(work) == before
    assert non_hydra_files(tmp_path / "logs") == []
    assert long_work == []


def test_an_opset_the_model_cannot_use_is_one_line_and_writes_nothing(ckpt: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    output = tmp_path / "work" / "m.onnx"
    output.parent.mkdir()
    # Opset 9 has no Pad with sizes computed from the input, which the U-Net's export needs.
    result = run_in_process(segkit.cli.export.main, [f"ckpt_path={ckpt}", f"output={output}", "opset=9"], tmp_path)
    assert_one_line_error(result, "opset=9", "Pad", "try a higher opset=")
    assert tree_state(output.parent) == {} and non_hydra_files(tmp_path / "logs") == []
