"""Scaling out, simulated on one machine: a run over 2 nodes (Lightning's environment variables,
and a 2-task SLURM job step), and an Optuna study whose trials train on 2 DDP processes."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import QUIET_CALLBACKS, TINY_DATA, TINY_MODEL, TRAIN_CMD, cli_env, describe, run_cli

TESTS_DIR = str(Path(__file__).parent)
# 2 processes of 1 CPU device each, over gloo: 2 steps an epoch on each of 2 ranks.
TWO_NODES = [*TINY_DATA, *TINY_MODEL, *QUIET_CALLBACKS, "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2",
             "trainer.max_epochs=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two_nodes(root: Path, run_dir: Path, envs: list[dict[str, str]]) -> list[subprocess.CompletedProcess[str]]:
    """Start both "nodes" of one run at once (each waits for the other) and wait for both."""
    root.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen([*TRAIN_CMD, *TWO_NODES, f"hydra.run.dir={run_dir}"], cwd=root, env=cli_env(root, **env),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for env in envs]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def _final_metrics(proc: subprocess.CompletedProcess[str]) -> str:
    found = re.search(r"final metrics: (.*)", proc.stdout + proc.stderr)
    assert found, describe(proc)
    return found.group(1)


def _assert_one_run(root: Path, run_dir: Path, procs: list[subprocess.CompletedProcess[str]]) -> None:
    for proc in procs:
        assert proc.returncode == 0, describe(proc)
    # Both ranks report the same (synced) scores.
    rank0, rank1 = (_final_metrics(proc) for proc in procs)
    assert rank0 == rank1 and "val/mIoU=" in rank0 and "test/mIoU=" in rank0
    # One run directory, its metrics.json written once (by rank 0) and equal to what was reported.
    assert [p for p in root.rglob("metrics.json")] == [run_dir / "metrics.json"]
    assert [("wrote " + str(run_dir / "metrics.json")) in p.stdout + p.stderr for p in procs] == [True, False]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert f"test/mIoU={record['test']['mIoU']:.4f}" in rank0
    # 16 scenes, batch 4, 2 ranks: 2 steps an epoch, so 4 in 2 epochs (8 on one process).
    assert record["global_step"] == 4
    assert sorted(p.name for p in root.rglob("*.ckpt")) == sorted(p.name for p in (run_dir / "checkpoints").iterdir())


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_nodes_of_one_process_each_on_localhost_make_one_run(tmp_path: Path) -> None:
    port = str(_free_port())
    run_dir = tmp_path / "run"
    procs = _launch_two_nodes(tmp_path, run_dir, [
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(rank)} for rank in (0, 1)
    ])
    _assert_one_run(tmp_path, run_dir, procs)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_two_task_slurm_job_step_makes_one_run(tmp_path: Path) -> None:
    # What `srun` starts for `#SBATCH --nodes=2 --ntasks-per-node=1`: one task per node, ranks
    # and addresses from SLURM_* variables (Lightning's SLURM environment).
    slurm = {"SLURM_JOB_ID": "777", "SLURM_JOB_NAME": "segkit-test", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1",
             "SLURM_NODELIST": "localhost", "SLURM_LOCALID": "0", "MASTER_PORT": str(_free_port())}
    run_dir = tmp_path / "slurm-777"
    procs = _launch_two_nodes(tmp_path, run_dir, [
        {**slurm, "SLURM_PROCID": str(rank), "SLURM_NODEID": str(rank)} for rank in (0, 1)
    ])
    _assert_one_run(tmp_path, run_dir, procs)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_optuna_study_on_two_ddp_processes_trains_each_trial_on_both_ranks_with_its_parameters(tmp_path: Path) -> None:
    # Lightning starts rank 1 by running the command line again; in a sweep that line is the
    # study, so rank 1 would sample its own trial unless segkit narrows it to the job's overrides.
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(TRAIN_CMD, [
        "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
        f"hydra.sweep.dir={sweep_dir}", *TINY_DATA, "model.depth=2", *QUIET_CALLBACKS, "trainer=ddp_cpu", "trainer.max_epochs=1",
        "+callbacks.ranks._target_=helpers.RecordRankHparams", "+callbacks.ranks.dir=${paths.output_dir}/ranks",
    ], tmp_path, timeout=600, PYTHONPATH=TESTS_DIR)
    assert proc.returncode == 0, describe(proc)
    trials = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in trials] == ["0", "1"]
    learning_rates = []
    for trial in trials:
        overrides = yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text())
        sampled = dict(override.split("=", 1) for override in overrides)
        rank0, rank1 = (json.loads((trial / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1))
        assert rank0 == rank1, f"trial {trial.name}: the ranks trained different parameters"
        assert rank0["optimizer"]["lr"] == pytest.approx(float(sampled["model.optimizer.lr"]))
        assert rank0["optimizer"]["weight_decay"] == pytest.approx(float(sampled["model.optimizer.weight_decay"]))
        assert rank0["base_width"] == int(sampled["model.base_width"])
        learning_rates.append(rank0["optimizer"]["lr"])
    assert learning_rates[0] != learning_rates[1]  # two trials, two samples
    assert not list(tmp_path.glob("logs/train/runs/*"))  # rank 1 wrote into its trial's directory, not a run of its own
