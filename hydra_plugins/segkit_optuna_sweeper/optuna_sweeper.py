"""``hydra/sweeper=segkit_optuna``: an Optuna study whose trials are Hydra jobs.

Failed, NaN and non-numeric trials are recorded as FAIL and the study goes on. By default the
study lives in ``<sweep dir>/optuna.db`` (SQLite): running the same command again with
``hydra.sweep.dir=<that dir>`` continues a killed study. Needs ``optuna>=3``, imported only when
a sweep runs (Hydra imports this module in every application, to find its plugins).

Example (``app.py`` is any ``@hydra.main`` application that returns a number)::

    python app.py -m hydra/sweeper=segkit_optuna hydra.sweeper.n_trials=10 \\
        lr='tag(log, interval(1e-4, 1e-1))' depth=2,3 seed=1

searches ``lr`` (log-uniform) and ``depth`` (a choice) and passes ``seed=1`` to every trial; a
search space kept in a config goes under ``hydra.sweeper.params`` (see
``conf/hparams_search/optuna.yaml``).
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, where dataclasses looks string annotations up.
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

DIRECTIONS = ("maximize", "minimize")


@dataclass
class SegkitOptunaSweeperConf:
    """``hydra.sweeper`` of ``hydra/sweeper=segkit_optuna``."""

    _target_: str = "hydra_plugins.segkit_optuna_sweeper.optuna_sweeper.SegkitOptunaSweeper"
    direction: str = "maximize"
    study_name: str = "segkit"
    # None: sqlite:///<sweep dir>/optuna.db; "memory": not stored; anything else: an Optuna URL.
    storage: str | None = None
    # Finished trials (complete, failed or pruned) of the whole study; a resumed one runs the rest.
    n_trials: int = 20
    # Trials launched together through Hydra's launcher.
    n_jobs: int = 1
    # A config for hydra.utils.instantiate, e.g. {_target_: optuna.samplers.TPESampler, seed: 1};
    # None: Optuna's default sampler.
    sampler: Any = None
    # Search space in Hydra's override grammar, e.g. {model.optimizer.lr: "tag(log, interval(1e-4, 1e-2))"}.
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="segkit_optuna", node=SegkitOptunaSweeperConf, provider="segkit"
)


class SegkitOptunaSweeper(Sweeper):
    """Asks Optuna for ``n_jobs`` trials at a time, launches them as Hydra jobs numbered by their
    trial number, and tells Optuna each job's return value (or FAIL)."""

    def __init__(
        self,
        direction: str,
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        sampler: Any,
        params: Mapping[str, str] | None,
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"hydra.sweeper.direction must be one of {DIRECTIONS}, not {direction!r}")
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_trials and n_jobs must be >= 1, not {n_trials} and {n_jobs}")
        self.direction = direction
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.sampler = sampler  # usually already instantiated by Hydra (recursive instantiation)
        self.params = {str(key): str(value) for key, value in (params or {}).items()}
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.sweep_dir: Path | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)

    @property
    def storage_url(self) -> str | None:
        """The storage handed to Optuna: None is in memory."""
        if self.storage is None:
            assert self.sweep_dir is not None, "setup() first"
            return f"sqlite:///{self.sweep_dir / 'optuna.db'}"
        return None if self.storage == "memory" else self.storage

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        from ._study import run_study

        return run_study(self, arguments)
