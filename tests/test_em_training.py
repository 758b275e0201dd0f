"""EM training end to end: the paper U-Net on the built-in EM slices, with the weight-map loss
and the EM scores logged beside mIoU."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import QUIET_CALLBACKS, TRAIN_CMD, describe, run_cli, task_config

from segkit.training.run import train

TINY_EM = [
    "data=em", "data.image_size=48", "data.train_size=8", "data.val_size=4", "data.test_size=4",
    "data.batch_size=4", "data.num_workers=0", "model=unet_paper", "model.depth=2", "model.base_width=4",
    "model.tile=null", "model/loss=weight_map",
    "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.devices=1", *QUIET_CALLBACKS,
]


def test_em_runs_log_pixel_error_and_v_rand_beside_miou(tmp_path: Path) -> None:
    metrics = train(task_config("train", TINY_EM, tmp_path))
    for stage in ("val", "test"):
        # Two classes, no ignored pixels: the pixel error is exactly 1 - pixel accuracy.
        assert metrics[f"{stage}/pixel_error"] == pytest.approx(1 - metrics[f"{stage}/pixel_acc"], abs=1e-6)
        assert metrics[f"{stage}/rand_error"] == pytest.approx(1 - metrics[f"{stage}/v_rand"], abs=1e-6)
    assert "val/IoU/membrane" in metrics


def test_shapes_runs_do_not_log_em_scores(tmp_path: Path) -> None:
    from helpers import TINY

    metrics = train(task_config("train", [*TINY, "test=false"], tmp_path))
    assert "val/mIoU" in metrics and not any("v_rand" in key for key in metrics)


def test_the_em_scores_are_a_data_setting_that_can_be_turned_off(tmp_path: Path) -> None:
    metrics = train(task_config("train", [*TINY_EM, "data.em_scores=false", "test=false"], tmp_path))
    assert "val/IoU/membrane" in metrics
    assert not any(name in key for key in metrics for name in ("v_rand", "pixel_error", "rand_error"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("experiment", ["unet_em", "patch_cnn_em"])
def test_em_experiments_run_one_batch_of_everything(experiment: str, tmp_path: Path) -> None:
    proc = run_cli(TRAIN_CMD, [f"experiment={experiment}", "debug=fdr", *QUIET_CALLBACKS], tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert "test/v_rand" in proc.stdout
