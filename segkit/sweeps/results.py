"""``<sweep dir>/optimization_results.yaml``: the best trial of a finished study.

Example:
    >>> import tempfile, optuna
    >>> study = optuna.create_study(direction="maximize")
    >>> study.enqueue_trial({"lr": 0.1}); study.optimize(lambda t: t.suggest_float("lr", 0, 1), n_trials=1)
    >>> path = write_results(study, Path(tempfile.mkdtemp()))
    >>> print(path.read_text().strip())
    name: optuna
    best_params:
      lr: 0.1
    best_value: 0.1
"""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from segkit.atomic import atomic_path

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


def all_trials_finished(study: optuna.Study, n_trials: int) -> bool:
    """Whether the study has its ``n_trials`` trials and every one has ended (complete, pruned or failed)."""
    trials = study.get_trials(deepcopy=False)
    return len(trials) >= n_trials and all(t.state.is_finished() for t in trials)


def write_results(study: optuna.Study, sweep_dir: Path) -> Path:
    """Write the best params and value atomically; RuntimeError when no trial completed."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise RuntimeError(
            f"none of the {len(study.get_trials(deepcopy=False))} trials of Optuna study {study.study_name!r} "
            f"completed; see the logs in the job directories {sweep_dir}/<trial number>/"
        )
    best = study.best_trial
    results = OmegaConf.create({"name": "optuna", "best_params": best.params, "best_value": best.value})
    path = sweep_dir / RESULTS_FILE
    with atomic_path(path) as partial:
        partial.write_text(OmegaConf.to_yaml(results))
    log.info("best value %s (trial %d, %s); written to %s", best.value, best.number, best.params, path)
    return path
