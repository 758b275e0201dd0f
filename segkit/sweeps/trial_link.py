"""How a trial's process finds its Optuna trial: the sweep worker names it in an environment
variable, so the training run (and its DDP ranks, which inherit the environment) can report
intermediate values and ask whether to stop, whatever launches it.

Example (what a Hydra task of a segkit sweep can do; segkit-train's pruning callback does it)::

    trial = current_trial()          # None outside a sweep
    if trial is not None:
        trial.report(score, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

ENV = "SEGKIT_OPTUNA_TRIAL"


@contextmanager
def trial_environment(storage: str | None, study_name: str, number: int, pruner: Any) -> Iterator[None]:
    """Name the trial in this process's environment while the block runs (the trial's job)."""
    if isinstance(pruner, Mapping):
        pruner = dict(pruner)
    previous = os.environ.get(ENV)
    os.environ[ENV] = json.dumps({"storage": storage, "study": study_name, "trial": number, "pruner": pruner})
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous


def trial_in_environment() -> dict[str, Any] | None:
    """What :func:`trial_environment` set, or None outside a sweep trial."""
    text = os.environ.get(ENV)
    return json.loads(text) if text else None


def current_trial() -> optuna.Trial | None:
    """The running trial of this process's sweep job (opened from its storage), or None.

    None too for a study kept in memory: another process cannot reach it.
    """
    link = trial_in_environment()
    if link is None or link["storage"] is None:
        return None
    import optuna

    from segkit.sweeps.pruners import make_pruner
    from segkit.sweeps.storage import open_study

    study = open_study(link["study"], link["storage"], pruner=make_pruner(link["pruner"]))
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, link["trial"])
    return optuna.Trial(study, trial_id)
