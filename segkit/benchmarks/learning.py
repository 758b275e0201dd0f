"""Learning per CPU-second: segkit's defaults against a strong hand-written loop, in the same time.

Four generated data sets unlike the built-in ``shapes``, each a ``data=folder`` tree as a user
brings one (:mod:`segkit.benchmarks.userdata`):

==============  =========================================================================
set             what it is
==============  =========================================================================
scenes          odd-sized RGB scenes, 4 classes whose colours are random (shape and
                texture only tell them), a 2-px ignore band at every boundary
scenes-colour   the same scenes with each class in its own hue family
nuclei          16-bit single-channel TIFFs of touching nuclei, instance-label masks
em              8-bit grey EM-like sections, thin membranes against organelles, 0/255 masks
==============  =========================================================================

On each, ``segkit-train`` runs with its defaults and ``++trainer.max_time`` (a subprocess, its
output to a file), and the hand-written loop (:mod:`segkit.benchmarks.hand_loop`) trains for the
same number of seconds. Both budgets count training only: reading and checking the files before
the first step (segkit's preflight, the loop's loading) is outside them, and segkit's periodic
validations are inside its budget. Each side is then scored on the whole validation images with
its final weights: segkit's ``val/mIoU`` from its last validation, at the budget's end.

Example::

    segkit-bench learning --learning-seconds 120 --learning-dir /tmp/learning
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from segkit.benchmarks.hand_loop import BATCH
from segkit.benchmarks.throughput import _run, _segkit_train
from segkit.errors import SegkitError
from segkit.training.run_dir import RunDirectory


@dataclass(frozen=True)
class LearningSet:
    """A generated data set: how to write it, and what segkit and the hand loop are told about it."""

    name: str
    write: Callable[[Path], Path]
    num_classes: int
    in_channels: int = 3
    mask_type: str = "index"

    def segkit_overrides(self, root: Path) -> list[str]:
        """The data overrides a user gives ``segkit-train`` for this tree."""
        return ["data=folder", f"data.root={root}", f"data.num_classes={self.num_classes}",
                f"data.in_channels={self.in_channels}", f"data.mask_type={self.mask_type}"]

    def hand_loop_arguments(self, root: Path) -> list[str]:
        return [str(root), "--num-classes", str(self.num_classes), "--in-channels", str(self.in_channels),
                "--mask-type", self.mask_type]


def _sets() -> dict[str, LearningSet]:
    from segkit.benchmarks.userdata import write_folder_dataset, write_nuclei_dataset
    from segkit.benchmarks.userdata_em import write_em_dataset

    return {s.name: s for s in (
        LearningSet("scenes", write_folder_dataset, 4),
        LearningSet("scenes-colour", lambda root: write_folder_dataset(root, class_colours=True), 4),
        LearningSet("nuclei", write_nuclei_dataset, 2, in_channels=1, mask_type="instances"),
        LearningSet("em", write_em_dataset, 2, in_channels=1, mask_type="binary"),
    )}


SET_NAMES = ("scenes", "scenes-colour", "nuclei", "em")


@dataclass
class LearningResult:
    """Final val mIoU of each side on one set, after the same seconds of training."""

    set_name: str
    seconds: float
    segkit_miou: float
    hand_miou: float
    segkit_steps: int
    hand_steps: int
    segkit_batch: int
    hand_batch: int

    @property
    def margin(self) -> float:
        """segkit minus the hand loop: >= 0 where segkit's defaults match or beat it."""
        return self.segkit_miou - self.hand_miou


def budget(seconds: float) -> str:
    """``trainer.max_time`` for a number of seconds ("DD:HH:MM:SS").

    Example:
        >>> budget(150)
        '00:00:02:30'
    """
    whole = round(seconds)
    return f"00:{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def data_root(learning_set: LearningSet, directory: Path) -> Path:
    """The set's tree under ``directory``, written first if absent (generation is deterministic)."""
    root = directory / "data" / learning_set.name
    if not (root / "val" / "images").is_dir():
        learning_set.write(root)
    return root


def run_segkit(learning_set: LearningSet, root: Path, seconds: float, run_dir: Path,
               overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``segkit-train`` with the defaults and ``++trainer.max_time``; its ``metrics.json``."""
    if run_dir.exists():
        raise SegkitError(f"{run_dir} exists; give a new --learning-dir")
    run_dir.mkdir(parents=True)
    _run([*_segkit_train(), *learning_set.segkit_overrides(root), f"++trainer.max_time={budget(seconds)}",
          "test=false", f"hydra.run.dir={run_dir}", *overrides], run_dir.parent / f"{run_dir.name}.log")
    run = RunDirectory(run_dir)
    record = run.read_record()
    record["batch_size"] = int(OmegaConf.load(run.config_path).data.batch_size)
    return record


def run_hand_loop(learning_set: LearningSet, root: Path, seconds: float, log: Path) -> dict[str, Any]:
    """The hand-written loop as a subprocess; its JSON result."""
    command = [sys.executable, "-m", "segkit.benchmarks.userdata", "hand-loop",
               *learning_set.hand_loop_arguments(root), "--seconds", str(seconds)]
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SegkitError(f"the hand loop failed on {root} (exit {done.returncode}); see {log}")
    return json.loads(done.stdout)


def measure_learning(directory: Path, seconds: float = 120, names: Sequence[str] = SET_NAMES,
                     overrides: Sequence[str] = ()) -> list[LearningResult]:
    """Write the sets under ``directory`` (once), then train segkit and the hand loop on each in
    turn for ``seconds`` each; ``overrides`` go to ``segkit-train`` after the data's."""
    sets = _sets()
    unknown = [name for name in names if name not in sets]
    if unknown:
        raise SegkitError(f"unknown learning set {unknown[0]!r}; choose from {', '.join(SET_NAMES)}")
    results = []
    for name in names:
        root = data_root(sets[name], directory)
        record = run_segkit(sets[name], root, seconds, directory / "runs" / f"{name}-segkit", overrides)
        hand = run_hand_loop(sets[name], root, seconds, directory / "runs" / f"{name}-hand.log")
        results.append(LearningResult(name, seconds, float(record["val"]["mIoU"]), hand["val_mIoU"],
                                      int(record["global_step"]), int(hand["steps"]), record["batch_size"], BATCH))
    return results
