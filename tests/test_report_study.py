"""segkit-report on a sweep directory holding an Optuna study (journal, legacy SQLite, multirun.yaml's URL)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from helpers import console_command, describe
from PIL import Image

optuna = pytest.importorskip("optuna")
from optuna.distributions import CategoricalDistribution, FloatDistribution  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from segkit.report.study import TrialInfo, best_so_far  # noqa: E402
from segkit.sweeps.ownership import SECONDS  # noqa: E402
from segkit.sweeps.storage import open_study  # noqa: E402

REPORT_CMD = console_command("segkit-report", "segkit.cli.report")
T0 = datetime(2025, 1, 1, 12, 0, 0)
SPACE = {"model.optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True),
         "model.base_width": CategoricalDistribution([8, 16, 32])}
# number, state, value, params, seconds (None: none recorded), intermediate values, start and end (s after T0).
# Completion order: 0, 2 (pruned), 1, 3 (failed), 5; trial 4 still runs. Trial 5 predates segkit:seconds.
TRIALS = [
    (0, TrialState.COMPLETE, 0.60, {"model.optimizer.lr": 0.01, "model.base_width": 8}, 100.0,
     {100: 0.4, 200: 0.5, 300: 0.6}, 0, 120),
    (1, TrialState.COMPLETE, 0.80, {"model.optimizer.lr": 0.002, "model.base_width": 16}, 250.0,
     {100: 0.5, 200: 0.7, 300: 0.8}, 10, 400),
    (2, TrialState.PRUNED, None, {"model.optimizer.lr": 0.09, "model.base_width": 32}, 40.0,
     {100: 0.1}, 130, 170),
    (3, TrialState.FAIL, None, {"model.optimizer.lr": 0.05, "model.base_width": 8}, 5.0, {}, 180, 410),
    (4, TrialState.RUNNING, None, {"model.optimizer.lr": 0.003, "model.base_width": 16}, 60.0, {100: 0.55}, 420, None),
    (5, TrialState.COMPLETE, 0.70, {"model.optimizer.lr": 0.004, "model.base_width": 32}, None,
     {100: 0.5, 200: 0.6, 300: 0.7}, 415, 505),
]
# compute in completion order: 100, +40, +250, +5, +90 (505 - 415, from the times).
PROGRESS = [(100.0, 0.6, "COMPLETE"), (140.0, 0.6, "PRUNED"), (390.0, 0.8, "COMPLETE"),
            (395.0, 0.8, "FAIL"), (485.0, 0.8, "COMPLETE")]


def add_trials(study: optuna.Study) -> None:
    for number, state, value, params, seconds, steps, start, end in TRIALS:
        study.add_trial(FrozenTrial(
            number=number, state=state, value=value, values=None, params=params,
            distributions={k: SPACE[k] for k in params}, user_attrs={},
            system_attrs={} if seconds is None else {SECONDS: seconds}, intermediate_values=steps,
            datetime_start=T0 + timedelta(seconds=start),
            datetime_complete=None if end is None else T0 + timedelta(seconds=end), trial_id=number))


def make_sweep(sweep: Path, url: str, multirun: str = "hydra:\n  sweeper:\n    study_name: s1\n") -> Path:
    """A sweep directory: multirun.yaml, the study, job dirs (metrics.json for the completed trials)."""
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "multirun.yaml").write_text(multirun)
    add_trials(open_study("s1", url, direction="maximize"))
    for number, state, value, params, *_ in TRIALS:
        (sweep / str(number) / ".hydra").mkdir(parents=True)
        if state == TrialState.COMPLETE:
            overrides = [f"{k}={v}" for k, v in params.items()]
            record = {"overrides": overrides, "val": {"mIoU_best": value, "mIoU": value}}
            (sweep / str(number) / "metrics.json").write_text(json.dumps(record))
    return sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def run_report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REPORT_CMD, *args], capture_output=True, text=True, timeout=120, check=False)


def test_best_so_far_orders_by_completion_and_ignores_failed_and_pruned() -> None:
    trials = [TrialInfo(n, s.name, None if v is None else (v,), seconds=sec if sec is not None else end - start,
                        complete=None if end is None else T0 + timedelta(seconds=end))
              for n, s, v, _, sec, _, start, end in TRIALS]
    points = best_so_far(trials, "maximize")
    assert [(p.compute, p.best, p.trial.state) for p in points] == PROGRESS
    assert [p.trial.number for p in points] == [0, 2, 1, 3, 5]
    # minimising: the lower value is best; a FAIL with a value (never from segkit) is still ignored.
    hand = [TrialInfo(0, "FAIL", (0.1,), seconds=1.0, complete=T0), TrialInfo(1, "COMPLETE", (0.5,), seconds=2.0,
            complete=T0 + timedelta(1)), TrialInfo(2, "COMPLETE", (0.3,), complete=T0 + timedelta(2))]
    assert [(p.compute, p.best) for p in best_so_far(hand, "minimize")] == [(1.0, None), (3.0, 0.5), (3.0, 0.3)]


def test_report_reads_the_journal_study(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "sweep", str(tmp_path / "sweep" / "optuna.journal"))
    proc = run_report(str(sweep))
    assert proc.returncode == 0, describe(proc)
    assert "Optuna study 's1': 6 trials (3 COMPLETE, 1 PRUNED, 1 FAIL, 1 RUNNING); best trial 1: 0.8" in proc.stdout
    rows = read_csv(sweep / "study_trials.csv")
    assert list(rows[0]) == ["trial", "state", "value", "model.optimizer.lr", "model.base_width", "compute_s",
                             "n_intermediate", "last_step", "last_intermediate", "datetime_start",
                             "datetime_complete", "job_dir"]
    assert [(r["trial"], r["state"], r["value"]) for r in rows] == [
        ("0", "COMPLETE", "0.6"), ("1", "COMPLETE", "0.8"), ("2", "PRUNED", ""), ("3", "FAIL", ""),
        ("4", "RUNNING", ""), ("5", "COMPLETE", "0.7")]
    assert [float(r["model.optimizer.lr"]) for r in rows] == [t[3]["model.optimizer.lr"] for t in TRIALS]
    assert [r["model.base_width"] for r in rows] == ["8", "16", "32", "8", "16", "32"]
    assert [r["compute_s"] for r in rows] == ["100.0", "250.0", "40.0", "5.0", "60.0", "90.0"]  # 5: from its times
    assert [(r["n_intermediate"], r["last_step"], r["last_intermediate"]) for r in rows] == [
        ("3", "300", "0.6"), ("3", "300", "0.8"), ("1", "100", "0.1"), ("0", "", ""), ("1", "100", "0.55"),
        ("3", "300", "0.7")]
    assert [r["job_dir"] for r in rows] == [str((sweep / str(n)).resolve()) for n in range(6)]
    assert rows[4]["datetime_complete"] == "" and rows[0]["datetime_start"] == T0.isoformat()
    with Image.open(sweep / "study_progress.png") as image:
        assert image.format == "PNG" and image.width > 500 and image.height > 200
    markdown = (sweep / "report.md").read_text()
    section = markdown.split("## Optuna study `s1`")[1].split("## Configurations")[0]
    assert "| PRUNED | 1 |" in section and "| WAITING | 0 |" in section
    assert "Best: trial 1, value 0.8000." in section and "| model.base_width | 16 |" in section
    assert "| 2 | PRUNED |  | 0.09 | 32 | 40.0 | 1 | 100 | 0.1000 |" in section
    assert "](study_progress.png)" in section
    assert len(read_csv(sweep / "report.csv")) == 3  # the per-run report of the completed jobs still works


def test_legacy_sqlite_and_a_url_in_multirun_yaml(tmp_path: Path) -> None:
    legacy = make_sweep(tmp_path / "legacy", f"sqlite:///{tmp_path / 'legacy' / 'optuna.db'}")
    elsewhere = tmp_path / "shared" / "studies.db"
    elsewhere.parent.mkdir()
    named = make_sweep(tmp_path / "named", f"sqlite:///{elsewhere}",
                       f"hydra:\n  sweeper:\n    study_name: s1\n    storage: sqlite:///{elsewhere}\n")
    for sweep in (legacy, named):
        proc = run_report(str(sweep), "--no-figures")
        assert proc.returncode == 0, describe(proc)
        rows = read_csv(sweep / "study_trials.csv")
        assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL", "RUNNING", "COMPLETE"]
        assert not (sweep / "study_progress.png").exists()


def test_the_only_study_is_read_when_the_name_differs(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "sweep", str(tmp_path / "sweep" / "optuna.journal"), "hydra: {}\n")
    proc = run_report(str(sweep), "--no-figures")  # study_name defaults to segkit; the journal holds s1 only
    assert proc.returncode == 0, describe(proc)
    assert "## Optuna study `s1`" in (sweep / "report.md").read_text()


def test_a_sweep_without_a_study_has_no_study_section(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "metrics.json").write_text(json.dumps({"overrides": ["seed=1"], "val": {"mIoU_best": 0.5}}))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    proc = run_report(str(sweep))
    assert proc.returncode == 0, describe(proc)
    assert "Optuna" not in (sweep / "report.md").read_text() and "Optuna" not in proc.stdout
    assert not (sweep / "study_trials.csv").exists() and not (sweep / "study_progress.png").exists()


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_an_unreadable_storage_is_one_line_naming_it(tmp_path: Path, damage: str) -> None:
    sweep = make_sweep(tmp_path / "sweep", str(tmp_path / "sweep" / "optuna.journal"))
    journal = sweep / "optuna.journal"
    if damage == "garbage":
        journal.write_bytes(b"\x00not json\n{}\n")
    else:
        journal.unlink()
        (sweep / "multirun.yaml").write_text(f"hydra:\n  sweeper:\n    storage: {tmp_path / 'gone.journal'}\n")
    proc = run_report(str(sweep))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, describe(proc)
    assert lines[0].startswith("segkit-report: error: ")
    assert str(journal if damage == "garbage" else tmp_path / "gone.journal") in lines[0]
    assert not (sweep / "report.md").exists()  # read before anything is written


def test_without_optuna_a_plain_sweep_reports_and_a_study_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from segkit.cli.report import main

    sweep = make_sweep(tmp_path / "sweep", str(tmp_path / "sweep" / "optuna.journal"))
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    monkeypatch.delitem(sys.modules, "segkit.sweeps.storage", raising=False)
    assert main([str(sweep), "--no-figures"]) == 0
    assert f"skipped the study of {sweep}: its Optuna study needs optuna: pip install 'segkit[sweep]'" in capsys.readouterr().out
    assert len(read_csv(sweep / "report.csv")) == 3 and not (sweep / "study_trials.csv").exists()
