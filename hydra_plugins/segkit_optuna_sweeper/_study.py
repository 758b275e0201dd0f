"""A sweep worker: ask the shared study for a trial as soon as the last one ends, run it as a
Hydra job, tell the study how it went (imported only when a sweep runs). On exit a worker
leaves ``<sweep dir>/.segkit/workers/worker_<k>.json`` (when it was ready, when it left, its
trials): what ``segkit-bench sweep`` measures the workers' busy fraction from.

Every process running the sweep command with the same ``hydra.sweep.dir`` is a worker of one
study (``<sweep dir>/worker.sh`` is that command): on this machine (``hydra.sweeper.n_jobs=N``
starts N, :mod:`._local`), in a SLURM array, or both, joining at any time. Before asking for a
new trial a worker continues any trial whose worker is gone (:mod:`segkit.sweeps.ownership`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf
from optuna.storages.journal import JournalFileOpenLock
from optuna.trial import Trial, TrialState

from segkit.atomic import atomic_path
from segkit.sweeps import ownership
from segkit.sweeps.pruners import make_pruner
from segkit.sweeps.results import all_trials_finished, write_results
from segkit.sweeps.storage import open_storage, storage_url
from segkit.sweeps.trial_link import trial_environment

from ._local import run_local_workers, write_worker_script
from ._search_space import SearchSpace, parse_search_space

if TYPE_CHECKING:
    from .optuna_sweeper import SegkitOptunaSweeper

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
# Seconds between checks while a batch (schedule=batch) waits for its slowest trial.
BATCH_POLL_S = 0.5


def run_study(sweeper: SegkitOptunaSweeper, arguments: Sequence[str]) -> list[Sequence[JobReturn]]:
    """Run this process's part of the sweep: as a worker, or with ``n_jobs > 1`` as the starter of
    that many local workers; write the best trial when the study has all its trials."""
    assert sweeper.config is not None and sweeper.hydra_context is not None and sweeper.sweep_dir is not None
    space = parse_search_space(sweeper.params, arguments, sweeper.hydra_context.config_loader)
    with atomic_path(sweeper.sweep_dir / "multirun.yaml") as partial:
        OmegaConf.save(sweeper.config, partial)
    write_worker_script(sweeper)
    if sweeper.n_jobs > 1:
        return run_local_workers(sweeper)
    return SweepWorker(sweeper, space).run()


def make_sampler(config: Any, worker: int) -> optuna.samplers.BaseSampler | None:
    """``hydra.sweeper.sampler`` for worker number ``worker``: a seeded sampler gets ``seed +
    worker``, so that concurrent workers do not propose the same trials, and a one-worker sweep
    proposes the same trials as ever."""
    if config is None:
        return None
    from hydra.utils import instantiate

    seed = config.get("seed") if hasattr(config, "get") else None
    return instantiate(config, **({"seed": int(seed) + worker} if seed is not None else {}))


class SweepWorker:
    """One worker: continue orphaned trials, else ask a new one, until the study has ``n_trials``."""

    def __init__(self, sweeper: SegkitOptunaSweeper, space: SearchSpace) -> None:
        assert sweeper.sweep_dir is not None
        self.sweeper, self.space = sweeper, space
        self.shared = sweeper.sweep_dir / ".segkit"
        self.url = storage_url(sweeper.storage, sweeper.sweep_dir)
        self.index = register_worker(self.shared / "workers")
        self.study = optuna.create_study(
            study_name=sweeper.study_name, storage=open_storage(self.url), direction=sweeper.direction,
            sampler=make_sampler(sweeper.sampler_config, self.index), pruner=make_pruner(sweeper.pruner_spec),
            load_if_exists=True,
        )
        self.storage = self.study._storage
        self.ask_lock = JournalFileOpenLock(str(self.shared / "ask"))  # the file ask.lock

    def run(self) -> list[Sequence[JobReturn]]:
        done = sum(t.state in FINISHED for t in self.study.get_trials(deepcopy=False))
        log.info("sweep worker %d of study %s (%s): %d of %d trials finished", self.index, self.study.study_name,
                 self.url or "in memory", done, self.sweeper.n_trials)
        returns = []
        record = {"worker": self.index, **ownership.this_process(), "ready": time.time(), "exit": None, "trials": []}
        try:
            while (trial := self.next_trial()) is not None:
                record["trials"].append(trial.number)
                returns.append(self.run_trial(trial))
        finally:
            record["exit"] = time.time()
            with atomic_path(self.shared / "workers" / f"worker_{self.index}.json") as partial:
                partial.write_text(json.dumps(record) + "\n")
        if all_trials_finished(self.study, self.sweeper.n_trials):
            write_results(self.study, self.sweeper.sweep_dir)
        return returns

    def next_trial(self) -> Trial | None:
        """An orphaned trial to continue, else a new one; None once the study has all its trials."""
        while True:
            trial = self.continue_orphan()
            if trial is not None:
                return trial
            waiting, trial = self.ask()
            if not waiting:
                return trial
            time.sleep(BATCH_POLL_S)

    def continue_orphan(self) -> Trial | None:
        now = time.time()
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            attrs = frozen.system_attrs
            started = frozen.datetime_start.timestamp() if frozen.datetime_start else now
            if not ownership.is_orphan(attrs, started, now, self.sweeper.grace_s):
                continue
            continuation = int(attrs.get(ownership.CONTINUATIONS, 0)) + 1
            if not ownership.claim(self.shared / "claims", f"trial_{frozen.number}.{continuation}"):
                continue
            # Owner first: a worker looking meanwhile sees a live owner, or fails the same claim.
            self.storage.set_trial_system_attr(frozen._trial_id, ownership.OWNER, ownership.this_process())
            self.storage.set_trial_system_attr(frozen._trial_id, ownership.PREEMPTED, False)
            self.storage.set_trial_system_attr(frozen._trial_id, ownership.CONTINUATIONS, continuation)
            log.warning("continuing trial %d %s in %s: its worker %s stopped", frozen.number, frozen.params,
                        self.job_dir(frozen.number), attrs.get(ownership.OWNER))
            return Trial(self.study, frozen._trial_id)
        return None

    def ask(self) -> tuple[bool, Trial | None]:
        """(waiting, trial): a new trial, or none left (False, None), or a batch to wait for (True, None)."""
        self.ask_lock.acquire()
        try:
            trials = self.study.get_trials(deepcopy=False)
            if len(trials) >= self.sweeper.n_trials:
                return False, None
            if self.sweeper.schedule == "batch":
                start = len(trials) // self.sweeper.batch_size * self.sweeper.batch_size
                if any(t.state not in FINISHED for t in trials[:start]):
                    return True, None
            trial = self.study.ask(self.space.distributions)
            self.storage.set_trial_system_attr(trial._trial_id, ownership.OWNER, ownership.this_process())
            return False, trial
        finally:
            self.ask_lock.release()

    def job_dir(self, number: int) -> Path:
        assert self.sweeper.sweep_dir is not None
        return self.sweeper.sweep_dir / str(number)

    def run_trial(self, trial: Trial) -> Sequence[JobReturn]:
        """Launch the trial's job (job number = trial number, so its directory is
        ``<sweep dir>/<number>``) and tell the study its value, PRUNED or FAIL."""
        assert self.sweeper.launcher is not None
        overrides = self.space.overrides(trial.params)
        try:
            # The launcher would raise out of the whole sweep on a config that does not compose.
            self.sweeper.validate_batch_is_legal([overrides])
        except Exception as e:
            log.warning("trial %d %s failed: its config does not compose: %s: %s", trial.number, trial.params,
                        type(e).__name__, e)
            self.study.tell(trial, state=TrialState.FAIL)
            return []
        started = time.monotonic()
        results: Sequence[JobReturn] = []
        stopped: SystemExit | None = None
        try:
            with ownership.Heartbeat(self.storage, trial._trial_id, self.sweeper.heartbeat_s), \
                    trial_environment(self.url, self.study.study_name, trial.number, self.sweeper.pruner_spec):
                results = self.sweeper.launcher.launch([overrides], initial_job_idx=trial.number)
        except SystemExit as stop:  # segkit's Preemption (128 + signal), or a task's own exit
            stopped = stop
        finally:
            self.add_seconds(trial, time.monotonic() - started)
        if stopped is not None and isinstance(stopped.code, int) and stopped.code > 128:
            self.storage.set_trial_system_attr(trial._trial_id, ownership.PREEMPTED, True)
            log.warning("trial %d stopped by signal %d: the next worker of this sweep continues it from %s",
                        trial.number, stopped.code - 128, self.job_dir(trial.number))
            raise stopped
        if stopped is not None:
            log.warning("trial %d %s exited with status %s: recorded as FAIL", trial.number, trial.params, stopped.code)
            self.study.tell(trial, state=TrialState.FAIL)
            return results
        self.tell(trial, results[0])
        return results

    def add_seconds(self, trial: Trial, seconds: float) -> None:
        spent = self.storage.get_trial_system_attrs(trial._trial_id).get(ownership.SECONDS, 0.0)
        self.storage.set_trial_system_attr(trial._trial_id, ownership.SECONDS, float(spent) + seconds)

    def tell(self, trial: Trial, result: JobReturn) -> None:
        try:
            value = result.return_value  # raises the job's exception when it failed
        except optuna.TrialPruned:
            self.study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d %s pruned", trial.number, trial.params)
            return
        except Exception as e:
            log.warning("trial %d %s failed: %s: %s", trial.number, trial.params, type(e).__name__, e)
            self.study.tell(trial, state=TrialState.FAIL)
            return
        number = as_float(value)
        if number is None or not math.isfinite(number):
            log.warning("trial %d %s returned %r, not a finite number: recorded as FAIL", trial.number, trial.params, value)
            self.study.tell(trial, state=TrialState.FAIL)
            return
        self.study.tell(trial, number)
        log.info("trial %d %s: %s (best: %s)", trial.number, trial.params, number, self.study.best_value)


def register_worker(workers_dir: Path) -> int:
    """The lowest worker number no worker of this sweep took yet (claimed with ``O_EXCL``)."""
    workers_dir.mkdir(parents=True, exist_ok=True)
    number = 0
    while not ownership.claim(workers_dir, f"worker_{number}"):
        number += 1
    return number


def as_float(value: Any) -> float | None:
    if value is None or isinstance(value, (bool, str, bytes)):
        return None
    try:
        return float(value)  # numbers, numpy scalars, one-element tensors
    except (TypeError, ValueError):
        return None

