"""A tiny Hydra application for the Optuna sweeper's tests (tests/test_optuna_sweeper.py).

Each call appends a JSON line to ``calls`` and writes ``task.json`` in its job directory; it
sleeps ``x * sleep_per_x`` seconds, reports ``report_steps`` intermediate values (pruned: raises
optuna.TrialPruned), returns ``10 * x`` for ``mode=ok``, raises for ``raise``, returns NaN for ``return_nan`` and None
for ``return_none``, and SIGKILLs its own process on call ``kill_at_call`` unless ``kill_marker`` exists.

    python tests/optuna_app.py -m hydra/sweeper=segkit_optuna hydra.sweep.dir=/tmp/s \\
        calls=/tmp/s.jsonl x='interval(0, 1)' mode=ok,raise
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from optuna.distributions import BaseDistribution, CategoricalDistribution

from segkit.sweeps.trial_link import current_trial


@dataclass
class AppConfig:
    x: float = 0.5
    mode: str = "ok"
    calls: str = "calls.jsonl"
    kill_at_call: int = 0
    kill_marker: str = "killed.marker"
    # Sleep x * sleep_per_x seconds (trials of uneven length).
    sleep_per_x: float = 0.0
    # Report x * step / report_steps at steps 1..report_steps to the sweep's trial; pruned: raise.
    report_steps: int = 0


ConfigStore.instance().store(name="optuna_app", node=AppConfig)


class CyclingSampler(optuna.samplers.BaseSampler):
    """Deterministic: trial n takes choice ``n % len(choices)`` and a float spread over its range,
    so a short study surely meets every choice."""

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str, distribution: Any) -> Any:
        if isinstance(distribution, CategoricalDistribution):
            return distribution.choices[trial.number % len(distribution.choices)]
        fraction = (0.1 + 0.618 * trial.number) % 1.0
        return distribution.low + fraction * (distribution.high - distribution.low)


@hydra.main(version_base="1.3", config_path=None, config_name="optuna_app")
def main(cfg: AppConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    record = {"pid": os.getpid(), "job": hydra_cfg.job.num, "x": cfg.x, "mode": cfg.mode}
    Path(hydra_cfg.runtime.output_dir, "task.json").write_text(json.dumps(record))
    with open(cfg.calls, "a") as f:
        f.write(json.dumps(record) + "\n")
    n_calls = len(Path(cfg.calls).read_text().splitlines())
    if n_calls == cfg.kill_at_call and not Path(cfg.kill_marker).exists():
        Path(cfg.kill_marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(cfg.x * cfg.sleep_per_x)
    trial = current_trial() if cfg.report_steps else None
    for step in range(1, cfg.report_steps + 1):
        trial.report(cfg.x * step / cfg.report_steps, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"at step {step}")
    if cfg.mode == "raise":
        raise ValueError(f"mode=raise (x={cfg.x})")
    if cfg.mode == "return_nan":
        return float("nan")
    if cfg.mode == "return_none":
        return None
    return 10 * cfg.x


if __name__ == "__main__":
    main()
