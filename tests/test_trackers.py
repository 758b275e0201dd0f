"""W&B and MLflow (``logger=wandb``, ``logger=mlflow``, lists such as
``'logger=[tensorboard,wandb,mlflow]'``): real offline ``segkit-train`` runs, read back from the
files they write; and the one-line error, before any run directory, when a package is missing.

The trackers stay offline and inside tmp dirs: ``WANDB_MODE=offline`` besides the config's own
``offline: true``, ``WANDB_DIR`` pointed at a folder that must stay empty (the config's
``save_dir`` wins), wandb's per-user folders (config, cache: its service's debug logs, data,
artifacts) pointed into the test's tmp dir, MLflow's telemetry off.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import TINY, TRAIN_CMD, CliRun, assert_one_line_error, cli_env, describe, needs, run_in_process, task_config

from segkit.errors import SegkitError
from segkit.training import trackers
from segkit.training.trackers import INSTALL, missing_tracker_packages

needs_wandb = needs("wandb", INSTALL)
needs_mlflow = needs("mlflow", INSTALL)
RUN = [*TINY, "trainer.max_epochs=2", "tags=[smoke,trackers]"]


def tracker_env(tmp: Path) -> dict[str, str]:
    """The environment of a command under test: every tracker variable of this shell dropped,
    then offline, per-user folders under ``tmp``."""
    env = {k: v for k, v in cli_env().items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    env.update({name: str(tmp / "user" / name.lower())
                for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR")})
    env.update(WANDB_MODE="offline", WANDB_DIR=str(tmp / "wandb_dir_env"), MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="true")
    return env


def train_cli(args: list[str], root: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run([*TRAIN_CMD, *args], cwd=root, capture_output=True, text=True, timeout=300,
                          env={**(env or tracker_env(root.parent)), "SEGKIT_ROOT": str(root)})


# --- reading a wandb offline run (its .wandb file: LevelDB's log format of protobuf records) --

def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a ``run-<id>.wandb`` file (wandb >= 0.19 has no reader of its own)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunks = path.read_bytes(), 32768, 7, []
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path}: not a wandb run file"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunks.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST: a record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def read_wandb_run(run_dir: Path) -> dict[str, Any]:
    """The W&B offline run in a segkit run directory: its run record, history rows, config, exit."""
    [run_file] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    run: dict[str, Any] = {"history": [], "config": {}, "file": run_file}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["run"] = record.run
        elif kind == "history":
            run["history"].append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                   for item in record.history.item})
        elif kind == "config":
            run["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def mlflow_client(root: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{root}/logs/mlflow.db")


# --- one run with every logger --------------------------------------------------------------


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    if not (trackers.is_installed("wandb") and trackers.is_installed("mlflow")):
        pytest.skip(f"needs wandb and mlflow: {INSTALL}")
    root = tmp_path_factory.mktemp("trackers") / "root"
    proc = train_cli(["logger=[tensorboard,wandb,mlflow]", *RUN], root)
    assert proc.returncode == 0, describe(proc)
    [run_dir] = (root / "logs" / "train" / "runs").iterdir()
    return CliRun(root=root, run_dir=run_dir, proc=proc)


def test_wandb_offline_run_holds_the_runs_metrics_hparams_and_name(tracked_run: CliRun) -> None:
    record = json.loads((tracked_run.run_dir / "metrics.json").read_text())
    run = read_wandb_run(tracked_run.run_dir)
    val = [row for row in run["history"] if "val/mIoU" in row]
    assert len(val) == 2  # one validation per epoch
    assert val[-1]["val/mIoU"] == pytest.approx(record["val"]["mIoU"])
    assert any("test/mIoU" in row for row in run["history"])
    # segkit's run config (log_run_config) as the W&B config.
    assert run["config"]["model/params/total"] == record["parameters"]["total"]
    assert run["config"]["task_name"] == "train" and run["config"]["seed"] == 42
    assert run["run"].display_name == f"train/runs/{tracked_run.run_dir.name}"
    assert (run["run"].project, run["run"].job_type) == ("segkit", "train")
    assert list(run["run"].tags) == ["smoke", "trackers"]
    assert run["exit_code"] == 0  # finished, so `wandb sync` uploads a complete run
    # The config's save_dir beats WANDB_DIR; wandb tells how to upload the run.
    assert not (tracked_run.root.parent / "wandb_dir_env").exists()
    output = tracked_run.proc.stdout + tracked_run.proc.stderr
    assert "wandb sync" in output and run["file"].parent.name in output


def test_mlflow_store_holds_the_run_with_its_metrics_and_params(tracked_run: CliRun, monkeypatch: pytest.MonkeyPatch) -> None:
    record = json.loads((tracked_run.run_dir / "metrics.json").read_text())
    client = mlflow_client(tracked_run.root, monkeypatch)
    experiment = client.get_experiment_by_name("train")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == f"train/runs/{tracked_run.run_dir.name}"
    assert run.info.status == "FINISHED"
    assert run.data.metrics["val/mIoU"] == pytest.approx(record["val"]["mIoU"])
    assert run.data.metrics["test/mIoU"] == pytest.approx(record["test"]["mIoU"])
    assert len(client.get_metric_history(run.info.run_id, "val/mIoU")) == 2
    assert run.data.params["model/params/total"] == str(record["parameters"]["total"])
    assert run.data.params["model/base_width"] == "4"
    # Artifacts (none: log_model=false) would go beside the store, not into ./mlruns.
    assert experiment.artifact_location.startswith(str(tracked_run.root / "logs"))
    assert not (tracked_run.root / "mlruns").exists()


def test_tensorboard_logs_beside_the_trackers(tracked_run: CliRun) -> None:
    assert list((tracked_run.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert not (tracked_run.run_dir / "csv").exists()
    # The run directory and the MLflow store, nothing else in the root (the working directory).
    assert [p.name for p in tracked_run.root.iterdir()] == ["logs"]


@needs_wandb
@needs_mlflow
def test_each_job_of_a_sweep_gets_its_own_tracker_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lightning's WandbLogger reuses an open W&B run: segkit ends it with each job.
    root = tmp_path / "root"
    proc = train_cli(["-m", "logger=[wandb,mlflow]", *TINY, "test=false", "seed=1,2"], root)
    assert proc.returncode == 0, describe(proc)
    [sweep] = (root / "logs" / "train" / "multiruns").iterdir()
    runs = [read_wandb_run(sweep / job) for job in ("0", "1")]
    assert [r["run"].display_name for r in runs] == [f"train/multiruns/{sweep.name}/{job}" for job in ("0", "1")]
    assert runs[0]["run"].run_id != runs[1]["run"].run_id
    assert [r["config"]["seed"] for r in runs] == [1, 2]
    client = mlflow_client(root, monkeypatch)
    found = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert sorted(r.data.params["seed"] for r in found) == ["1", "2"]


# --- a missing package: one line, exit 2, nothing written ----------------------------------


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    real = trackers.is_installed
    monkeypatch.setattr(trackers, "is_installed", lambda module: module not in modules and real(module))


@pytest.mark.parametrize(("args", "hidden", "named"), [
    (["logger=wandb"], ("wandb",), "logger.wandb (lightning.pytorch.loggers.WandbLogger) needs the wandb package"),
    (["logger=mlflow"], ("mlflow",), "logger.mlflow (lightning.pytorch.loggers.MLFlowLogger) needs the mlflow package"),
    # mlflow-skinny without the database packages the default sqlite store needs.
    (["logger=[tensorboard,mlflow]"], ("sqlalchemy", "alembic"), "sqlalchemy, alembic packages, which are not installed"),
    (["-m", "logger=[many,wandb]", "seed=1,2"], ("wandb",), "logger.wandb"),
], ids=["wandb", "mlflow", "mlflow-skinny", "sweep"])
def test_a_missing_tracker_package_is_one_line_before_any_run_directory(
    args: list[str], hidden: tuple[str, ...], named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segkit.cli.train import main

    hide(monkeypatch, *hidden)
    result = run_in_process(main, [*args, *TINY], root=tmp_path)
    assert_one_line_error(result, named, INSTALL)
    assert not (tmp_path / "logs").exists()


def test_a_package_that_cannot_be_imported_is_refused_by_the_command(tmp_path: Path) -> None:
    # A real process in which `import wandb` fails, as where it is not installed.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'wandb':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    env = tracker_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))
    hidden = subprocess.run([sys.executable, "-c", "import wandb"], env=env, capture_output=True, text=True)
    assert hidden.returncode != 0 and "No module named 'wandb'" in hidden.stderr
    proc = train_cli(["logger=wandb", *TINY], tmp_path / "root", env)
    assert proc.returncode == 2, describe(proc)
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert errors == [f"segkit-train: error: logger.wandb (lightning.pytorch.loggers.WandbLogger) needs the wandb package, "
                      f"which is not installed: {INSTALL}"], describe(proc)
    assert not (tmp_path / "root" / "logs").exists()


def test_train_called_directly_refuses_a_missing_tracker_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segkit.training.run import train

    hide(monkeypatch, "mlflow")
    cfg = task_config("train", ["logger=mlflow", *TINY, f"paths.root_dir={tmp_path}"], tmp_path / "run")
    with pytest.raises(SegkitError, match=r"logger\.mlflow .* needs the mlflow package"):
        train(cfg)


def test_which_packages_each_logger_needs() -> None:
    from omegaconf import OmegaConf

    def needed(**node: Any) -> list[str]:
        cfg = OmegaConf.create({"logger": {"x": node}})
        return [module for _, _, module in missing_tracker_packages(cfg, installed=lambda module: False)]

    assert needed(_target_="lightning.pytorch.loggers.TensorBoardLogger") == []
    assert needed(_target_="lightning.pytorch.loggers.wandb.WandbLogger") == ["wandb"]
    assert needed(_target_="lightning.pytorch.loggers.MLFlowLogger", tracking_uri="http://host:5000") == ["mlflow"]
    assert needed(_target_="lightning.pytorch.loggers.MLFlowLogger", tracking_uri="sqlite:///logs/mlflow.db") == [
        "mlflow", "sqlalchemy", "alembic"]
    assert needed(_target_="lightning.pytorch.loggers.MLFlowLogger", tracking_uri="postgresql+psycopg2://h/db") == [
        "mlflow", "sqlalchemy", "alembic"]
    assert missing_tracker_packages(OmegaConf.create({"logger": None})) == []
