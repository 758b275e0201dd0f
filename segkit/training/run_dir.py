"""A run directory and what segkit keeps in it: the one place that knows the layout.

::

    <run>/.hydra/config.yaml        the composed config (Hydra; segkit-eval reads its data section)
    <run>/.hydra/hydra.yaml         Hydra's own config (which command made the run)
    <run>/.hydra/overrides.yaml     the command line's overrides
    <run>/checkpoints/last.ckpt     the latest weights (and the best ones beside it)
    <run>/hpc_ckpt_*.ckpt           Lightning's save on SLURM's signal, before a requeue
    <run>/metrics.json              the run record (:mod:`segkit.training.run_record`)
    <run>/progress.png              segkit-train's curves, redrawn at each validation (:mod:`segkit.training.progress_figure`)
    <run>/confusion_matrix.png ...  segkit-eval's outputs (:mod:`segkit.scoring.eval_files`)

Light on purpose (no torch, no Lightning): ``segkit-report`` reads runs through it.

Example:
    >>> import tempfile
    >>> run = RunDirectory(Path(tempfile.mkdtemp()).resolve())
    >>> run.write_record({"command": "train", "val": {"mIoU": float("nan")}}).name
    'metrics.json'
    >>> run.read_record()
    {'command': 'train', 'val': {'mIoU': nan}}
    >>> RunDirectory.of_checkpoint(run.last_checkpoint) == run, run.latest_checkpoint()
    (True, None)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segkit.atomic import atomic_path

RECORD_NAME = "metrics.json"
PROGRESS_PNG = "progress.png"
CHECKPOINTS = "checkpoints"
LAST_CKPT = "last.ckpt"
HPC_CKPT_GLOB = "hpc_ckpt_*.ckpt"
# What segkit-eval writes beside its record.
CONFUSION_PNG = "confusion_matrix.png"
PER_CLASS_IOU_PNG = "per_class_iou.png"
PER_IMAGE_CSV = "per_image.csv"
PER_IMAGE_NPZ = "per_image_confusion.npz"
WORST_IMAGES_PNG = "worst_images.png"


@dataclass(frozen=True)
class RunDirectory:
    """The directory of one segkit run (``segkit-train``'s or another command's)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of_checkpoint(cls, ckpt_path: str | Path) -> RunDirectory:
        """The run a checkpoint belongs to: ``<run>`` of ``<run>/checkpoints/*.ckpt`` and of
        ``<run>/hpc_ckpt_*.ckpt``; a checkpoint elsewhere gives its folder's parent, which need
        not hold a run (check :attr:`config_path` before reading it)."""
        path = Path(ckpt_path).resolve()
        return cls(path.parent if path.match(HPC_CKPT_GLOB) else path.parent.parent)

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``: ``last.ckpt`` and the best checkpoint."""
        return self.path / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        """``checkpoints/last.ckpt`` (it may not exist yet)."""
        return self.checkpoints / LAST_CKPT

    def hpc_checkpoints(self) -> list[Path]:
        """Lightning's ``hpc_ckpt_*.ckpt`` files (saved on SLURM's signal), by name."""
        return sorted(self.path.glob(HPC_CKPT_GLOB))

    def latest_checkpoint(self) -> Path | None:
        """The newer of ``last.ckpt`` and the ``hpc_ckpt_*.ckpt`` files, or None: what a resume
        (``ckpt_path=auto``) continues from."""
        found = [p for p in (self.last_checkpoint, *self.hpc_checkpoints()) if p.is_file()]
        return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None

    @property
    def config_path(self) -> Path:
        """``.hydra/config.yaml``: the run's composed config, as Hydra saved it."""
        return self.path / ".hydra" / "config.yaml"

    @property
    def hydra_config_path(self) -> Path:
        """``.hydra/hydra.yaml``: Hydra's own settings of the run (its config name: the command)."""
        return self.path / ".hydra" / "hydra.yaml"

    @property
    def overrides_path(self) -> Path:
        """``.hydra/overrides.yaml``: the run's command-line overrides."""
        return self.path / ".hydra" / "overrides.yaml"

    def is_run(self) -> bool:
        """Whether this looks like a run directory (a record or Hydra's ``.hydra/``), finished or not."""
        return self.record_path.is_file() or (self.path / ".hydra").is_dir()

    @property
    def record_path(self) -> Path:
        """``metrics.json``: the run record."""
        return self.path / RECORD_NAME

    @property
    def progress_figure(self) -> Path:
        """``progress.png``: losses, val/mIoU and the learning rate against the step (segkit-train)."""
        return self.path / PROGRESS_PNG

    def read_record(self) -> dict[str, Any]:
        """The run record; NaN scores come back as ``math.nan``. Raises ``OSError`` or ``ValueError``
        (``json.JSONDecodeError``, a ``UnicodeDecodeError``) for a missing or unreadable file."""
        return json.loads(self.record_path.read_text())

    def write_record(self, record: dict[str, Any]) -> Path:
        """Write the run record atomically (readers see the old file or the new one, whole);
        NaN (a class absent from a split) is written as ``NaN``, as Python's json reads it."""
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.record_path) as partial:
            partial.write_text(json.dumps(record, indent=2) + "\n")
        return self.record_path

    @property
    def per_image_confusion(self) -> Path:
        """segkit-eval's ``per_image_confusion.npz`` (what ``segkit-report --paired`` compares)."""
        return self.path / PER_IMAGE_NPZ

    def evaluations(self) -> list[RunDirectory]:
        """The segkit-eval output directories inside this one (``eval*/`` holding a
        ``per_image_confusion.npz``, e.g. ``hydra.run.dir=<run>/eval_test``), by name."""
        return [RunDirectory(p.parent) for p in sorted(self.path.glob(f"eval*/{PER_IMAGE_NPZ}"))]
