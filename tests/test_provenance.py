"""Provenance: a result found months later says which code, packages, machine and command made it.

One real ``segkit-train`` run, started in a git repository of "the user's own code" with a
modified tracked file, is checked against the facts read independently here: metrics.json's
``provenance``, the TensorBoard hparams, ``segkit-report --columns``. The git probing itself is
checked on temporary repositories.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import platform
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers import REPO_ROOT, TINY, TRAIN_CMD, describe, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from segkit.cli.report import main as report
from segkit.training.provenance import CORE_PACKAGES, collect_provenance, git_state, start_git_probes

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def make_repo(path: Path) -> Path:
    """A git repository with one committed file, ``code.py``."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    (path / "code.py").write_text("x = 1\n")
    git(path, "add", "code.py")
    git(path, "commit", "-q", "-m", "first")
    return path


def segkit_commit() -> str | None:
    """HEAD of the checkout segkit runs from, as git says, or None outside a checkout."""
    found = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """segkit-train started in a user's repository whose tracked ``code.py`` is modified."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    root = make_repo(tmp_path_factory.mktemp("user_project"))
    (root / "code.py").write_text("x = 2\n")
    before = segkit_commit()
    args = [*TINY, "test=false", "seed=7", f"hydra.run.dir={root / 'run'}"]
    proc = run_cli(TRAIN_CMD, args, root)
    assert proc.returncode == 0, describe(proc)
    record = json.loads((root / "run" / "metrics.json").read_text())
    # Another commit may land meanwhile: the recorded one is HEAD from before or after the run.
    return {"root": root, "run_dir": root / "run", "record": record, "commits": {before, segkit_commit()},
            "args": args}


def test_metrics_json_records_package_versions_as_installed(run: dict) -> None:
    versions = run["record"]["provenance"]["versions"]
    assert versions["python"] == platform.python_version()
    for name in CORE_PACKAGES:
        assert versions[name] == importlib.metadata.version(name), name
    for extra, name in (("onnx", "onnx"), ("optuna", "optuna"), ("tifffile", "tifffile")):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            assert extra not in versions  # an extra not installed is not listed
        else:
            assert versions[extra] == installed


def test_metrics_json_records_segkits_commit_and_the_users_repository(run: dict) -> None:
    found = run["record"]["provenance"]
    assert found["git_commit"] in run["commits"]
    if found["git_commit"] is not None:  # segkit runs from its checkout (an editable install)
        assert Path(found["git_root"]) == REPO_ROOT and isinstance(found["git_dirty"], bool)
    # The working directory is the user's repository: its commit, and dirty (code.py modified;
    # the run's own untracked logs do not count).
    assert found["workdir_git"] == {"root": str(run["root"].resolve()), "commit": git(run["root"], "rev-parse", "HEAD"),
                                    "dirty": True}


def test_metrics_json_records_the_machine_devices_and_command_line(run: dict) -> None:
    found = run["record"]["provenance"]
    assert found["hostname"] == socket.gethostname()
    assert (found["accelerator"], found["devices"], found["num_nodes"], found["world_size"]) == ("cpu", 1, 1, 1)
    assert found["cuda_devices"] == [] and found["cpu_count"] >= 1
    assert found["argv"][1:] == run["args"]  # as typed, after the program
    assert found["cwd"] == str(run["root"])


def test_tensorboard_hparams_hold_the_provenance_as_strings(run: dict) -> None:
    events = EventAccumulator(str(run["run_dir"] / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    found = run["record"]["provenance"]
    assert hparams["provenance/versions/torch"].string_value == found["versions"]["torch"]
    assert hparams["provenance/git_commit"].string_value == (found["git_commit"] or "")
    assert hparams["provenance/workdir_git/dirty"].string_value == "True"
    assert "seed=7" in hparams["provenance/argv"].string_value


def test_segkit_report_shows_record_values_as_columns(run: dict, tmp_path: Path) -> None:
    columns = ["provenance.git_commit", "provenance.versions.torch", "provenance/hostname", "provenance.argv"]
    assert report([str(run["run_dir"]), "--out", str(tmp_path), "--no-figures", "--columns", *columns]) == 0
    with (tmp_path / "report.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    found = run["record"]["provenance"]
    assert row["provenance.git_commit"] == (found["git_commit"] or "")
    assert row["provenance.versions.torch"] == importlib.metadata.version("torch")
    assert row["provenance/hostname"] == socket.gethostname()
    assert "seed=7" in row["provenance.argv"].split()
    markdown = (tmp_path / "report.md").read_text()
    assert "| provenance.versions.torch |" in markdown and f"| {importlib.metadata.version('torch')} |" in markdown


@needs_git
def test_dirty_means_a_modified_tracked_file_not_an_untracked_one(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    clean = git_state(repo / ".")
    assert clean == {"root": str(repo.resolve()), "commit": git(repo, "rev-parse", "HEAD"), "dirty": False}
    (repo / "notes.txt").write_text("untracked\n")
    assert git_state(repo)["dirty"] is False
    (repo / "code.py").write_text("x = 3\n")
    assert git_state(repo)["dirty"] is True
    git(repo, "commit", "-q", "-am", "second")
    assert git_state(repo)["commit"] == git(repo, "rev-parse", "HEAD") != clean["commit"]


@needs_git
def test_a_workdir_inside_segkits_checkout_is_not_recorded_twice(tmp_path: Path) -> None:
    found = collect_provenance(git=start_git_probes(REPO_ROOT / "tests"))
    assert found["workdir_git"] is None
    assert found["git_commit"] == segkit_commit() or found["git_commit"] is None


def test_without_git_or_a_repository_the_facts_are_null(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert git_state(tmp_path) is None  # not a repository
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    found = collect_provenance(git=start_git_probes(tmp_path))
    assert (found["git_commit"], found["git_dirty"], found["workdir_git"]) == (None, None, None)


def test_a_git_that_hangs_costs_the_run_at_most_a_moment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = tmp_path / "bin" / "git"
    slow.parent.mkdir()
    slow.write_text("#!/bin/sh\nsleep 3\n")
    slow.chmod(0o755)
    monkeypatch.setenv("PATH", f"{slow.parent}:/usr/bin:/bin")
    started = time.monotonic()
    found = collect_provenance(git=start_git_probes(tmp_path))
    assert time.monotonic() - started < 1.0  # GIT_DEADLINE_S (0.1 s), then null
    assert found["git_commit"] is None and found["workdir_git"] is None
