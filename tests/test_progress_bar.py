"""The training progress bar redraws on a clock, not every step, and reads the training loss
only then (a host-device sync on a GPU)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import TINY_MODEL, task_config
from lightning.pytorch.callbacks import RichProgressBar

from segkit.training import progress
from segkit.training.run import train
from segkit.training.progress import SegmentationProgressBar


def test_redraws_at_most_every_refresh_interval_and_at_each_epoch_end(monkeypatch: pytest.MonkeyPatch) -> None:
    redrawn: list[int] = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end",
                        lambda self, trainer, module, outputs, batch, batch_idx: redrawn.append(batch_idx))
    clock = iter([0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7])  # seconds at the end of batches 0..6
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    bar = SegmentationProgressBar(refresh_every_s=0.25)
    trainer = SimpleNamespace(num_training_batches=7)
    for batch_idx in range(7):
        bar.on_train_batch_end(trainer, None, None, None, batch_idx)  # type: ignore[arg-type]
    # 0: the first; 3: 0.3 s after 0; 4 (0.2 s after 3): no; 5: 0.3 s after 3; 6: the epoch's last.
    assert redrawn == [0, 3, 5, 6]


@pytest.mark.parametrize(("max_epochs", "expected"), [(-1, "Epoch 3"), (5, "Epoch 3/4")])
def test_the_epoch_is_shown_without_a_limit_under_a_step_or_time_budget(max_epochs: int, expected: str) -> None:
    bar = SegmentationProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=max_epochs)  # type: ignore[assignment]
    assert bar._get_train_description(3).strip() == expected


def test_the_training_loss_is_read_once_per_redraw_not_after_every_step(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning converts each ``prog_bar`` metric to a float (``.item()``: a host-device sync
    on a GPU) after every batch; the loss reaches the bar only when it redraws."""
    import lightning.pytorch.trainer.connectors.logger_connector.result as result

    converted: list[object] = []
    convert = result.convert_tensors_to_scalars
    monkeypatch.setattr(result, "convert_tensors_to_scalars", lambda value: converted.append(value) or convert(value))
    shown: list[dict[str, object]] = []
    get_metrics = SegmentationProgressBar.get_metrics
    monkeypatch.setattr(SegmentationProgressBar, "get_metrics",
                        lambda self, trainer, module: shown.append(get_metrics(self, trainer, module)) or shown[-1])
    cfg = task_config("train", [*TINY_MODEL, "data.image_size=32", "data.batch_size=2", "data.train_size=8",
                                "trainer.max_steps=12", "++trainer.limit_val_batches=0", "test=false", "logger=csv",
                                "++trainer.log_every_n_steps=2"], tmp_path / "run")
    train(cfg)
    assert converted == []  # nothing converted after the steps
    assert any("train/loss" in metrics and isinstance(metrics["train/loss"], float) for metrics in shown)


def test_the_drawing_thread_looks_for_changes_on_the_same_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's thread wakes 100 times a second, taking the interpreter lock from the loop."""
    import lightning.pytorch.callbacks.progress.rich_progress as rich_progress

    thread_sleeps: list[float] = []
    sleep = time.sleep

    def recorded_sleep(seconds: float) -> None:
        if threading.current_thread() is not threading.main_thread():
            thread_sleeps.append(seconds)
        sleep(min(seconds, 0.01))

    monkeypatch.setattr(rich_progress, "time", SimpleNamespace(sleep=recorded_sleep))
    cfg = task_config("train", [*TINY_MODEL, "data.image_size=32", "data.batch_size=2", "data.train_size=8",
                                "trainer.max_steps=4", "++trainer.limit_val_batches=0", "test=false", "logger=csv",
                                "callbacks.progress_bar.refresh_every_s=0.5"], tmp_path / "run")
    train(cfg)
    assert thread_sleeps and set(thread_sleeps) == {0.5}


def test_no_redraw_interval_keeps_lightnings_drawing_clock() -> None:
    bar = SegmentationProgressBar(refresh_every_s=0)  # every batch redraws
    assert bar.refresh_rate == RichProgressBar().refresh_rate and bar.is_enabled
