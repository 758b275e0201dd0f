"""``trainer.precision`` works for every model: one bf16-mixed step of each, on the CPU (where
bfloat16 autocast is supported; the GPU path is the same Lightning plugin)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import (
    QUIET_CALLBACKS,
    TINY_DATA,
    RecordNetOutputDtypes,
    config_options,
    task_config,
)

from segkit.cli.train import train

# Smallest variants of each topology: precision is about dtypes, not capacity.
SMALL = {
    "unet": ["model.base_width=4", "model.depth=2"],
    "patch_cnn": ["model.preset=n1", "model.maps=4", "model.hidden=8"],
    "unet_paper": ["model.base_width=4", "model.depth=2", "model.tile=null"],
}


@pytest.mark.parametrize("model", config_options("model"))
def test_bf16_mixed_precision_trains_every_model(model: str, tmp_path: Path) -> None:
    small = SMALL.get(model, ["model.width_mult=0.0625"])
    overrides = [
        "debug=fdr", f"model={model}", *small, *TINY_DATA, *QUIET_CALLBACKS,
        "trainer.precision=bf16-mixed", "~logger", "callbacks.lr_monitor=null",
        "+callbacks.dtypes._target_=helpers.RecordNetOutputDtypes",
    ]
    RecordNetOutputDtypes.seen.clear()
    metrics = train(task_config("train", overrides, tmp_path))
    assert torch.bfloat16 in RecordNetOutputDtypes.seen  # autocast really ran the net in bf16
    for stage in ("train", "val", "test"):
        assert math.isfinite(metrics[f"{stage}/loss"]), stage
