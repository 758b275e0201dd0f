"""progress.png: the run's curves in its run directory, redrawn whole at every validation, and
complete again after a run killed mid-epoch resumes."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import TINY, TRAIN_CMD, describe, run_cli, task_config
from matplotlib.figure import Figure
from omegaconf import open_dict
from PIL import Image

from segkit.training.progress_figure import SERIES, ProgressFigure, draw_progress

TESTS_DIR = str(Path(__file__).parent)
# 3 epochs of 4 steps, a loss kept every 2 steps: validations at steps 4, 8, 12.
RUN = [*TINY, "trainer.max_epochs=3", "trainer.log_every_n_steps=2", "test=false"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def whole_png(data: bytes) -> bool:
    """A PNG file from its signature to its end chunk (IEND and its CRC close every PNG)."""
    return data.startswith(PNG_SIGNATURE) and data[-12:-8] == b"\x00\x00\x00\x00" and data[-8:-4] == b"IEND"


class WatchProgress(L.Callback):
    """After each validation (after ProgressFigure's turn): what the run directory holds."""

    seen: list[dict] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        (progress,) = [c for c in trainer.callbacks if isinstance(c, ProgressFigure)]
        data = progress.path.read_bytes()
        self.seen.append({"sha": hashlib.sha256(data).hexdigest(), "whole": whole_png(data),
                          "val_steps": list(progress.points["val_step"]),
                          "left_over": sorted(p.name for p in progress.path.parent.glob(".progress.png*")),
                          "draw_s": progress.last_draw_s})


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segkit.training.run import train

    output_dir = tmp_path_factory.mktemp("progress")
    cfg = task_config("train", RUN, output_dir)
    with open_dict(cfg):
        cfg.callbacks.watch = {"_target_": f"{__name__}.WatchProgress"}
    WatchProgress.seen = []
    train(cfg)
    return output_dir


def test_progress_png_is_in_the_run_directory_and_a_valid_png(watched_run: Path) -> None:
    path = watched_run / "progress.png"
    assert whole_png(path.read_bytes())
    with Image.open(path) as image:
        image.verify()
    assert Image.open(path).size == (800, 850)


def test_it_is_redrawn_whole_at_each_validation(watched_run: Path) -> None:
    seen = WatchProgress.seen
    assert [s["val_steps"] for s in seen] == [[4], [4, 8], [4, 8, 12]]
    assert len({s["sha"] for s in seen}) == 3  # a new figure each time
    assert all(s["whole"] and not s["left_over"] for s in seen)  # written atomically
    print("draw time per validation (s):", [round(s["draw_s"], 3) for s in seen])


def test_the_checkpoint_keeps_every_point_as_plain_numbers(watched_run: Path) -> None:
    state = torch.load(watched_run / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["ProgressFigure"]
    points = state["points"]
    assert sorted(points) == sorted(SERIES)
    assert points["step"] == [2, 4, 6, 8, 10, 12] and points["val_step"] == [4, 8, 12]
    for name in ("train_loss", "lr", "val_loss", "val_mIoU", "val_mIoU_best"):
        assert all(isinstance(v, float) for v in points[name]), name
    assert points["val_mIoU_best"] == sorted(points["val_mIoU_best"])  # best so far never falls
    assert all(lr > 0 for lr in points["lr"]) and all(loss > 0 for loss in points["train_loss"])


def test_a_failed_draw_leaves_the_previous_figure_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    points = {"step": [1, 2], "train_loss": [1.0, 0.5], "lr": [0.1, 0.1], "val_step": [2], "val_loss": [0.7],
              "val_mIoU": [0.2], "val_mIoU_best": [0.2]}
    path = draw_progress(points, tmp_path / "progress.png")
    before = path.read_bytes()

    def half_then_fail(self: Figure, target: Path, **kwargs: object) -> None:
        Path(target).write_bytes(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_then_fail)
    with pytest.raises(OSError):
        draw_progress(points, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["progress.png"]


def _points(run_dir: Path) -> dict[str, list[float]]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return checkpoint["callbacks"]["ProgressFigure"]["points"]


@pytest.mark.timeout(400)
def test_a_run_killed_mid_epoch_and_resumed_keeps_the_points_from_before_the_kill(tmp_path: Path) -> None:
    def train(run_dir: Path, *extra: str):
        return run_cli(TRAIN_CMD, [*RUN, f"hydra.run.dir={run_dir}", *extra], tmp_path, PYTHONPATH=TESTS_DIR)

    proc = train(tmp_path / "uninterrupted")
    assert proc.returncode == 0, describe(proc)
    # Killed as step 6 starts (epoch 1, mid-epoch), last.ckpt saved at step 6; the same command resumes.
    killed = tmp_path / "killed"
    kill = ["callbacks.model_checkpoint.last_every_n_train_steps=1", "+callbacks.kill._target_=helpers.KillAtStep",
            "+callbacks.kill.step=6", f"+callbacks.kill.once={tmp_path}"]
    proc = train(killed, *kill)
    assert proc.returncode == -signal.SIGKILL, describe(proc)
    assert _points(killed)["step"] == [2, 4, 6] and _points(killed)["val_step"] == [4]
    proc = train(killed, *kill)
    assert proc.returncode == 0, describe(proc)
    assert "resuming from" in proc.stdout + proc.stderr

    expected, resumed = _points(tmp_path / "uninterrupted"), _points(killed)
    assert resumed["step"] == expected["step"] == [2, 4, 6, 8, 10, 12]
    assert resumed["val_step"] == expected["val_step"] == [4, 8, 12]
    for name in ("train_loss", "val_mIoU", "lr"):  # an exact resume: the same run
        assert resumed[name] == pytest.approx(expected[name], rel=1e-5), name
    assert whole_png((killed / "progress.png").read_bytes())
