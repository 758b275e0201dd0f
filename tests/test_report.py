"""segkit-report: tables, figures and the paired bootstrap, on hand-written run directories."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import console_command, describe
from PIL import Image

from segkit.cli.report import main

REPORT_CMD = console_command("segkit-report", "segkit.cli.report")
# Two configurations (base_width 8 and 16) x three seeds; test/mIoU chosen for hand-made stats:
# width 8: 0.5, 0.6, 0.7 -> mean 0.6, sample std 0.1; width 16: 0.8, 0.85, 0.9 -> mean 0.85, std 0.05.
JOBS = [(8, 1, 0.5), (8, 2, 0.6), (8, 3, 0.7), (16, 1, 0.8), (16, 2, 0.85), (16, 3, 0.9)]


def record(job: int, width: int, seed: int, test_miou: float) -> dict[str, Any]:
    """A metrics.json as segkit-train writes it, with values carrying many digits."""
    val = 0.4 + job / 37 + 1e-13 * job  # digits a rounding CSV writer would lose
    return {
        "command": "train",
        "run_dir": f"/elsewhere/multirun/{job}",  # where it ran; the report names where it is now
        "overrides": [f"model.base_width={width}", f"seed={seed}", "trainer.max_epochs=3"],
        "task_name": "train", "seed": seed, "model": "segkit.models.UNetModule", "data": "segkit.data.Shapes",
        "wall_time_s": 12.345 + job, "global_step": 300 + job, "epochs": 3,
        "parameters": {"total": 1000 * width, "trainable": 1000 * width},
        "best_checkpoint": None, "best_monitor": "val/mIoU", "best_score": val,
        "val": {"mIoU": val, "mIoU_best": val + 0.01, "mDice": 0.7, "loss": 0.3,
                "IoU": {"background": 0.9, "circle": val, "square": math.nan}},
        "test": {"mIoU": test_miou, "mDice": test_miou + 0.05, "pixel_acc": 0.95,
                 "IoU": {"background": 0.95, "circle": test_miou, "square": math.nan},
                 "Dice": {"background": 0.97, "circle": 0.8, "square": math.nan}},
        "train": {"loss": 0.2},
        "lr-AdamW": 0.001,
    }


@pytest.fixture()
def multirun(tmp_path: Path) -> Path:
    sweep = tmp_path / "multiruns" / "2025-01-01_00-00-00"
    for job, (width, seed, test_miou) in enumerate(JOBS):
        (sweep / str(job) / ".hydra").mkdir(parents=True)
        (sweep / str(job) / "metrics.json").write_text(json.dumps(record(job, width, seed, test_miou), indent=2))
    (sweep / "6" / ".hydra").mkdir(parents=True)  # a job that failed: no metrics.json
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_report_csv_has_one_row_per_run_with_its_own_logged_values(multirun: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(multirun)]) == 0
    out = capsys.readouterr().out
    assert f"skipped {multirun / '6'}: no metrics.json" in out
    rows = read_csv(multirun / "report.csv")
    assert list(rows[0]) == ["run_dir", "model.base_width", "seed", "val/mIoU_best", "val/mIoU", "test/mIoU",
                             "test/mDice", "wall_time_s", "global_step", "parameters"]  # not trainer.max_epochs
    assert [row["run_dir"] for row in rows] == [str((multirun / str(job)).resolve()) for job in range(6)]
    for job, row in enumerate(rows):
        logged = json.loads((multirun / str(job) / "metrics.json").read_text())
        assert (row["model.base_width"], row["seed"]) == (str(JOBS[job][0]), str(JOBS[job][1]))
        for column in ("val/mIoU_best", "val/mIoU", "test/mIoU", "test/mDice"):
            split, name = column.split("/")
            assert float(row[column]) == logged[split][name], (job, column)  # exact, not rounded
        assert float(row["wall_time_s"]) == logged["wall_time_s"]
        assert int(row["global_step"]) == logged["global_step"]
        assert int(row["parameters"]) == logged["parameters"]["total"]


def test_report_by_config_aggregates_seeds(multirun: Path) -> None:
    assert main([str(multirun), "--no-figures"]) == 0
    rows = read_csv(multirun / "report_by_config.csv")
    assert len(rows) == 2
    assert list(rows[0])[:2] == ["model.base_width", "n"]
    assert "seed" not in rows[0] and "trainer.max_epochs" not in rows[0]
    by_width = {row["model.base_width"]: row for row in rows}
    assert by_width["8"]["n"] == by_width["16"]["n"] == "3"
    expected = {"8": (0.6, 0.1, 0.5, 0.7), "16": (0.85, 0.05, 0.8, 0.9)}
    for width, (mean, std, low, high) in expected.items():
        row = by_width[width]
        assert float(row["test/mIoU_mean"]) == pytest.approx(mean, abs=1e-12)
        assert float(row["test/mIoU_std"]) == pytest.approx(std, abs=1e-12)
        assert float(row["test/mIoU_min"]) == low and float(row["test/mIoU_max"]) == high
        assert float(row["test/mDice_mean"]) == pytest.approx(mean + 0.05, abs=1e-12)
    # val/mIoU_best of width 8 (jobs 0-2): 0.41 + job / 37 (+ tiny) -> mean 0.41 + 1/37, std 1/37.
    assert float(by_width["8"]["val/mIoU_best_mean"]) == pytest.approx(0.41 + 1 / 37, abs=1e-9)
    assert float(by_width["8"]["val/mIoU_best_std"]) == pytest.approx(1 / 37, abs=1e-9)


def test_one_run_per_config_has_an_empty_std(tmp_path: Path) -> None:
    for name, width in (("a", 8), ("b", 16)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(record(0, width, 1, 0.5)))
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--no-figures"]) == 0
    rows = read_csv(tmp_path / "report_by_config.csv")  # next to the first run: its parent
    assert [(row["model.base_width"], row["n"], row["test/mIoU_std"]) for row in rows] == [("8", "1", ""), ("16", "1", "")]


def eval_record(width: int, test_miou: float) -> dict[str, Any]:
    """A metrics.json as segkit-eval writes it: training's schema, one split, its own keys."""
    return {
        "command": "eval", "run_dir": "/elsewhere/eval", "overrides": ["ckpt_path=/x/last.ckpt", "split=test"],
        "task_name": "eval", "seed": 42, "model": "segkit.models.unet.UNetModule", "data": "segkit.data.Shapes",
        "wall_time_s": 1.5, "global_step": 300, "epochs": 2,
        "parameters": {"total": 1000 * width, "trainable": 1000 * width},
        "test": {"mIoU": test_miou, "mDice": 0.8, "pixel_acc": 0.9, "loss": 0.3,
                 "IoU": {"background": 0.9, "circle": test_miou, "square": math.nan},
                 "Dice": {"background": 0.95, "circle": 0.8, "square": math.nan}},
        "ckpt_path": "/x/last.ckpt", "split": "test", "class_names": ["background", "circle", "square"],
        "confusion_matrix": [[9, 1, 0], [1, 9, 0], [0, 0, 0]], "tta": "none", "scales": [1.0],
    }


def test_a_report_over_a_training_run_and_an_evaluation(tmp_path: Path) -> None:
    for name, content in (("train", record(0, 8, 1, 0.5)), ("eval", eval_record(8, 0.625))):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / "metrics.json").write_text(json.dumps(content))
    assert main([str(tmp_path / "train"), str(tmp_path / "eval"), "--out", str(tmp_path / "out")]) == 0
    rows = {Path(row["run_dir"]).name: row for row in read_csv(tmp_path / "out" / "report.csv")}
    assert float(rows["train"]["test/mIoU"]) == 0.5 and float(rows["eval"]["test/mIoU"]) == 0.625
    assert rows["eval"]["val/mIoU"] == "" and rows["eval"]["global_step"] == "300"
    assert rows["eval"]["parameters"] == "8000"
    assert (tmp_path / "out" / "per_class_iou.png").is_file()


def test_report_md_lists_the_better_config_first_and_links_figures(multirun: Path) -> None:
    assert main([str(multirun)]) == 0
    markdown = (multirun / "report.md").read_text()
    configs = markdown.split("## Configurations, best first")[1].split("## Runs")[0]
    table = [line for line in configs.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    assert table[0].startswith("| 1 | 16 | 3 | 0.8500 ± 0.0500 (0.8000–0.9000)"), table
    assert table[1].startswith("| 2 | 8 | 3 | 0.6000 ± 0.1000 (0.5000–0.7000)"), table
    runs = markdown.split("## Runs")[1].split("##")[0]
    assert runs.index("| 3 | 16 | 1 |") < runs.index("| 0 | 8 | 1 |")  # runs follow their config's rank
    assert "](score_by_config.png)" in markdown and "](per_class_iou.png)" in markdown
    assert "no metrics.json" in markdown.split("## Skipped")[1]


def test_figures_are_pngs(multirun: Path) -> None:
    assert main([str(multirun), "--out", str(multirun / "out")]) == 0
    for name in ("score_by_config.png", "per_class_iou.png"):
        with Image.open(multirun / "out" / name) as image:
            assert image.format == "PNG" and image.width > 100 and image.height > 100
    assert not (multirun / "report.csv").exists()  # --out was used
    assert not list((multirun / "out").glob(".*partial"))


def test_report_runs_again_over_its_own_files(multirun: Path) -> None:
    assert main([str(multirun), "--no-figures"]) == 0
    first = (multirun / "report.csv").read_text()
    assert main([str(multirun), "--no-figures"]) == 0
    assert (multirun / "report.csv").read_text() == first


def test_run_dir_without_metrics_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "metrics.json").write_text(json.dumps(record(0, 8, 1, 0.5)))
    (tmp_path / "unfinished" / ".hydra").mkdir(parents=True)
    assert main([str(tmp_path / "good"), str(tmp_path / "unfinished"), "--no-figures"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("skipped")]
    assert lines == [f"skipped {tmp_path / 'unfinished'}: no metrics.json (unfinished or failed run?)"]
    assert len(read_csv(tmp_path / "report.csv")) == 1


def test_no_runs_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segkit-report: error: no run"), err
    assert str(tmp_path / "empty") in err[0] and str(tmp_path / "missing") in err[0]


def write_eval(directory: Path, confusion: list[list[list[int]]], files: list[str]) -> Path:
    directory.mkdir(parents=True)
    np.savez(directory / "per_image_confusion.npz", confusion=np.array(confusion, dtype=np.int64), files=np.array(files))
    return directory


# Per image 3 classes (the last absent everywhere). A errs on both images; B is right on every pixel.
A_IMAGES = [[[3, 1, 0], [0, 4, 0], [0, 0, 0]], [[2, 0, 0], [1, 1, 0], [0, 0, 0]]]
B_IMAGES = [[[4, 0, 0], [0, 4, 0], [0, 0, 0]], [[2, 0, 0], [0, 2, 0], [0, 0, 0]]]


def paired_json(out: Path) -> dict[str, Any]:
    return json.loads((out / "paired.json").read_text())


def test_paired_identical_results_differ_by_zero(tmp_path: Path) -> None:
    a = write_eval(tmp_path / "a", A_IMAGES, ["x.png", "y.png"])
    b = write_eval(tmp_path / "b", A_IMAGES, ["x.png", "y.png"])
    assert main(["--paired", str(a), str(b), "--resamples", "300", "--out", str(tmp_path / "out")]) == 0
    result = paired_json(tmp_path / "out")
    assert result["difference"] == 0.0 and result["low"] == 0.0 and result["high"] == 0.0
    assert result["fraction_not_better"] == 1.0 and result["resamples"] == 300
    assert "+0.0000" in (tmp_path / "out" / "paired.md").read_text()


def test_paired_b_better_on_every_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_eval(tmp_path / "runs" / "a", A_IMAGES, ["x.png", "y.png"])
    b = write_eval(tmp_path / "runs" / "b", B_IMAGES, ["x.png", "y.png"])
    assert main(["--paired", str(a), str(b), "--resamples", "500", "--seed", "3"]) == 0
    assert "mIoU B - A = +0.2857" in capsys.readouterr().out
    result = paired_json(tmp_path / "runs")  # default: next to A's directory
    # A's matrices sum to [[5, 1], [1, 5]] (class 3 absent): IoU 5/7 twice; B's mIoU is 1.
    assert result["miou_a"] == pytest.approx(5 / 7) and result["miou_b"] == 1.0
    assert result["difference"] == pytest.approx(2 / 7)
    assert 0 < result["low"] <= result["difference"] <= result["high"]
    assert result["fraction_not_better"] == 0.0
    assert result["n_images"] == 2 and result["n_classes"] == 3 and result["seed"] == 3


def test_paired_finds_the_eval_dir_of_a_run(tmp_path: Path) -> None:
    write_eval(tmp_path / "run_a" / "eval_test", A_IMAGES, ["x.png", "y.png"])
    write_eval(tmp_path / "run_b" / "eval_test", B_IMAGES, ["x.png", "y.png"])
    args = ["--paired", str(tmp_path / "run_a"), str(tmp_path / "run_b"), "--resamples", "50", "--out", str(tmp_path)]
    assert main(args) == 0
    assert paired_json(tmp_path)["difference"] == pytest.approx(2 / 7)


@pytest.mark.parametrize("files_b", [["x.png", "z.png"], ["y.png", "x.png"], ["x.png"]])
def test_paired_needs_the_same_images_in_the_same_order(tmp_path: Path, files_b: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    a = write_eval(tmp_path / "a", A_IMAGES, ["x.png", "y.png"])
    b = write_eval(tmp_path / "b", B_IMAGES[: len(files_b)], files_b)
    assert main(["--paired", str(a), str(b), "--resamples", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not evaluated on the same images" in err[0], err
    assert not (tmp_path / "paired.json").exists()


def test_paired_bootstrap_is_vectorised_over_many_images() -> None:
    from segkit.report.paired import paired_bootstrap

    rng = np.random.default_rng(0)
    a = rng.integers(0, 50, size=(2000, 21, 21))
    result = paired_bootstrap(a, a + 5 * np.eye(21, dtype=np.int64), resamples=1000, seed=1)
    assert 0 < result.low < result.difference < result.high and result.fraction_not_better == 0.0


def test_console_script_runs(multirun: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = subprocess.run([*REPORT_CMD, str(multirun), "--out", str(out), "--no-figures"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, describe(proc)
    assert f"wrote {out / 'report.md'}" in proc.stdout
    help_proc = subprocess.run([*REPORT_CMD, "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert help_proc.returncode == 0 and "segkit-report --paired" in help_proc.stdout


@pytest.mark.timeout(400)
def test_a_real_sweep_reports_the_values_each_run_logged(tmp_path: Path) -> None:
    # segkit-train -m over two seeds (tiny runs), then segkit-report on the multirun directory:
    # each row equals the run's metrics.json, which equals what the run logged to TensorBoard.
    from helpers import QUIET_CALLBACKS, TINY, TRAIN_CMD, run_cli
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep = tmp_path / "sweep"
    proc = run_cli(TRAIN_CMD, ["-m", *TINY, *QUIET_CALLBACKS, "seed=1,2", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    proc = subprocess.run([*REPORT_CMD, str(sweep)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, describe(proc)
    rows = {Path(row["run_dir"]).name: row for row in read_csv(sweep / "report.csv")}
    assert sorted(rows) == ["0", "1"] and [rows[j]["seed"] for j in ("0", "1")] == ["1", "2"]
    for job, row in rows.items():
        logged = json.loads((sweep / job / "metrics.json").read_text())
        assert float(row["test/mIoU"]) == logged["test"]["mIoU"]
        assert float(row["val/mIoU_best"]) == logged["val"]["mIoU_best"]
        events = EventAccumulator(str(sweep / job / "tensorboard"))
        events.Reload()
        assert events.Scalars("test/mIoU")[-1].value == pytest.approx(logged["test"]["mIoU"], abs=1e-7)
        assert events.Scalars("val/mIoU")[-1].value == pytest.approx(logged["val"]["mIoU"], abs=1e-7)
    by_config = read_csv(sweep / "report_by_config.csv")
    assert len(by_config) == 1 and by_config[0]["n"] == "2"  # the seeds of one configuration
