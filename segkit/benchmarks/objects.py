"""Counting nuclei: object scores of ``segkit-train`` + ``segkit-eval`` on the generated nuclei
(16-bit TIFFs, touching nuclei, instance masks) against the classic pipeline without learning,
Otsu's threshold plus a distance-transform watershed.

segkit trains with its defaults for a time budget, the commands as a user types them (each a
subprocess, output to a log file); ``segkit-eval`` then splits each validation image's
foreground into objects (a seeded watershed on the predicted probability) and matches them to
the true instances at IoU > 0.5 (``metrics.json``'s ``objects``).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from segkit.benchmarks.learning import budget
from segkit.benchmarks.throughput import _run, _segkit_train
from segkit.benchmarks.userdata import write_nuclei_dataset
from segkit.benchmarks.userdata_scores import watershed_scores
from segkit.errors import SegkitError

NUCLEI_DATA = ("data=folder", "data.num_classes=2", "data.in_channels=1", "data.mask_type=instances")
SCORES = ("f1", "precision", "recall", "ap50", "mean_ap")


@dataclass(frozen=True)
class ObjectResult:
    """Object scores on the validation split: segkit's after ``seconds`` of training, and the baseline's."""

    seconds: float
    steps: int
    segkit: dict[str, float]
    watershed: dict[str, float]
    val_miou: float


def _segkit_eval() -> list[str]:
    train = _segkit_train()
    if train[-1].endswith("segkit-train"):
        return [train[-1][: -len("segkit-train")] + "segkit-eval"]
    return [sys.executable, "-m", "segkit.cli.eval"]


def measure_objects(directory: Path, seconds: float = 240, overrides: Sequence[str] = ()) -> ObjectResult:
    """Write the nuclei under ``directory`` (once), train and evaluate segkit, score the baseline."""
    root = directory / "data" / "nuclei"
    if not (root / "val" / "images").is_dir():
        write_nuclei_dataset(root)
    run_dir, eval_dir = directory / "runs" / "train", directory / "runs" / "eval"
    if run_dir.exists() or eval_dir.exists():
        raise SegkitError(f"{directory / 'runs'} exists; give a new --objects-dir")
    run_dir.mkdir(parents=True)
    _run([*_segkit_train(), *NUCLEI_DATA, f"data.root={root}", f"++trainer.max_time={budget(seconds)}", "test=false",
          f"hydra.run.dir={run_dir}", *overrides], directory / "runs" / "train.log")
    _run([*_segkit_eval(), f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={eval_dir}"],
         directory / "runs" / "eval.log")
    trained = json.loads((run_dir / "metrics.json").read_text())
    evaluated = json.loads((eval_dir / "metrics.json").read_text())["val"]
    baseline = watershed_scores(root, "val")
    return ObjectResult(seconds, int(trained["global_step"]), {k: float(evaluated["objects"][k]) for k in SCORES},
                        {k: float(baseline[k]) for k in SCORES}, float(evaluated["mIoU"]))


if __name__ == "__main__":
    import argparse
    from dataclasses import asdict

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if (args.directory / "runs").exists():
        shutil.rmtree(args.directory / "runs")
    print(json.dumps(asdict(measure_objects(args.directory, args.seconds, args.overrides)), indent=1))
