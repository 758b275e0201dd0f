"""Shared helpers for segkit's tests (fixtures live in conftest.py).

Everything a test writes goes under pytest's ``tmp_path``: in-process runs get an explicit
``paths.output_dir``; subprocess runs get ``SEGKIT_ROOT`` (which ``paths.root_dir`` reads) and a
temporary working directory.

Trainings are tiny (16/8/8 scenes of 32x32, a 2-level U-Net of width 4) so that the suite runs
in a few minutes on a 2-core CPU; they check plumbing, not accuracy.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from segkit.config_dir import config_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = Path(config_dir())

# A whole fit + test of this takes about a second on a CPU.
TINY_DATA = [
    "data.train_size=16",
    "data.val_size=8",
    "data.test_size=8",
    "data.image_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
]
TINY_MODEL = ["model.base_width=4", "model.depth=2"]
QUIET_CALLBACKS = ["callbacks.progress_bar=null", "callbacks.model_summary=null"]
CPU = ["trainer.accelerator=cpu", "trainer.devices=1"]
TINY = [*TINY_DATA, *TINY_MODEL, *QUIET_CALLBACKS, *CPU, "trainer.max_epochs=1"]

# The run used for checkpoint, TensorBoard and segkit-eval tests: wide enough (8) and with a
# high enough constant lr that its val/mIoU changes from epoch to epoch, so "the last epoch's
# value" is a meaningful target.
CLI_RUN_EPOCHS = 3
CLI_RUN_OVERRIDES = [
    *TINY, "model.base_width=8", "model.scheduler=null", "model.optimizer.lr=0.02",
    f"trainer.max_epochs={CLI_RUN_EPOCHS}",
]


def needs(module: str, install: str) -> pytest.MarkDecorator:
    """Skip a test whose optional dependency ``module`` is not installed (``install``: how to get it,
    e.g. ``pip install 'segkit[export]'``)."""
    try:
        missing = importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # its parent package is missing
        missing = True
    return pytest.mark.skipif(missing, reason=f"needs {module}: {install}")


def config_options(group: str) -> list[str]:
    """The options of a config group: the ``conf/<group>/*.yaml`` file stems."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def config_groups() -> list[str]:
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and any(p.glob("*.yaml")))


def compose_config(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with Hydra's compose API (hydra node included)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=True)


def task_config(config_name: str, overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """A config as ``@hydra.main`` would hand it to a task, for in-process calls.

    ``paths.output_dir`` (``${hydra:runtime.output_dir}`` normally) is pinned to ``output_dir``,
    the Hydra config is registered (so ``HydraConfig.get()`` works) and the ``hydra`` node is
    dropped from the task config, as Hydra itself does.
    """
    cfg = compose_config(config_name, [*overrides, f"paths.output_dir={output_dir}"])
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def console_command(script: str, module: str) -> list[str]:
    """The installed console script next to this interpreter, else ``python -m module``."""
    candidate = Path(sys.executable).parent / script
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return [str(candidate)]
    found = shutil.which(script)
    return [found] if found else [sys.executable, "-m", module]


TRAIN_CMD = console_command("segkit-train", "segkit.cli.train")
EVAL_CMD = console_command("segkit-eval", "segkit.cli.eval")


def cli_env(root: Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)  # keep Hydra's normal one-screen error output
    env.pop("SEGKIT_ROOT", None)
    if root is not None:
        env["SEGKIT_ROOT"] = str(root)
    env.update(extra)
    return env


def run_cli(
    command: Sequence[str], args: Sequence[str], root: Path, timeout: float = 240, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a segkit console command with ``SEGKIT_ROOT=root`` and ``root`` as working directory."""
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [*command, *args],
        cwd=root,
        env=cli_env(root, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    """Exit code and output tails, for assertion messages."""
    return (
        f"exit code {proc.returncode}\n--- stdout (tail) ---\n{proc.stdout[-3000:]}"
        f"\n--- stderr (tail) ---\n{proc.stderr[-3000:]}"
    )


@dataclass(frozen=True)
class CliRun:
    """A finished ``segkit-train`` run."""

    root: Path
    run_dir: Path
    proc: subprocess.CompletedProcess[str]

    @property
    def last_ckpt(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"


@dataclass(frozen=True)
class InProcessRun:
    """A finished in-process ``segkit.training.run.train(cfg)`` call."""

    metrics: dict[str, float]
    output_dir: Path
    cfg: DictConfig


class KillAtStep(L.Callback):
    """SIGKILLs its own process when training reaches optimiser step ``step`` (a crash, a
    preemption, an OOM kill: nothing gets to clean up). Import it in a subprocess with
    ``PYTHONPATH=tests`` and ``+callbacks.kill._target_=helpers.KillAtStep``.

    With ``once``, a marker file per DDP rank there makes it fire in the first run only, so the
    same command line can be run again to resume."""

    def __init__(self, step: int, once: str | None = None) -> None:
        self.step, self.once = step, once

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int) -> None:
        if trainer.global_step != self.step:
            return
        if self.once is not None:
            marker = Path(self.once) / f"killed.rank{trainer.global_rank}"
            if marker.exists():
                return
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)


class SignalsAfterSteps(L.Callback):
    """Sends its own process the next signal of a plan, ``after`` steps into each run.

    The plan is a file of signal names, one per line (``SIGUSR1``...), consumed one per run: the
    same command line, run again, gets the next signal, and none once the plan is used up.
    """

    def __init__(self, plan: str, after: int = 2) -> None:
        self.plan, self.after = Path(plan), after
        self.fire_at: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fire_at = trainer.global_step + self.after

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int) -> None:
        if trainer.global_step != self.fire_at:
            return
        remaining = self.plan.read_text().split()
        if remaining:
            self.plan.write_text("\n".join(remaining[1:]))
            os.kill(os.getpid(), signal.Signals[remaining[0]])


class RecordNetOutputDtypes(L.Callback):
    """Records the dtype of ``pl_module.net``'s output in every training step (in ``seen``, a
    class attribute, since Hydra builds the instance inside ``train``)."""

    seen: list[object] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.net.register_forward_hook(lambda module, args, output: self.seen.append(output.dtype))


class RecordRankHparams(L.Callback):
    """Writes ``<dir>/rank<global rank>.json`` with the model's hyperparameters as this rank
    trains them (under DDP: one file per process)."""

    def __init__(self, dir: str) -> None:
        self.dir = Path(dir)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import json

        self.dir.mkdir(parents=True, exist_ok=True)
        hparams = json.loads(json.dumps(dict(pl_module.hparams), default=str))
        # The optimiser comes from a partial (not an hparam); its keywords are the configured values.
        hparams["optimizer"] = {k: v for k, v in pl_module.optimizer_factory.keywords.items() if isinstance(v, (int, float))}
        (self.dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(hparams, sort_keys=True))


@dataclass(frozen=True)
class CommandResult:
    """What a console command did when run in-process by :func:`run_in_process`."""

    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """The lines that say ``<program>: error: ...`` (segkit's one-line user errors)."""
        return [line for line in self.stderr.splitlines() if ": error: " in line]


def run_in_process(main: object, argv: Sequence[str], root: Path | None = None) -> CommandResult:
    """Run a console entry point (``segkit.cli.train.main`` ...) in this process, as if launched
    with ``argv``: about 0.2 s instead of a subprocess's 5 s, for the many bad-input cases.

    ``root`` becomes ``SEGKIT_ROOT`` (where ``paths.root_dir`` points) for the call.
    """
    import contextlib
    import io

    saved_argv, saved_root = sys.argv, os.environ.get("SEGKIT_ROOT")
    sys.argv = ["segkit", *argv]
    if root is not None:
        os.environ["SEGKIT_ROOT"] = str(root)
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()  # type: ignore[operator]
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = saved_argv
        if saved_root is None:
            os.environ.pop("SEGKIT_ROOT", None)
        else:
            os.environ["SEGKIT_ROOT"] = saved_root
    return CommandResult(code, out.getvalue(), err.getvalue())


def assert_one_line_error(result: CommandResult, *names: str) -> None:
    """Exit code 2, exactly one ``error:`` line naming each of ``names``, and no traceback."""
    context = f"exit {result.code}\n--- stderr ---\n{result.stderr[-3000:]}\n--- stdout ---\n{result.stdout[-1500:]}"
    assert result.code == 2, context
    assert len(result.error_lines) == 1, context
    assert "Traceback" not in result.stderr + result.stdout, context
    for name in names:
        assert name in result.error_lines[0], f"{name!r} not in the error line\n{context}"


def tree_state(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: compare before and after to show nothing changed."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class KillAt(L.Callback):
    """SIGKILLs its own process at a chosen point of training, once (a marker file in ``once``
    per DDP rank lets the same command run again to resume):

    - ``train_batch``: as optimiser step ``step`` is about to start (``global_step == step``);
    - ``epoch_end``: at the end of the training epoch in which step ``step`` was reached;
    - ``validation``: in the first validation batch once ``global_step >= step``.
    """

    def __init__(self, step: int, once: str, at: str = "train_batch") -> None:
        if at not in ("train_batch", "epoch_end", "validation"):
            raise ValueError(f"at={at}")
        self.step, self.once, self.at = step, Path(once), at

    def _kill(self, trainer: L.Trainer) -> None:
        marker = self.once / f"killed.rank{trainer.global_rank}"
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int) -> None:
        if self.at == "train_batch" and trainer.global_step == self.step:
            self._kill(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at == "epoch_end" and trainer.global_step >= self.step:
            self._kill(trainer)

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.at == "validation" and not trainer.sanity_checking and trainer.global_step >= self.step:
            self._kill(trainer)
