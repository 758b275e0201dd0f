"""``hydra/sweeper=segkit_optuna``: an Optuna study whose trials are Hydra jobs, run by workers
that each ask for their next trial as soon as the last one ends.

Every process running the sweep command with the same ``hydra.sweep.dir`` is a worker of one
study, stored by default in ``<sweep dir>/optuna.journal`` (Optuna's JournalStorage, safe on NFS):
``hydra.sweeper.n_jobs=N`` starts N workers on this machine, and ``<sweep dir>/worker.sh`` adds
one from anywhere (a SLURM array), at any time. Trials that fail, return NaN or are pruned are
recorded so and the study goes on; a trial whose worker was killed or preempted is continued
from its own checkpoint by the next worker. Needs ``optuna>=4``, imported only when a sweep runs
(Hydra imports this module in every application, to find its plugins).

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
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

DIRECTIONS = ("maximize", "minimize")
SCHEDULES = ("async", "batch")


@dataclass
class SegkitOptunaSweeperConf:
    """``hydra.sweeper`` of ``hydra/sweeper=segkit_optuna``."""

    _target_: str = "hydra_plugins.segkit_optuna_sweeper.optuna_sweeper.SegkitOptunaSweeper"
    direction: str = "maximize"
    study_name: str = "segkit"
    # None: <sweep dir>/optuna.journal; "memory": not stored; a URL with "://": Optuna's RDB
    # storage (postgresql://..., sqlite:///...); another path: a journal file there.
    storage: Optional[str] = None
    # Trials of the whole study, however many workers run them (a resumed study runs the rest).
    n_trials: int = 20
    # Worker processes this command starts on this machine (1: this process is the worker).
    n_jobs: int = 1
    # async: a worker asks for its next trial as soon as its last one ends. batch: it waits until
    # the batch_size trials asked together have all ended (Hydra's own Optuna sweeper does so).
    schedule: str = "async"
    batch_size: Optional[int] = None  # None: n_jobs
    # A config for hydra.utils.instantiate, e.g. {_target_: optuna.samplers.TPESampler, seed: 1};
    # worker k of a sweep gets seed + k. None: Optuna's default sampler.
    sampler: Any = None
    # median | successive_halving | hyperband | none, or {_target_: optuna.pruners.<Pruner>, ...}.
    pruner: Any = "none"
    # A worker refreshes its trial's heartbeat this often; a trial whose worker ran on another host
    # and whose heartbeat is older than grace_s is continued by another worker.
    heartbeat_s: float = 60.0
    grace_s: float = 600.0
    # Search space in Hydra's override grammar, e.g. {model.optimizer.lr: "tag(log, interval(1e-4, 1e-2))"}.
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="segkit_optuna", node=SegkitOptunaSweeperConf, provider="segkit"
)


class SegkitOptunaSweeper(Sweeper):
    """Runs this process's workers of the study (:mod:`._study`, :mod:`._local`)."""

    def __init__(
        self,
        direction: str,
        study_name: str,
        storage: Optional[str],
        n_trials: int,
        n_jobs: int,
        schedule: str,
        batch_size: Optional[int],
        sampler: Any,
        pruner: Any,
        heartbeat_s: float,
        grace_s: float,
        params: Optional[Mapping[str, str]],
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"hydra.sweeper.direction must be one of {DIRECTIONS}, not {direction!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"hydra.sweeper.schedule must be one of {SCHEDULES}, not {schedule!r}")
        if n_trials < 1 or n_jobs < 1 or (batch_size is not None and batch_size < 1):
            raise ValueError(f"hydra.sweeper.n_trials, n_jobs and batch_size must be >= 1, not {n_trials}, "
                             f"{n_jobs} and {batch_size}")
        self.direction = direction
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.schedule = schedule
        self.batch_size = batch_size or n_jobs
        self.heartbeat_s = heartbeat_s
        self.grace_s = grace_s
        self.params = {str(key): str(value) for key, value in (params or {}).items()}
        # Hydra has instantiated sampler and pruner (recursive instantiation); what workers need
        # are their configs, taken from the composed config in setup().
        self.sampler_config: Any = None
        self.pruner_spec: Any = pruner if isinstance(pruner, str) or pruner is None else None
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher: Optional[Launcher] = None
        self.sweep_dir: Optional[Path] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins
        from omegaconf import OmegaConf

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        self.sampler_config = config.hydra.sweeper.get("sampler")
        pruner = config.hydra.sweeper.get("pruner")
        self.pruner_spec = OmegaConf.to_container(pruner) if OmegaConf.is_config(pruner) else pruner

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        from ._study import run_study

        return run_study(self, arguments)
