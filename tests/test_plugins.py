"""Extending segkit from your own package: ``tests/plugin_package`` (a model, a data module, a
loss and a callback, as the README's "Extending segkit" shows them) is pip-installed into a
temporary folder, and every command and both contracts accept it; a checkpoint naming a class
outside segkit and its plugins is refused."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT
from PIL import Image

PLUGIN_SOURCE = REPO_ROOT / "tests" / "plugin_package"
QUIET = ["callbacks.progress_bar=null", "++trainer.enable_progress_bar=false", "callbacks.model_summary=null"]
PLUGIN_RUN = ["model=toy", "data=rectangles", "model/loss=doubled_errors", "callbacks=with_step_count",
              "data.num_workers=0", "trainer.max_steps=6", "trainer.accelerator=cpu", *QUIET]


def pip_install(source: Path, target: Path) -> None:
    """``pip install --target``: the distribution's metadata (its entry points) lands there too."""
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation,
                           "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of commands that see the installed plugin."""
    root = tmp_path_factory.mktemp("plugin")
    shutil.copytree(PLUGIN_SOURCE, root / "source")
    pip_install(root / "source", root / "site")
    assert (root / "site" / "mylab" / "conf" / "model" / "toy.yaml").is_file()
    return {**os.environ, "PYTHONPATH": str(root / "site"), "CI": "true"}


def command(env: dict[str, str], cwd: Path, module: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=400)
    if ok:
        assert proc.returncode == 0, f"{module} {args[:3]}: {proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def trained(installed: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the plugin's model on the plugin's data with the plugin's loss and callback."""
    run_dir = tmp_path_factory.mktemp("plugin_run") / "run"
    command(installed, run_dir.parent, "segkit.cli.train", *PLUGIN_RUN, f"hydra.run.dir={run_dir}")
    return run_dir


def test_the_plugins_configs_compose_with_no_flag_and_are_listed_in_help(installed: dict[str, str], tmp_path: Path) -> None:
    shown = command(installed, tmp_path, "segkit.cli.train", "--help").stdout
    for option in ("toy", "rectangles", "doubled_errors", "with_step_count"):
        assert option in shown, option
    composed = command(installed, tmp_path, "segkit.cli.train", *PLUGIN_RUN, "--cfg", "job").stdout
    assert "mylab.models.ToyModule" in composed and "mylab.losses.DoubledErrorsLoss" in composed


def test_a_plugin_model_data_loss_and_callback_train(trained: Path) -> None:
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["segkit_module"] == "mylab.models:ToyModule"
    assert checkpoint["hyper_parameters"]["loss"] == {"name": "mylab.losses.DoubledErrorsLoss"}
    assert checkpoint["segkit_data"]["class_names"] == ["background", "rectangle"]
    assert (trained / "steps.txt").read_text().strip() == "6"  # the plugin's callback ran


def test_eval_predict_and_export_accept_the_plugins_checkpoint(installed: dict[str, str], trained: Path,
                                                                 tmp_path: Path) -> None:
    ckpt = trained / "checkpoints" / "last.ckpt"
    command(installed, tmp_path, "segkit.cli.eval", f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'eval'}")
    assert "rectangle_000" in (tmp_path / "eval" / "per_image.csv").read_text()  # the data's own sample names
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53), dtype=np.uint8)).save(images / "a.png")
    command(installed, tmp_path, "segkit.cli.predict", f"ckpt_path={ckpt}", f"input={images}",
            f"output={tmp_path / 'masks'}", "progress_bar=false", f"paths.output_dir={tmp_path / 'predict'}")
    assert Image.open(tmp_path / "masks" / "a.png").size == (53, 37)
    if importlib.util.find_spec("onnx") is None:  # the optional extra segkit[export]
        return
    command(installed, tmp_path, "segkit.cli.export", f"ckpt_path={ckpt}", f"output={tmp_path / 'toy.onnx'}",
            f"paths.output_dir={tmp_path / 'export'}")
    assert (tmp_path / "toy.onnx").is_file()


def test_both_contracts_run_against_the_plugin(installed: dict[str, str], tmp_path: Path) -> None:
    proc = command(installed, tmp_path, "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "segkit.contracts",
                   "-k", "toy or rectangles", ok=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    # Architecture: 7 (bf16 fast_dev_run and the meta-device step included); data: 4.
    assert "11 passed" in proc.stdout, proc.stdout[-2000:]


def test_without_the_plugin_its_checkpoint_is_refused_in_one_line(trained: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CI": "true"}
    env.pop("PYTHONPATH", None)
    proc = command(env, tmp_path, "segkit.cli.eval", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", ok=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = [line for line in proc.stderr.splitlines() if "refused" in line]
    assert len(error) == 1 and "mylab" in error[0] and "since importing it would run its code" in error[0]


def test_a_checkpoint_naming_another_package_is_refused_even_with_the_plugin(installed: dict[str, str],
                                                                              trained: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["segkit_module"] = "os.path:join"
    forged = tmp_path / "forged.ckpt"
    torch.save(checkpoint, forged)
    proc = command(installed, tmp_path, "segkit.cli.predict", f"ckpt_path={forged}", f"input={tmp_path}",
                   f"output={tmp_path / 'out'}", ok=False)
    assert proc.returncode == 2
    assert "os.path:join: refused" in proc.stderr and "mylab" in proc.stderr  # the trusted packages are named
