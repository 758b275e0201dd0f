"""segkit's TensorBoard logger: each event is written by the thread that logs it, straight to
the operating system (TensorBoard's writer thread woke for every event, and Lightning's
``save()`` after each ``log_metrics`` made training wait for it), in TensorBoard's own format,
and nothing logged is lost, not even by a killed process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from segkit.training.tensorboard_logger import SummaryWriterInThread, TensorBoardLogger


def _logger(tmp_path: Path, **kwargs: object) -> TensorBoardLogger:
    return TensorBoardLogger(str(tmp_path), name=None, version="", **kwargs)


def _scalars(log_dir: Path, tag: str = "train/loss") -> dict[int, float]:
    events = EventAccumulator(str(log_dir)).Reload()
    return {event.step: event.value for event in events.Scalars(tag)} if tag in events.Tags()["scalars"] else {}


def test_each_scalar_is_in_the_event_file_as_it_is_logged_with_its_time_and_no_thread(tmp_path: Path) -> None:
    logger = _logger(tmp_path)
    threads = set(threading.enumerate())
    logged_at = []
    for step in range(9, 50, 10):  # as Lightning: log_metrics, then save, every 10th step
        logged_at.append(time.time())
        logger.log_metrics({"train/loss": torch.tensor(1.0 / step)}, step=step)
        logger.save()
        # On disk before the next one is logged, without a flush or the end of the run.
        assert list(_scalars(tmp_path)) == list(range(9, step + 1, 10))
    assert set(threading.enumerate()) == threads  # no writer thread woke for them
    events = EventAccumulator(str(tmp_path)).Reload().Scalars("train/loss")
    assert len(events) == len(logged_at)
    assert all(abs(event.wall_time - t) < 0.05 for event, t in zip(events, logged_at))  # when it was logged
    assert [event.value for event in events] == [float(torch.tensor(1.0 / s)) for s in range(9, 50, 10)]
    logger.finalize("success")
    assert (tmp_path / "hparams.yaml").is_file()


def test_scalars_logged_by_a_process_that_is_killed_are_on_disk(tmp_path: Path) -> None:
    script = (f"import os, signal; from segkit.training.tensorboard_logger import TensorBoardLogger\n"
              f"logger = TensorBoardLogger({str(tmp_path)!r}, name=None, version='')\n"
              f"for step in range(3): logger.log_metrics({{'train/loss': 1.0 + step}}, step=step)\n"
              f"os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    assert _scalars(tmp_path) == {0: 1.0, 1: 2.0, 2: 3.0}


def test_logging_after_finalize_starts_a_new_event_file_that_tensorboard_reads_with_the_first(tmp_path: Path) -> None:
    logger = _logger(tmp_path)
    logger.log_metrics({"train/loss": 0.5}, step=9)
    logger.finalize("success")  # as after fit; the test stage logs on
    logger.log_metrics({"test/mIoU": 0.75}, step=10)
    logger.finalize("success")
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert _scalars(tmp_path) == {9: 0.5} and _scalars(tmp_path, "test/mIoU") == {10: 0.75}


def test_the_prefix_and_dicts_of_scalars_are_written_as_by_lightning(tmp_path: Path) -> None:
    logger = _logger(tmp_path, prefix="fold0")
    logger.log_metrics({"val/mIoU": 0.5, "losses": {"dice": 0.25, "ce": 0.75}}, step=3)
    logger.finalize("success")
    tags = {tag for path in tmp_path.rglob("events.out.tfevents.*")
            for tag in EventAccumulator(str(path)).Reload().Tags()["scalars"]}
    # add_scalars writes each key of a dict to a run of its own, under the dict's tag.
    assert tags == {"fold0-val/mIoU", "fold0-losses"}


def test_a_purge_step_hides_the_earlier_files_steps_from_it_on(tmp_path: Path) -> None:
    first = SummaryWriterInThread(str(tmp_path))
    for step in range(10):
        first.add_scalar("train/loss", float(step), step)
    first.close()
    time.sleep(1.1)  # event files are ordered by the second in their names
    again = SummaryWriterInThread(str(tmp_path), purge_step=5)  # a run resumed from step 5
    for step in (5, 6):
        again.add_scalar("train/loss", 100.0 + step, step)
    again.close()
    assert _scalars(tmp_path) == {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0, 5: 105.0, 6: 106.0}
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2  # read as one run
