"""``segkit-bench sweep``: Optuna sweeps of real segkit-train trials on this machine.

- **schedules**: 2 local workers run 8 trials of uneven length (``trainer.max_steps`` searched
  over 20..200), once asking for each trial as soon as a worker is free (``schedule=async``),
  once in batches that wait for their slowest trial (``schedule=batch``: Hydra's own sweeper).
- **pruning**: one worker, seeded random sampling (the same trials with and without pruning),
  the median pruner against none: compute spent until the best score is reached.
- **killed worker**: a worker is SIGKILLed mid-trial; the replacement continues the trial from
  its last checkpoint; the trial's final weights are compared with the same trial run unstopped.

Each sweep is the ``segkit-train -m hparams_search=optuna`` command as users launch it, output
to a log file, one CPU thread per worker (a worker stands for one GPU).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Small shapes runs: 8 steps an epoch, validated after each; quiet and light on logging.
TRIAL = ["data.train_size=64", "data.val_size=16", "data.test_size=16", "data.image_size=64", "data.batch_size=8",
         "data.num_workers=0", "model.base_width=8", "model.scheduler=null", "trainer.max_epochs=1000",
         "callbacks.progress_bar=null", "callbacks.model_summary=null", "callbacks.image_grid=null", "logger=csv",
         "trainer.accelerator=cpu", "trainer.devices=1"]


@dataclass
class ScheduleRun:
    """One sweep's use of its workers."""

    schedule: str
    trials: int
    wall_s: float  # the sweep command, start to end
    trial_s: float  # sum over trials of ask-to-tell seconds
    worker_s: float  # sum over workers of ready-to-exit seconds
    busy_fraction: float  # trial_s / worker_s
    max_steps: list[int] = field(default_factory=list)


@dataclass
class PruningRun:
    pruner: str
    trials: int
    pruned: int
    best: float
    compute_s: float  # all trials
    to_target_s: float | None  # compute until the best reached the target (None: never)


def sweep_command(sweep_dir: Path, *overrides: str) -> list[str]:
    script = Path(sys.executable).with_name("segkit-train")
    return [str(script), "-m", "hparams_search=optuna", f"hydra.sweep.dir={sweep_dir}", *TRIAL, *overrides]


def run_sweep(sweep_dir: Path, *overrides: str, kill: Callable[[Path], bool] | None = None) -> float:
    """Run one sweep command (output to ``<sweep_dir>.log``); its wall seconds. ``kill(sweep_dir)``
    is polled while it runs (the killed-worker run)."""
    sweep_dir.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    with open(f"{sweep_dir}.log", "w") as log:
        process = subprocess.Popen(sweep_command(sweep_dir, *overrides), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env)
        while process.poll() is None:
            time.sleep(0.5)
            if kill is not None and kill(sweep_dir):
                kill = None
    if process.returncode != 0:
        raise RuntimeError(f"the sweep in {sweep_dir} failed (exit {process.returncode}); see {sweep_dir}.log")
    return time.perf_counter() - start


def study_trials(sweep_dir: Path) -> list:
    from segkit.sweeps.storage import open_study

    return open_study("segkit", str(sweep_dir / "optuna.journal")).get_trials()


def busy_fraction(trials: list, workers: list[dict]) -> tuple[float, float]:
    """(seconds in trials, seconds the workers were up): a trial from its start to its end, a
    worker from when it was ready to ask to its exit (``.segkit/workers/worker_<k>.json``)."""
    in_trials = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete)
    up = sum(w["exit"] - w["ready"] for w in workers)
    return in_trials, up


def worker_records(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((sweep_dir / ".segkit" / "workers").glob("worker_*.json"))]


def measure_schedules(workdir: Path, n_trials: int = 8, workers: int = 2, seed: int = 3) -> list[ScheduleRun]:
    runs = []
    for schedule in ("async", "batch"):
        sweep_dir = workdir / f"schedule_{schedule}"
        wall = run_sweep(sweep_dir, f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.n_jobs={workers}",
                         f"hydra.sweeper.schedule={schedule}", "hydra.sweeper.pruner=none",
                         f"hydra.sweeper.sampler.seed={seed}", "trainer.max_steps=int(interval(20, 200))")
        trials = study_trials(sweep_dir)
        in_trials, up = busy_fraction(trials, worker_records(sweep_dir))
        runs.append(ScheduleRun(schedule, len(trials), wall, in_trials, up, in_trials / up,
                                [int(t.params["trainer.max_steps"]) for t in trials]))
    return runs


def measure_pruning(workdir: Path, n_trials: int = 16, max_steps: int = 160, seed: int = 5) -> list[PruningRun]:
    runs, studies = [], []
    for pruner in ("none", "median"):
        sweep_dir = workdir / f"pruning_{pruner}"
        run_sweep(sweep_dir, f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.pruner={pruner}",
                  # TPE's random start-up throughout: the same trials with and without pruning.
                  f"hydra.sweeper.sampler.seed={seed}", f"hydra.sweeper.sampler.n_startup_trials={n_trials}",
                  f"trainer.max_steps={max_steps}", "model.base_width=8")
        studies.append(study_trials(sweep_dir))
        runs.append(pruning_run(pruner, studies[-1]))
    for run, trials in zip(runs, studies):
        run.to_target_s = compute_to_reach(trials, runs[0].best)
    return runs


def pruning_run(pruner: str, trials: list) -> PruningRun:
    from optuna.trial import TrialState

    from segkit.sweeps.ownership import SECONDS

    complete = [t.value for t in trials if t.state == TrialState.COMPLETE]
    return PruningRun(pruner, len(trials), sum(t.state == TrialState.PRUNED for t in trials),
                      max(complete) if complete else float("nan"),
                      sum(t.system_attrs.get(SECONDS, 0.0) for t in trials), None)


def compute_to_reach(trials: list, target: float) -> float | None:
    """Compute seconds spent, in order of completion, until a complete trial scored ``target``."""
    from optuna.trial import TrialState

    from segkit.sweeps.ownership import SECONDS

    spent = 0.0
    for trial in sorted((t for t in trials if t.datetime_complete), key=lambda t: t.datetime_complete):
        spent += trial.system_attrs.get(SECONDS, 0.0)
        if trial.state == TrialState.COMPLETE and trial.value >= target - 1e-9:
            return spent
    return None


@dataclass
class KilledRun:
    trial: int
    killed_at_step: int  # of the trial's last.ckpt when its worker was killed
    continued_from_step: int
    value: float
    reference_value: float
    same_weights: bool


def measure_killed_worker(workdir: Path, victim: int = 1, every: int = 8) -> KilledRun:
    """Kill the worker of trial ``victim`` once it has a checkpoint past step 2 * ``every``."""
    import torch

    from segkit.sweeps.ownership import OWNER

    sweep_dir = workdir / "killed"
    killed: dict[str, int] = {}

    def kill(sweep: Path) -> bool:
        last = sweep / str(victim) / "checkpoints" / "last.ckpt"
        if not (sweep / "optuna.journal").exists() or not last.exists():
            return False
        step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
        if step < 2 * every:
            return False
        (trial,) = [t for t in study_trials(sweep) if t.number == victim]
        os.kill(trial.system_attrs[OWNER]["pid"], signal.SIGKILL)
        killed["step"] = step
        return True

    run_sweep(sweep_dir, "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "hydra.sweeper.pruner=none",
              "trainer.max_steps=120", f"callbacks.model_checkpoint.last_every_n_train_steps={every}", kill=kill)
    (trial,) = [t for t in study_trials(sweep_dir) if t.number == victim]
    job = sweep_dir / str(victim)
    log_text = (job / "train.log").read_text()
    resumed = int(log_text.split("resuming from", 1)[1].split("(step ", 1)[1].split(")", 1)[0])
    # The same trial, never stopped: its overrides as a plain run.
    import yaml

    overrides = [o for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
                 if not o.startswith(("hparams_search", "hydra."))]
    reference = workdir / "killed_reference"
    script = Path(sys.executable).with_name("segkit-train")
    with open(f"{reference}.log", "w") as log:
        subprocess.run([str(script), *overrides, f"hydra.run.dir={reference}"], stdout=log, stderr=subprocess.STDOUT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    got = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    want = torch.load(reference / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    same = got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    reference_value = json.loads((reference / "metrics.json").read_text())["val"]["mIoU_best"]
    return KilledRun(victim, killed.get("step", -1), resumed, float(trial.value), float(reference_value), same)
