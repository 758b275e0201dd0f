"""Lightning's TensorBoard logger, its events written by the thread that logs them.

torch's ``SummaryWriter`` hands each event to a writer thread of TensorBoard's, which wakes for
it and appends it to the event file with an open, a write and a close, each letting go of the
interpreter lock. On a machine with few cores every such wake is a handful of context switches
taken from the training loop and from torch's threads: about 1.8 a step in a tiny run that logs
the loss, the learning rate and the epoch every 10 steps (docs/overhead-log.md, "Threads beside
the step"). Lightning also calls ``logger.save()`` after each ``log_metrics``, and its flush made
the training thread wait until that thread had drained its queue: about 2 ms of each logged
step on the 2-core CPU.

:class:`TensorBoardLogger` writes each event in the calling thread to an event file it keeps
open: one ``write`` to the operating system per event (a process killed after it loses
nothing), no thread, and nothing to wait for at a flush. A record costs tens of microseconds,
about three records every ``trainer.log_every_n_steps`` steps. Events, steps, wall times and the
file's format are TensorBoard's own (its ``RecordWriter``); ``tensorboard --logdir`` reads them
as any other run. A dict of scalars (``add_scalars``, one run per key) still goes through
torch's own writer, which segkit's training does not log.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from typing import BinaryIO

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.record_writer import RecordWriter
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.writer import FileWriter

_FILE_NUMBERS = itertools.count()  # one process may open several event files in one second


class EventFileInThread:
    """TensorBoard's ``EventFileWriter``, writing each event in the calling thread.

    Example:
        >>> import tempfile
        >>> events = EventFileInThread(tempfile.mkdtemp())
        >>> events.add_event(event_pb2.Event(step=3, wall_time=time.time())); events.close()
    """

    def __init__(self, logdir: str, filename_suffix: str = "") -> None:
        self._logdir = logdir
        self._filename_suffix = filename_suffix
        self._records: RecordWriter | None = None
        self.reopen()

    def get_logdir(self) -> str:
        return self._logdir

    def add_event(self, event: event_pb2.Event) -> None:
        if self._records is None:
            raise OSError(f"the event file in {self._logdir} is closed")
        self._records.write(event.SerializeToString())

    def flush(self) -> None:
        """Nothing to do: every event was written to the operating system as it came."""

    def close(self) -> None:
        if self._records is not None:
            self._records.close()
            self._records = None

    def reopen(self) -> None:
        """Start a new event file (as TensorBoard's writer does) if this one was closed."""
        if self._records is not None:
            return
        os.makedirs(self._logdir, exist_ok=True)
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
                f".segkit{next(_FILE_NUMBERS)}{self._filename_suffix}")
        # Unbuffered: one write() per record, so nothing waits in this process to be flushed.
        file: BinaryIO = open(os.path.join(self._logdir, name), "ab", buffering=0)  # noqa: SIM115 (closed by close())
        self._records = RecordWriter(file)
        self.add_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))


class _FileWriterInThread(FileWriter):
    # torch's FileWriter, on an EventFileInThread instead of TensorBoard's threaded writer.
    def __init__(self, log_dir: str, filename_suffix: str = "") -> None:
        self.event_writer = EventFileInThread(str(log_dir), filename_suffix)  # all FileWriter.__init__ does


class SummaryWriterInThread(SummaryWriter):
    """torch's ``SummaryWriter`` whose events are written by the calling thread (no writer thread).

    Example:
        >>> import tempfile
        >>> writer = SummaryWriterInThread(tempfile.mkdtemp())
        >>> writer.add_scalar("train/loss", 0.5, 9); writer.close()
    """

    def _get_file_writer(self) -> FileWriter:
        # As torch's own (it (re)creates the file writer after close()), with the writer above.
        if self.all_writers is None or self.file_writer is None:
            self.file_writer = _FileWriterInThread(self.log_dir, self.filename_suffix)
            self.all_writers = {self.file_writer.get_logdir(): self.file_writer}
            if self.purge_step is not None:
                self.file_writer.add_event(event_pb2.Event(step=self.purge_step, file_version="brain.Event:2"))
                self.file_writer.add_event(event_pb2.Event(
                    step=self.purge_step, session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
                self.purge_step = None
        return self.file_writer


class TensorBoardLogger(LightningTensorBoardLogger):
    """``lightning.pytorch.loggers.TensorBoardLogger`` on a :class:`SummaryWriterInThread`.

    Example:
        >>> import tempfile
        >>> logger = TensorBoardLogger(tempfile.mkdtemp(), name=None, version="")
        >>> logger.log_metrics({"train/loss": 0.5}, step=9); logger.save()  # written as it is logged
        >>> type(logger.experiment).__name__
        'SummaryWriterInThread'
        >>> logger.finalize("success")
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> SummaryWriter:
        # Lightning's property, constructing the writer above instead of torch's.
        if self._experiment is None:
            assert rank_zero_only.rank == 0, "tried to init log dirs in non global_rank=0"
            if self.root_dir:
                self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = SummaryWriterInThread(log_dir=self.log_dir, **self._kwargs)
        return self._experiment

