"""``hydra.sweeper.pruner``: which Optuna pruner stops unpromising trials early.

``median`` stops a trial whose value at a step is below the median of earlier trials at that
step; ``successive_halving`` and ``hyperband`` keep the best fraction of trials at each rung;
``none`` never stops one. Optuna's defaults throughout (median: the first 5 trials run whole);
a dict with ``_target_`` (e.g. ``{_target_: optuna.pruners.MedianPruner, n_startup_trials: 2}``)
chooses any pruner and its settings.

Example:
    >>> type(make_pruner("median")).__name__, type(make_pruner(None)).__name__
    ('MedianPruner', 'NopPruner')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}


def make_pruner(spec: str | Mapping[str, Any] | optuna.pruners.BasePruner | None) -> optuna.pruners.BasePruner:
    """The pruner a ``hydra.sweeper.pruner`` value names; ValueError for an unknown name."""
    if spec is None:
        return optuna.pruners.NopPruner()
    if isinstance(spec, optuna.pruners.BasePruner):
        return spec
    if isinstance(spec, Mapping):
        from hydra.utils import instantiate

        return instantiate(dict(spec))
    if spec not in PRUNERS:
        raise ValueError(f"hydra.sweeper.pruner={spec!r}: choose one of {', '.join(PRUNERS)} "
                         "or give {_target_: optuna.pruners.<Pruner>, ...}")
    return PRUNERS[spec]()
