""""Adding an architecture" (README, docs/extending.md), done for real: a copy of segkit plus three new files (a net,
a module, a yaml) and nothing else passes its contract, trains, evaluates, predicts and exports."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT, TINY_DATA
from PIL import Image

NET = '''import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(width, num_classes, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)
'''
MODULE = '''from typing import Any, ClassVar

from segkit.models.base import SegmentationModule
from segkit.nets.tiny import TinyNet


class TinyModule(SegmentationModule):
    contract_size: ClassVar[dict[str, Any]] = {"width": 4}

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16, **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        self.net = TinyNet(num_classes, in_channels, width)
'''
CONFIG = '''defaults: [{loss: cross_entropy}, _self_]
_target_: segkit.models.tiny.TinyModule
width: 16
optimizer: {_target_: torch.optim.AdamW, _partial_: true, lr: 0.001}
scheduler: null
'''


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_new_architecture_in_three_files_works_everywhere(tmp_path: Path) -> None:
    copy = tmp_path / "checkout"
    for folder in ("segkit", "conf", "tests"):
        shutil.copytree(REPO_ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "segkit" / "nets" / "tiny.py").write_text(NET)
    (copy / "segkit" / "models" / "tiny.py").write_text(MODULE)
    (copy / "conf" / "model" / "tiny.yaml").write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": str(copy), "CI": "true"}

    def run(*args: str) -> str:
        proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"{args[:3]}: {proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    contract = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "tiny",
                   str(copy / "tests" / "test_architecture_contract.py"))
    # its class, odd sizes, gradients, a step with no host read, reload, ONNX, bf16 fast_dev_run
    assert "7 passed" in contract
    quiet = ["callbacks.progress_bar=null", "++trainer.enable_progress_bar=false", "callbacks.model_summary=null"]
    run("-m", "segkit.cli.train", "model=tiny", *TINY_DATA, *quiet, "trainer.max_steps=4",
        f"paths.output_dir={tmp_path / 'run'}")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert "mIoU" in run("-m", "segkit.cli.eval", f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'eval'}")
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(images / "a.png")
    run("-m", "segkit.cli.predict", f"ckpt_path={ckpt}", f"input={images}", f"output={tmp_path / 'masks'}",
        "progress_bar=false", f"paths.output_dir={tmp_path / 'predict'}")
    assert Image.open(tmp_path / "masks" / "a.png").size == (53, 37)
    if importlib.util.find_spec("onnx") is None:  # the optional extra segkit[export]
        return
    exported = run("-m", "segkit.cli.export", f"ckpt_path={ckpt}", f"output={tmp_path / 'tiny.onnx'}",
                   f"paths.output_dir={tmp_path / 'export'}")
    assert (tmp_path / "tiny.onnx").is_file() and "max |onnx - PyTorch|" in exported
