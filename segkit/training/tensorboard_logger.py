"""Lightning's TensorBoard logger without a wait for the disk on every logged step.

Lightning calls ``logger.save()`` after each ``log_metrics``, every ``trainer.log_every_n_steps``
steps, and ``TensorBoardLogger.save`` flushes the event file: the training thread waits until
TensorBoard's writer thread has drained its queue and the file is written. On the 2-core CPU
that was about 2 ms of each logged step, 0.2 ms a step at segkit's ``log_every_n_steps=10``
(docs/overhead.md). :class:`TensorBoardLogger` flushes at most every ``flush_every_s`` seconds,
and its writer thread flushes on the same clock by itself (``flush_secs``), so a scalar reaches
the file within that time even when no more are logged. The events and their wall times are
the same; only when they reach the disk changes. The end of a run flushes everything.
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only


class TensorBoardLogger(LightningTensorBoardLogger):
    """``lightning.pytorch.loggers.TensorBoardLogger`` whose ``save`` flushes the event file at
    most every ``flush_every_s`` seconds (0: at every call, as Lightning's).

    Example:
        >>> import tempfile
        >>> logger = TensorBoardLogger(tempfile.mkdtemp(), name=None, version="", flush_every_s=5.0)
        >>> logger.log_metrics({"train/loss": 0.5}, step=9); logger.save()  # flushed: the first
        >>> logger.log_metrics({"train/loss": 0.4}, step=19); logger.save()  # written within 5 s
        >>> logger.finalize("success")  # flushes and closes
    """

    def __init__(self, *args: Any, flush_every_s: float = 5.0, **kwargs: Any) -> None:
        if flush_every_s < 0:
            raise ValueError(f"flush_every_s={flush_every_s}: use 0 or more seconds")
        # The writer thread's own clock (SummaryWriter's flush_secs, 120 s by default): the
        # scalars logged after the last flush by save() reach the file within the same time.
        kwargs.setdefault("flush_secs", max(1, round(flush_every_s)))
        super().__init__(*args, **kwargs)
        self.flush_every_s = flush_every_s
        self._flushed_at = float("-inf")

    @rank_zero_only
    def save(self) -> None:
        now = time.monotonic()
        if now - self._flushed_at < self.flush_every_s:
            return
        self._flushed_at = now
        super().save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._flushed_at = float("-inf")  # the last save of a run is never skipped
        super().finalize(status)
