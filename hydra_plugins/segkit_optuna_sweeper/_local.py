"""``hydra.sweeper.n_jobs=N``: N worker processes on this machine, each running the sweep
command pinned to this sweep directory (``<sweep dir>/worker.sh``), each asking for its next
trial as soon as its last one ends. A worker killed by a signal is replaced while trials remain;
the replacement continues the killed worker's trial from its checkpoint.

Each worker's output goes to ``<sweep dir>/workers/local_<i>.log``; this process logs the study's
progress.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from hydra.core.utils import JobReturn
from optuna.trial import TrialState

from segkit.atomic import atomic_path
from segkit.sweeps.results import all_trials_finished, write_results
from segkit.sweeps.storage import open_storage, storage_url

if TYPE_CHECKING:
    from .optuna_sweeper import SegkitOptunaSweeper

log = logging.getLogger(__name__)

POLL_S = 1.0
WORKER_SCRIPT = "worker.sh"
# Overrides a worker's command line sets itself (the starter's would start workers again).
PINNED_KEYS = ("hydra.sweep.dir", "hydra.sweeper.n_jobs", "hydra.sweeper.batch_size")


def worker_command(sweeper: SegkitOptunaSweeper, argv: Sequence[str] = ()) -> list[str]:
    """This process's command line as one worker of its sweep: same overrides, this sweep
    directory, one worker per process."""
    assert sweeper.sweep_dir is not None
    argv = list(argv or sys.argv)
    kept = [a for a in argv[1:] if a.lstrip("+~").split("=", 1)[0] not in PINNED_KEYS]
    return [sys.executable, argv[0], *kept, f"hydra.sweep.dir={sweeper.sweep_dir}", "hydra.sweeper.n_jobs=1",
            f"hydra.sweeper.batch_size={sweeper.batch_size}"]


def write_worker_script(sweeper: SegkitOptunaSweeper) -> Path:
    """``<sweep dir>/worker.sh``: one more worker of this sweep, from any machine sharing the
    sweep directory (``sbatch --array=0-7 --wrap 'bash <sweep dir>/worker.sh'``)."""
    assert sweeper.sweep_dir is not None
    path = sweeper.sweep_dir / WORKER_SCRIPT
    text = (f"#!/bin/sh\n# One worker of the sweep in {sweeper.sweep_dir}: run it as often, wherever and whenever "
            f"you like.\ncd {shlex.quote(os.getcwd())} && exec {shlex.join(worker_command(sweeper))} \"$@\"\n")
    with atomic_path(path) as partial:
        partial.write_text(text)
        partial.chmod(0o755)
    return path


def run_local_workers(sweeper: SegkitOptunaSweeper) -> list[Sequence[JobReturn]]:
    """Start ``sweeper.n_jobs`` workers, replace killed ones while trials remain, wait for all."""
    assert sweeper.sweep_dir is not None
    url = storage_url(sweeper.storage, sweeper.sweep_dir)
    if url is None:
        raise ValueError("hydra.sweeper.storage=memory cannot be shared by n_jobs > 1 worker processes: "
                         "leave storage unset (a journal file in the sweep directory) or give a URL")
    study = optuna.create_study(study_name=sweeper.study_name, storage=open_storage(url),
                                direction=sweeper.direction, load_if_exists=True)
    logs = sweeper.sweep_dir / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    command = worker_command(sweeper)
    pool = LocalWorkers(command, logs)
    log.info("%d workers on this machine; logs in %s; more from anywhere: %s", sweeper.n_jobs, logs,
             sweeper.sweep_dir / WORKER_SCRIPT)
    for _ in range(sweeper.n_jobs):
        pool.start()
    progress = Progress(study, sweeper.n_trials)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: pool.signal_all(signum))
    try:
        while pool.running:
            time.sleep(POLL_S)
            for killed in pool.reap():
                if not all_trials_finished(study, sweeper.n_trials):
                    log.warning("worker %d was killed by signal %d: starting another, which continues its trial",
                                killed, -pool.exit_codes[killed])
                    pool.start()
            progress.log_changes()
    except KeyboardInterrupt:
        log.warning("interrupted: waiting for the workers to save their trials (the same command continues them)")
        pool.wait_all()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    progress.log_changes()
    failed = {slot: code for slot, code in pool.exit_codes.items() if code not in (0, None)}
    if not all_trials_finished(study, sweeper.n_trials):
        raise RuntimeError(f"the sweep stopped with trials left: workers exited with {failed}; see their logs in {logs}")
    write_results(study, sweeper.sweep_dir)
    return []


class LocalWorkers:
    """Worker processes of one sweep, numbered in start order, each with its log file."""

    def __init__(self, command: list[str], logs: Path) -> None:
        self.command, self.logs = command, logs
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.exit_codes: dict[int, int | None] = {}

    @property
    def running(self) -> bool:
        return any(code is None for code in self.exit_codes.values())

    def start(self) -> int:
        slot = len(self.processes)
        with open(self.logs / f"local_{slot}.log", "ab") as out:
            self.processes[slot] = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL)
        self.exit_codes[slot] = None
        return slot

    def reap(self) -> list[int]:
        """Record the workers that ended; return those killed by a signal."""
        killed = []
        for slot, process in self.processes.items():
            if self.exit_codes[slot] is None and (code := process.poll()) is not None:
                self.exit_codes[slot] = code
                if code < 0:
                    killed.append(slot)
                elif code:
                    log.warning("worker %d exited with status %d; its log: %s", slot, code,
                                self.logs / f"local_{slot}.log")
        return killed

    def signal_all(self, signum: int) -> None:
        for slot, process in self.processes.items():
            if self.exit_codes[slot] is None:
                process.send_signal(signum)

    def wait_all(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        self.reap()


class Progress:
    """Logs the study's trial counts and best value when they change."""

    def __init__(self, study: optuna.Study, n_trials: int) -> None:
        self.study, self.n_trials, self.last = study, n_trials, ""

    def log_changes(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        counts = {state: sum(t.state == state for t in trials) for state in TrialState}
        line = ", ".join(f"{counts[s]} {s.name.lower()}" for s in TrialState if counts[s])
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            best = self.study.best_trial
            line += f"; best {best.value:.4g} (trial {best.number})"
        if line != self.last:
            log.info("trials of %d: %s", self.n_trials, line or "none yet")
            self.last = line
