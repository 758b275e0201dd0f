"""A run directory belongs to one run, and no file a command reads names foreign code: a Hydra
callback that checks both before anything is written.

Hydra writes ``<run dir>/.hydra/config.yaml`` and the log file as a job starts, before the task
runs, so the check must come earlier: Hydra's ``on_run_start`` callback (``conf/hydra/default.yaml``),
called once the config is composed and before the run directory is touched.

- ``segkit-train`` with ``ckpt_path=auto`` (or ``last``) in a directory that holds another run's
  checkpoint resumes it only if what defines the run is the same: ``model`` (loss included),
  ``data`` and ``seed``, and the trainer settings that change what a step computes. Trainer
  limits (steps, epochs, time, validation cadence) may change, so a run can be extended.
- ``segkit-eval``, ``-predict`` and ``-export`` never write into a directory another command's
  run owns, a training run's above all (its ``.hydra/config.yaml`` is what eval reads).

The checkpoint a command is given (``ckpt_path=``) is read here too, as plain data: a damaged or
foreign file, or one naming classes other than segkit's, is refused before the run directory
exists. So is a training run's saved config that segkit-eval would instantiate. segkit-eval and
-predict may be given several (a list or a glob pattern: an ensemble): each is checked so, and
models that disagree on classes or input channels are refused.

Multirun jobs get their directories from the sweep (``hydra.sweep.dir``), one per job, and are
not checked here.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from segkit.errors import SegkitError
from segkit.training.run_dir import RunDirectory

# What a run is: its model (loss included), data, seed and weight averaging (callbacks.ema: the
# weights its checkpoints hold).
DEFINING_KEYS = ("model", "data", "seed", "callbacks.ema")
# Trainer settings that change what the run's steps compute; the others (limits, validation
# cadence, logging, devices) may differ between a run and its resumption.
DEFINING_TRAINER_KEYS = ("accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm", "precision")
# How data is loaded, not which: free to change on a resume.
LOADING_KEYS = ("num_workers", "pin_memory", "persistent_workers")
# The commands that take several checkpoints (an ensemble).
ENSEMBLE_COMMANDS = ("eval", "predict")


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}.{key}"))
        return flat or {prefix: {}}
    return {prefix: node}


def defining_values(config: DictConfig) -> dict[str, Any]:
    """The dotted keys and (unresolved) values that define a training run."""
    values: dict[str, Any] = {}
    for key in DEFINING_KEYS:
        node = OmegaConf.select(config, key)
        values.update(_flatten(OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node, key))
    for key in DEFINING_TRAINER_KEYS:
        values[f"trainer.{key}"] = OmegaConf.select(config, f"trainer.{key}")
    return {key: value for key, value in values.items() if key.rsplit(".", 1)[-1] not in LOADING_KEYS}


def first_difference(saved: DictConfig, new: DictConfig) -> tuple[str, Any, Any] | None:
    """``(key, saved value, new value)`` of the first key that defines the run and differs."""
    before, after = defining_values(saved), defining_values(new)
    for key in sorted(before.keys() | after.keys()):
        # Unset reads as null: a key a later segkit added with a null default (data.folds) leaves
        # a run made before it resumable.
        old, now = before.get(key), after.get(key)
        if old != now:
            return key, old, now
    return None


def command_of(config: DictConfig) -> str:
    """The segkit command a composed config is for (``train``, ``eval``, ...): Hydra's config
    name (``task_name`` may be renamed, e.g. by ``debug=...``)."""
    return str(OmegaConf.select(config, "hydra.job.config_name", default=None) or config.get("task_name"))


def _saved_command(run_dir: RunDirectory, saved: DictConfig) -> str:
    try:
        return command_of(OmegaConf.merge(saved, OmegaConf.load(run_dir.hydra_config_path)))
    except (OSError, yaml.YAMLError, OmegaConfBaseException):
        return str(saved.get("task_name"))


def check_run_directory(config: DictConfig) -> None:
    """Refuse (:class:`SegkitError`) a command that would take over another run's directory."""
    run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))
    run = RunDirectory(run_dir)
    saved_path = run.config_path
    if not saved_path.is_file():
        return
    task = command_of(config)
    try:
        saved = OmegaConf.load(saved_path)
    except (OSError, yaml.YAMLError, OmegaConfBaseException):
        raise SegkitError(f"hydra.run.dir={run_dir}: its .hydra/config.yaml is unreadable; choose a new hydra.run.dir") from None
    before = _saved_command(run, saved)
    if before != task:
        raise SegkitError(
            f"hydra.run.dir={run_dir} holds a segkit-{before} run; segkit-{task} writes into a directory of "
            "its own: leave hydra.run.dir unset or choose a new one"
        )
    if task != "train" or config.get("ckpt_path") not in ("auto", "last") or run.latest_checkpoint() is None:
        return
    difference = first_difference(saved, config)
    if difference is not None:
        key, old, new = difference
        raise SegkitError(
            f"hydra.run.dir={run_dir} holds a run with {key}={old}, not {new}: ckpt_path={config.ckpt_path} would "
            "resume that run; choose a new hydra.run.dir, or ckpt_path=null to start afresh there (replacing its checkpoints)"
        )


def check_named_files(config: DictConfig) -> None:
    """Refuse a ``ckpt_path`` that is not a readable segkit checkpoint naming segkit's classes
    (``auto``/``last``/``null`` are segkit-train's own), or for segkit-eval and -predict a list
    or pattern of them, one of which is not, or whose models disagree on classes or channels
    (:func:`segkit.models.loading.check_ensemble`); and for segkit-eval a training run config
    beside the (first) checkpoint that names other code (:mod:`segkit.trust`)."""
    from segkit.models.loading import (  # torch: only when needed
        check_ensemble,
        checkpoint_module_class,
        checkpoint_paths,
        read_checkpoint,
    )
    from segkit.trust import check_config_targets

    ckpt_path = None if OmegaConf.is_missing(config, "ckpt_path") else OmegaConf.select(config, "ckpt_path")
    command = command_of(config)
    if isinstance(ckpt_path, ListConfig) and command not in ENSEMBLE_COMMANDS:
        raise SegkitError(f"ckpt_path={list(ckpt_path)}: segkit-{command} takes one checkpoint; only segkit-eval "
                          "and segkit-predict take several (an ensemble)")
    if not isinstance(ckpt_path, (str, ListConfig)) or ckpt_path in ("auto", "last"):
        return
    if command == "train":
        read_checkpoint(Path(ckpt_path))  # type: ignore[arg-type]
        return
    paths = checkpoint_paths(ckpt_path) if command in ENSEMBLE_COMMANDS else [str(ckpt_path)]
    checkpoints = [read_checkpoint(Path(path)) for path in paths]
    for path, checkpoint in zip(paths, checkpoints):
        checkpoint_module_class(checkpoint, f"ckpt_path={path}")
    check_ensemble(paths, checkpoints)
    run_config = RunDirectory.of_checkpoint(paths[0]).config_path  # segkit-eval reads the first's data config
    if command == "eval" and run_config.is_file():
        try:
            trained = OmegaConf.load(run_config)
        except (OSError, yaml.YAMLError, OmegaConfBaseException):
            return  # segkit-eval then uses the data config it is given
        # The one node of it that segkit-eval instantiates.
        check_config_targets(OmegaConf.to_container(trained, resolve=False).get("data"), f"{run_config} (data)")


# The run directory this process's Hydra run is about to create (None: it existed already).
_fresh_run_dir: Path | None = None


def discard_fresh_run_dir() -> None:
    """After a refusal inside the task: remove the run directory Hydra created for this run if it
    holds only Hydra's own records (``.hydra/``, the log file), so a refused command leaves
    nothing behind. A directory that existed before, or holds anything else, is left alone."""
    run_dir = _fresh_run_dir
    if run_dir is None or os.environ.get("RANK", "0") != "0" or not run_dir.is_dir():
        return
    if all(entry.name == ".hydra" or entry.suffix == ".log" for entry in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


class RunDirectoryGuard(Callback):
    """Hydra callback: :func:`check_named_files` and :func:`check_run_directory` before a (single)
    run writes anything; a refusal prints one line and exits with status 2, as segkit's other
    user errors do."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _fresh_run_dir
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir"))).absolute()
        _fresh_run_dir = None if run_dir.exists() else run_dir
        try:
            check_named_files(config)
            check_run_directory(config)
        except SegkitError as error:
            print(f"segkit-{command_of(config)}: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
