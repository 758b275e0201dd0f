"""Where a result came from: package versions, code commits, machine, devices, command line.

:func:`collect_provenance` gathers them for the run record's ``provenance`` section (``metrics.json``,
:mod:`segkit.training.run_record`) and, flattened by :func:`provenance_strings`, for the run
config logged as TensorBoard hparams. Cheap on purpose (about 20-30 ms): versions come from the
installed packages' metadata (nothing is imported for it) and git runs in background threads,
started by :func:`start_git_probes` while the run builds; a git that is missing, slow (past
:data:`GIT_DEADLINE_S`) or finds no repository gives ``null``, never an error.

Example:
    >>> import importlib.metadata, tempfile
    >>> found = collect_provenance(git=start_git_probes(Path(tempfile.mkdtemp())))
    >>> found["versions"]["torch"] == importlib.metadata.version("torch"), found["workdir_git"]
    (True, None)
    >>> provenance_strings({"argv": ["segkit-train", "seed=1"], "git_dirty": None, "versions": {"torch": "2.5"}})
    {'argv': 'segkit-train seed=1', 'git_dirty': '', 'versions/torch': '2.5'}
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Distributions whose version every record holds (None if one is missing), then the optional
# extras: recorded when installed. Keys are PyPI names, as ``pip install name==version`` takes them.
CORE_PACKAGES = ("torch", "torchvision", "lightning", "hydra-core", "omegaconf", "numpy", "segkit")
EXTRA_PACKAGES = ("optuna", "segmentation-models-pytorch", "timm", "wandb", "mlflow", "mlflow-skinny", "onnx",
                  "onnxruntime", "onnxruntime-gpu", "tifffile", "zarr")
# collect_provenance waits for git's answers until this long after the probes started (each git
# call takes ~5 ms; a huge or cold repository may take longer: its facts are then null).
GIT_DEADLINE_S = 0.1
# The probe threads' own limit, after which a hung git is killed.
GIT_KILL_S = 5.0


def package_versions() -> dict[str, str | None]:
    """Python's version, each of :data:`CORE_PACKAGES` (None if missing) and each installed one of
    :data:`EXTRA_PACKAGES`, from package metadata (nothing is imported).

    Example:
        >>> versions = package_versions()
        >>> versions["python"] == platform.python_version(), versions["lightning"] is not None
        (True, True)
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in (*CORE_PACKAGES, *EXTRA_PACKAGES):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name in CORE_PACKAGES:
                versions[name] = None
    return versions


def _git(directory: Path, *args: str) -> str | None:
    # GIT_OPTIONAL_LOCKS=0: status takes no index lock, so a user's own git command never waits on it.
    try:
        done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True,
                              timeout=GIT_KILL_S, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(directory: Path) -> dict[str, Any] | None:
    """``{"root", "commit", "dirty"}`` of the git checkout holding ``directory``, or None (no git,
    no repository, no commit yet). ``dirty``: tracked files differ from the commit (untracked
    files do not count).

    Example:
        >>> import tempfile
        >>> git_state(Path(tempfile.mkdtemp())) is None
        True
    """
    found = _git(directory, "rev-parse", "--show-toplevel", "HEAD")
    lines = found.split() if found else []
    if len(lines) != 2:
        return None
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return {"root": lines[0], "commit": lines[1], "dirty": None if status is None else bool(status.strip())}


@dataclass
class GitProbe:
    """:func:`git_state` of ``directory``, run in a daemon thread from creation on."""

    directory: Path
    result: dict[str, Any] | None = None
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="segkit-git-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.result = git_state(self.directory)

    def wait(self, until: float) -> dict[str, Any] | None:
        """The state, or None if git has not answered by ``until`` (``time.monotonic()``)."""
        self._thread.join(max(0.0, until - time.monotonic()))
        return None if self._thread.is_alive() else self.result


def source_checkout() -> Path | None:
    """The source tree segkit runs from (an editable install: the folder holding ``segkit/``
    and ``pyproject.toml``), or None for an installed wheel."""
    import segkit

    root = Path(segkit.__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def working_directory() -> Path:
    """Where the command was started (Hydra's original cwd inside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if HydraConfig.initialized():
        cwd = OmegaConf.select(HydraConfig.get(), "runtime.cwd", default=None)
        if cwd:
            return Path(cwd)
    return Path.cwd()


def start_git_probes(workdir: Path | None = None) -> dict[str, GitProbe]:
    """Start asking git about segkit's source checkout (``"segkit"``) and, unless it lies inside
    that checkout, the working directory's (``"workdir"``: a user's code, a plugin); read them
    with :func:`collect_provenance`. Start early: git then runs while the run builds."""
    probes: dict[str, GitProbe] = {}
    source, workdir = source_checkout(), (workdir or working_directory()).resolve()
    if source is not None:
        probes["segkit"] = GitProbe(source)
    if source is None or not workdir.is_relative_to(source):
        probes["workdir"] = GitProbe(workdir)
    return probes


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else the platform's word for it)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None


def device_facts(trainer: Any | None = None) -> dict[str, Any]:
    """The machine (hostname, platform, CPU, CUDA devices) and, given a Lightning ``trainer``,
    what it runs on: accelerator, devices per node, nodes, world size."""
    import torch

    facts: dict[str, Any] = {
        "hostname": socket.gethostname(), "platform": platform.platform(), "cpu": cpu_model(),
        "cpu_count": os.cpu_count(), "cuda_device_count": torch.cuda.device_count(), "cuda_devices": [],
    }
    if trainer is None:
        return facts
    accelerator = type(trainer.accelerator).__name__
    # Names only when the run uses CUDA: asking creates a CUDA context, which a CPU run need not pay.
    if accelerator == "CUDAAccelerator" or torch.cuda.is_initialized():
        facts["cuda_devices"] = [torch.cuda.get_device_name(index) for index in range(facts["cuda_device_count"])]
    facts.update(accelerator=accelerator.removesuffix("Accelerator").lower(), strategy=type(trainer.strategy).__name__,
                 devices=trainer.num_devices, num_nodes=trainer.num_nodes, world_size=trainer.world_size)
    return facts


def collect_provenance(trainer: Any | None = None, git: Mapping[str, GitProbe] | None = None,
                       argv: list[str] | None = None) -> dict[str, Any]:
    """The ``provenance`` section of a run record: ``argv`` (``sys.argv``, as typed), ``cwd``,
    :func:`device_facts`, ``git_root``/``git_commit``/``git_dirty`` of segkit's source checkout,
    ``workdir_git`` (the working directory's repository when it is another one, else None) and
    ``versions`` (:func:`package_versions`). ``git``: probes from :func:`start_git_probes`
    (started here if not given)."""
    probes = start_git_probes() if git is None else git
    found: dict[str, Any] = {"argv": list(sys.argv if argv is None else argv), "cwd": str(working_directory())}
    found.update(device_facts(trainer))
    versions = package_versions()  # while git runs
    until = max([probe.started for probe in probes.values()], default=0.0) + GIT_DEADLINE_S
    states = {name: probe.wait(until) for name, probe in probes.items()}
    ours = states.get("segkit")
    found.update({f"git_{key}": (ours or {}).get(key) for key in ("root", "commit", "dirty")})
    theirs = states.get("workdir")
    found["workdir_git"] = theirs if theirs and (not ours or theirs["root"] != ours["root"]) else None
    found["versions"] = versions
    return found


def provenance_strings(provenance: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``provenance`` flattened to ``/``-joined keys and string values (TensorBoard's hparams):
    ``argv`` shell-quoted, other lists comma-separated, None empty."""
    flat: dict[str, str] = {}
    for key, value in provenance.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(provenance_strings(value, f"{name}/"))
        elif key == "argv" and isinstance(value, list):
            flat[name] = shlex.join(map(str, value))
        elif isinstance(value, list):
            flat[name] = ", ".join(map(str, value))
        else:
            flat[name] = "" if value is None else str(value)
    return flat
