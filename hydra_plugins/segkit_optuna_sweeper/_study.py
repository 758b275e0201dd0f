"""The ask-launch-tell loop of ``SegkitOptunaSweeper`` (imported only when a sweep runs)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from hydra.core.utils import JobReturn
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.trial import Trial, TrialState

from ._search_space import SearchSpace, parse_search_space

if TYPE_CHECKING:
    from .optuna_sweeper import SegkitOptunaSweeper

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
RESULTS_FILE = "optimization_results.yaml"


def run_study(sweeper: SegkitOptunaSweeper, arguments: Sequence[str]) -> list[Sequence[JobReturn]]:
    """Run the study until it has ``sweeper.n_trials`` finished trials; write the best one."""
    assert sweeper.config is not None and sweeper.hydra_context is not None and sweeper.sweep_dir is not None
    space = parse_search_space(sweeper.params, arguments, sweeper.hydra_context.config_loader)
    OmegaConf.save(sweeper.config, sweeper.sweep_dir / "multirun.yaml")
    study = open_study(sweeper.study_name, sweeper.storage_url, make_sampler(sweeper.sampler), sweeper.direction)
    done = finished(study)
    if done:
        log.info("resuming study %s: %d of %d trials done", study.study_name, done, sweeper.n_trials)
        # A seeded sampler would start its random sequence again and repeat the first trials.
        study.sampler.reseed_rng()
    returns: list[Sequence[JobReturn]] = []
    while (remaining := sweeper.n_trials - finished(study)) > 0:
        batch = [study.ask(space.distributions) for _ in range(min(sweeper.n_jobs, remaining))]
        returns.extend(run_batch(sweeper, study, space, batch))
    write_results(study, sweeper.sweep_dir)
    return returns


def open_study(name: str, storage: str | None, sampler: Any, direction: str) -> optuna.Study:
    """Create or load the study; trials that a killed sweep left RUNNING become FAIL."""
    backend = optuna.storages.get_storage(storage)
    study = optuna.create_study(
        study_name=name, storage=backend, sampler=sampler, direction=direction, load_if_exists=True
    )
    study_id = backend.get_study_id_from_name(name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = backend.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        backend.set_trial_state_values(trial_id, TrialState.FAIL)
        log.warning("study %s: trial %d was left running by an interrupted sweep: marked FAIL", name, trial.number)
    return study


def make_sampler(config: Any) -> optuna.samplers.BaseSampler | None:
    """``hydra.sweeper.sampler`` as a sampler (Hydra has usually instantiated it already)."""
    if config is None or isinstance(config, optuna.samplers.BaseSampler):
        return config
    return instantiate(config)


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_batch(
    sweeper: SegkitOptunaSweeper, study: optuna.Study, space: SearchSpace, trials: list[Trial]
) -> list[Sequence[JobReturn]]:
    """Launch the trials (job number = trial number) and tell Optuna how each went."""
    assert sweeper.launcher is not None
    launchable: list[tuple[Trial, list[str]]] = []
    for trial in trials:
        overrides = space.overrides(trial.params)
        try:
            # The launcher would raise out of the whole sweep on a config that does not compose.
            sweeper.validate_batch_is_legal([overrides])
        except Exception as e:
            fail(study, trial, f"its config does not compose: {type(e).__name__}: {e}")
        else:
            launchable.append((trial, overrides))
    returns = []
    for group in consecutive(launchable):
        results = sweeper.launcher.launch([overrides for _, overrides in group], initial_job_idx=group[0][0].number)
        for (trial, _), result in zip(group, results):
            value = objective(result, trial)
            if value is None:
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, value)
                log.info("trial %d %s: %s (best: %s)", trial.number, trial.params, value, study.best_value)
        returns.append(results)
    return returns


def consecutive(items: list[tuple[Trial, list[str]]]) -> list[list[tuple[Trial, list[str]]]]:
    """Runs of consecutive trial numbers: each is launched with its first number as job index."""
    runs: list[list[tuple[Trial, list[str]]]] = []
    for item in items:
        if runs and item[0].number == runs[-1][-1][0].number + 1:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def objective(result: JobReturn, trial: Trial) -> float | None:
    """The job's return value as a finite float, else None (after a warning)."""
    try:
        value = result.return_value  # raises the job's exception when it failed
    except Exception as e:
        log.warning("trial %d %s failed: %s: %s", trial.number, trial.params, type(e).__name__, e)
        return None
    number = as_float(value)
    if number is None or not math.isfinite(number):
        log.warning("trial %d %s returned %r, not a finite number: recorded as FAIL", trial.number, trial.params, value)
        return None
    return number


def as_float(value: Any) -> float | None:
    if value is None or isinstance(value, (bool, str, bytes)):
        return None
    try:
        return float(value)  # numbers, numpy scalars, one-element tensors
    except (TypeError, ValueError):
        return None


def fail(study: optuna.Study, trial: Trial, reason: str) -> None:
    log.warning("trial %d %s failed: %s", trial.number, trial.params, reason)
    study.tell(trial, state=TrialState.FAIL)


def write_results(study: optuna.Study, sweep_dir: Path) -> None:
    """``<sweep dir>/optimization_results.yaml`` (best params and value), written atomically;
    RuntimeError when no trial completed."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise RuntimeError(
            f"all {finished(study)} trials of Optuna study {study.study_name!r} failed; "
            f"see the logs in the job directories {sweep_dir}/<trial number>/"
        )
    best = study.best_trial
    results = OmegaConf.create({"name": "optuna", "best_params": best.params, "best_value": best.value})
    path = sweep_dir / RESULTS_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(OmegaConf.to_yaml(results))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("best value %s (trial %d, %s); written to %s", best.value, best.number, best.params, path)
