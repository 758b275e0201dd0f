"""segkit's TensorBoard logger: the event file is flushed on a clock, not after every logged
step (Lightning's ``save()`` after each ``log_metrics`` made the training thread wait for the
disk), and nothing logged is lost."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from segkit.training.tensorboard_logger import TensorBoardLogger


def _logger(tmp_path: Path, flush_every_s: float) -> TensorBoardLogger:
    return TensorBoardLogger(str(tmp_path), name=None, version="", flush_every_s=flush_every_s)


def _steps_on_disk(tmp_path: Path) -> list[int]:
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    return [event.step for event in events.Scalars("train/loss")] if "train/loss" in events.Tags()["scalars"] else []


def _count_flushes(logger: TensorBoardLogger, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    flushes: list[float] = []
    flush = logger.experiment.flush

    def counted_flush() -> None:
        flushes.append(time.monotonic())
        flush()

    monkeypatch.setattr(logger.experiment, "flush", counted_flush)
    return flushes


@pytest.mark.parametrize(("flush_every_s", "expected_flushes"), [(3600.0, 1), (0.0, 5)])
def test_saves_flush_the_event_file_at_most_once_per_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flush_every_s: float, expected_flushes: int) -> None:
    logger = _logger(tmp_path, flush_every_s)
    flushes = _count_flushes(logger, monkeypatch)
    for step in range(9, 50, 10):  # as Lightning: log_metrics, then save, every 10th step
        logger.log_metrics({"train/loss": 1.0 / step}, step=step)
        logger.save()
    assert len(flushes) == expected_flushes
    logger.finalize("success")
    assert _steps_on_disk(tmp_path) == [9, 19, 29, 39, 49]  # every scalar, the unflushed ones too
    assert (tmp_path / "hparams.yaml").is_file()


def test_a_scalar_logged_after_the_last_flush_reaches_the_file_on_the_writers_clock(tmp_path: Path) -> None:
    logger = _logger(tmp_path, 1.0)
    logger.log_metrics({"train/loss": 0.9}, step=9)
    logger.save()  # flushed: the first save
    logger.log_metrics({"train/loss": 0.8}, step=19)
    logger.save()  # skipped: within the second
    deadline = time.monotonic() + 10
    while _steps_on_disk(tmp_path) != [9, 19] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _steps_on_disk(tmp_path) == [9, 19]  # no further save(): the writer thread flushed it
    logger.finalize("success")


def test_a_negative_interval_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flush_every_s=-1"):
        _logger(tmp_path, -1)
