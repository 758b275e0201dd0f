"""segkit's Optuna sweeper (hydra_plugins/segkit_optuna_sweeper) on a tiny Hydra app, tests/optuna_app.py."""

from __future__ import annotations

import doctest
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_env, describe
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

# Optuna is an optional extra (segkit[sweep]): without it this file is skipped, not a collection error.
optuna = pytest.importorskip("optuna")

from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState  # noqa: E402

from hydra_plugins.segkit_optuna_sweeper import _search_space  # noqa: E402
from hydra_plugins.segkit_optuna_sweeper._search_space import parse_search_space  # noqa: E402
from segkit.sweeps.storage import open_study  # noqa: E402

APP = Path(__file__).resolve().parent / "optuna_app.py"
X_PARAM = "+hydra.sweeper.params.x='interval(0, 1)'"
CYCLING = "+hydra.sweeper.sampler._target_=optuna_app.CyclingSampler"


def sweep(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """``optuna_app.py -m`` with the segkit_optuna sweeper, sweep dir ``tmp_path/sweep``."""
    command = [sys.executable, str(APP), "-m", "hydra/sweeper=segkit_optuna",
               f"hydra.sweep.dir={tmp_path / 'sweep'}", f"calls={tmp_path / 'calls.jsonl'}", *overrides]
    return subprocess.run(command, check=False, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=180)


def load_trials(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    return open_study("segkit", str(tmp_path / "sweep" / "optuna.journal")).get_trials()


def worker_logs(tmp_path: Path) -> str:
    """What the local workers of ``hydra.sweeper.n_jobs > 1`` printed."""
    return "".join(p.read_text() for p in sorted((tmp_path / "sweep" / "workers").glob("local_*.log")))


def calls(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def job_records(tmp_path: Path) -> dict[int, dict]:
    """Job number -> the task.json the task wrote in that job directory."""
    jobs = [p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name.isdigit()]
    return {int(p.name): json.loads((p / "task.json").read_text()) for p in jobs}


@pytest.mark.parametrize(("value", "expected"), [
    ("choice(8, 16, 32)", CategoricalDistribution([8, 16, 32])),
    ("a,b", CategoricalDistribution(["a", "b"])),
    ("interval(0.001, 0.1)", FloatDistribution(0.001, 0.1)),
    ("tag(log, interval(1e-5, 1e-3))", FloatDistribution(1e-5, 1e-3, log=True)),
    ("range(1, 5)", IntDistribution(1, 4)),
    ("range(1, 10, 3)", IntDistribution(1, 7, step=3)),
    ("int(interval(1, 8))", IntDistribution(1, 8)),
    ("tag(log, int(interval(1, 64)))", IntDistribution(1, 64, log=True)),
])
def test_each_sweep_form_maps_to_its_optuna_distribution(value: str, expected: object) -> None:
    space = parse_search_space({"model.lr": value})
    assert space.distributions == {"model.lr": expected}
    assert space.fixed == []


def test_a_sampled_choice_is_written_back_as_an_override_giving_the_same_value() -> None:
    space = parse_search_space({"k": "choice(x, '8', 'y z', 'true', 1e-05, false)"})
    parser = OverridesParser.create()
    for choice in space.distributions["k"].choices:
        (override,) = parser.parse_overrides([space.params["k"].override(choice)])
        assert override.value() == choice and type(override.value()) is type(choice)


def test_command_line_sweeps_join_the_search_and_plain_values_fix_their_key() -> None:
    space = parse_search_space(
        {"a": "choice(1, 2)", "b": "interval(0, 1)"}, ["a=3", "c=1,2", "+d=5", "b=range(1, 3)"]
    )
    assert space.fixed == ["a=3", "+d=5"]
    assert space.distributions == {"c": CategoricalDistribution([1, 2]), "b": IntDistribution(1, 2)}
    assert space.overrides({"c": 2, "b": 1}) == ["a=3", "+d=5", "c=2", "b=1"]


def test_the_docstring_example_runs() -> None:
    result = doctest.testmod(_search_space)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("value", [
    "range(0.1, 0.5, 0.1)",  # floats: use interval() or choice()
    "range(5, 1)",  # empty
    "tag(log, choice(1, 2))",
    "tag(fast, interval(0, 1))",
    "tag(log, interval(0, 1))",  # Optuna: a log scale needs low > 0
    "interval(2, 1)",
    "choice(1, 2",
])
def test_an_unsupported_form_is_a_clear_error_naming_key_and_value(value: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"'model.lr={value}'")):
        parse_search_space({"model.lr": value})


@pytest.mark.timeout(300)
def test_raising_and_nan_trials_are_recorded_as_failed_and_the_study_goes_on(tmp_path: Path) -> None:
    # The cycling sampler gives trial n mode number n % 4: two trials of each mode; 3 workers.
    proc = sweep(tmp_path, "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=3", X_PARAM, CYCLING,
                 "mode=ok,raise,return_nan,return_none")
    assert proc.returncode == 0, describe(proc)
    trials = load_trials(tmp_path)
    assert [t.number for t in trials] == list(range(8))
    for trial in trials:
        if trial.params["mode"] == "ok":
            assert trial.state == TrialState.COMPLETE, trial
            assert trial.value == pytest.approx(10 * trial.params["x"])
        else:
            assert trial.state == TrialState.FAIL, trial
    assert sorted(t.params["mode"] for t in trials if t.state == TrialState.COMPLETE) == ["ok", "ok"]
    output = worker_logs(tmp_path)
    assert re.search(r"trial 1 .*'raise'.* failed: ValueError: mode=raise", output), output
    assert re.search(r"trial 2 .*'return_nan'.* returned nan", output), output
    # Each job directory is its trial's: job number = trial number.
    assert {job: (r["x"], r["mode"]) for job, r in job_records(tmp_path).items()} == {
        t.number: (pytest.approx(t.params["x"]), t.params["mode"]) for t in trials
    }
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert results.name == "optuna"
    assert results.best_value == pytest.approx(best.value)
    assert dict(results.best_params) == best.params


@pytest.mark.timeout(300)
def test_a_killed_study_continues_where_it_stopped(tmp_path: Path) -> None:
    overrides = ["hydra.sweeper.n_trials=5", X_PARAM, "kill_at_call=3", f"kill_marker={tmp_path / 'killed'}",
                 "+hydra.sweeper.sampler._target_=optuna.samplers.TPESampler", "+hydra.sweeper.sampler.seed=7"]
    first = sweep(tmp_path, *overrides)
    assert first.returncode == -signal.SIGKILL, describe(first)
    before = load_trials(tmp_path)
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]

    second = sweep(tmp_path, *overrides)
    assert second.returncode == 0, describe(second)
    output = second.stdout + second.stderr
    assert re.search(r"continuing trial 2 .* in \S+/sweep/2: its worker .* stopped", output), output
    assert "sweep worker 1 of study segkit" in output and "2 of 5 trials finished" in output, output
    after = load_trials(tmp_path)
    assert [t.state for t in after] == [TrialState.COMPLETE] * 5
    assert [(t.params, t.value) for t in after[:3]] == [(t.params, t.value) for t in before[:2]] + [
        (before[2].params, pytest.approx(10 * before[2].params["x"]))]
    # The second worker samples with seed 7 + 1: it does not repeat the first worker's trials.
    assert after[3].params != after[0].params
    # The killed trial ran again in its own directory; the others ran once.
    first_pid, second_pid = calls(tmp_path)[0]["pid"], calls(tmp_path)[-1]["pid"]
    assert first_pid != second_pid
    assert [(c["pid"], c["job"]) for c in calls(tmp_path)] == [
        (first_pid, 0), (first_pid, 1), (first_pid, 2), (second_pid, 2), (second_pid, 3), (second_pid, 4)
    ]
    assert {job: r["pid"] for job, r in job_records(tmp_path).items()} == {
        0: first_pid, 1: first_pid, 2: second_pid, 3: second_pid, 4: second_pid
    }


@pytest.mark.timeout(300)
def test_a_study_whose_trials_all_fail_exits_with_an_error(tmp_path: Path) -> None:
    proc = sweep(tmp_path, "hydra.sweeper.n_trials=3", X_PARAM, "mode=raise")
    assert proc.returncode != 0, describe(proc)
    assert "none of the 3 trials of Optuna study 'segkit' completed" in proc.stdout + proc.stderr, describe(proc)
    assert [t.state for t in load_trials(tmp_path)] == [TrialState.FAIL] * 3
    assert not (tmp_path / "sweep" / "optimization_results.yaml").exists()
