"""Hydra configs: every option of every group composes, resolves and instantiates.

Options are discovered from ``conf/<group>/*.yaml``, so a new config file is covered as soon as
it is added.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import pytest
import torch
from segkit.contracts.fake_data import make_fake_isbi, make_fake_voc
from helpers import (
    CONF_DIR,
    TRAIN_CMD,
    compose_config,
    config_groups,
    config_options,
    describe,
    run_cli,
)
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict
from test_folder_data import make_fake_folder

from segkit.data import PatchDataModule
from segkit.data.base import SegmentationDataModule
from segkit.models.base import SegmentationModule
from segkit.training.build import instantiate_all, instantiate_model
from segkit.training.trackers import INSTALL, missing_tracker_packages

REQUIRED_GROUPS = ("data", "model", "trainer", "logger", "callbacks", "debug", "experiment")
ALL_OPTIONS = [(group, option) for group in config_groups() for option in config_options(group)]


def compose_task(overrides: list[str], output_dir: Path) -> DictConfig:
    """The train config with ``paths.output_dir`` pinned and the hydra node removed."""
    cfg = compose_config("train", [*overrides, f"paths.output_dir={output_dir}"])
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def test_the_config_groups_are_discovered() -> None:
    # Guards the parametrisation below: an empty or misplaced conf/ would test nothing.
    assert set(REQUIRED_GROUPS) <= set(config_groups())
    assert "unet" in config_options("model")
    assert "shapes" in config_options("data")
    assert {"fdr", "overfit"} <= set(config_options("debug"))


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_option_of_every_group_composes_and_resolves(
    group: str, option: str, tmp_path: Path
) -> None:
    cfg = compose_config("train", [f"{group}={option}", f"paths.output_dir={tmp_path}"])
    assert cfg.hydra.runtime.choices[group] == option
    with open_dict(cfg):
        del cfg["hydra"]
    # Every interpolation (paths, the scheduler's max_lr, env defaults...) must resolve.
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    assert {"data", "model", "trainer", "paths"} <= set(resolved)


def data_overrides(option: str, tmp_path: Path) -> list[str]:
    """Overrides that point a data option at local files (public data sets: a fake tree)."""
    if option == "voc":
        return [f"data.root={make_fake_voc(tmp_path / 'voc')}", "data.crop_size=24"]
    if option == "isbi2012":
        return [f"data.root={make_fake_isbi(tmp_path / 'isbi')}"]
    if option == "folder":
        return [f"data.root={make_fake_folder(tmp_path / 'folder')}", "data.num_classes=3", "data.crop_size=24"]
    if option == "em":
        return ["data.image_size=48"]
    if option == "patches":  # the window comes from the model at fit time; set it here
        return ["data.window=15", "data.base.num_workers=0"]
    return []


@pytest.mark.parametrize("option", config_options("data"))
def test_every_data_config_states_its_modules_defaults_unchanged(option: str) -> None:
    """A data config spells out its module's defaults (the values to edit), so the two must
    agree: ``ShapesDataModule()`` in Python and ``data=shapes`` on the command line are one data set."""
    config = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / f"{option}.yaml"), resolve=False)
    parameters = inspect.signature(get_class(config["_target_"]).__init__).parameters
    differ = {
        key: (value, parameters[key].default) for key, value in config.items()
        if key in parameters and parameters[key].default is not inspect.Parameter.empty
        and not (isinstance(value, str) and value.startswith("${"))
        and value != (list(parameters[key].default) if isinstance(parameters[key].default, tuple) else parameters[key].default)
    }
    assert not differ, f"conf/data/{option}.yaml (yaml, code): {differ}"


@pytest.mark.parametrize("option", config_options("data"))
def test_every_data_option_instantiates_a_datamodule_that_yields_batches(
    option: str, tmp_path: Path
) -> None:
    overrides = [f"data={option}", "data.batch_size=2", "data.num_workers=0", *data_overrides(option, tmp_path)]
    cfg = compose_task(overrides, tmp_path)
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, SegmentationDataModule)
    assert len(datamodule.class_names) == datamodule.num_classes
    datamodule.setup("fit")
    images, masks = next(iter(datamodule.val_dataloader()))
    assert images.shape[1] == datamodule.in_channels
    assert images.dtype == torch.float32 and masks.dtype == torch.int64
    assert masks.shape == (images.shape[0], *images.shape[-2:])
    inputs, targets = next(iter(datamodule.train_dataloader()))
    if isinstance(datamodule, PatchDataModule):  # (window, centre label) pairs
        assert inputs.shape == (2 * datamodule.train_set.sampler.windows_per_image, datamodule.in_channels, 15, 15)
        assert targets.shape == inputs.shape[:1]
    else:
        assert inputs.shape[:2] == (2, datamodule.in_channels) and targets.shape == (2, *inputs.shape[-2:])
    model = instantiate_model(cfg.model, datamodule)
    assert model.num_classes == datamodule.num_classes


@pytest.mark.parametrize("option", config_options("model"))
def test_every_model_option_takes_classes_names_and_channels_from_the_data(option: str, tmp_path: Path) -> None:
    # What each model computes is the architecture contract's (tests/test_architecture_contract.py).
    cfg = compose_task([f"model={option}", "data.num_workers=0"], tmp_path)
    for package in get_class(cfg.model._target_).requires_packages:  # optional extras (smp models)
        pytest.importorskip(package)
    datamodule = instantiate(cfg.data)
    model = instantiate_model(cfg.model, datamodule)
    assert isinstance(model, SegmentationModule)
    assert model.num_classes == datamodule.num_classes
    assert model.class_names == list(datamodule.class_names)
    assert model.hparams["in_channels"] == datamodule.in_channels


@pytest.mark.parametrize("option", config_options("callbacks"))
def test_every_callbacks_option_instantiates_lightning_callbacks(option: str, tmp_path: Path) -> None:
    cfg = compose_task([f"callbacks={option}"], tmp_path)
    callbacks = instantiate_all(cfg.get("callbacks"))
    assert all(isinstance(cb, L.Callback) for cb in callbacks)
    if option == "none":
        assert callbacks == []


@pytest.mark.parametrize("option", config_options("logger"))
def test_every_logger_option_instantiates_lightning_loggers(option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # paths.root_dir: logger=mlflow opens its store (<log_dir>/mlflow.db) as it is built.
    cfg = compose_task([f"logger={option}", f"paths.root_dir={tmp_path}"], tmp_path)
    missing = missing_tracker_packages(cfg)
    if missing:
        pytest.skip(f"logger={option} needs {missing[0][2]}: {INSTALL}")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    loggers = instantiate_all(cfg.get("logger"))
    assert loggers, f"logger={option} configures no logger"
    assert all(isinstance(lg, Logger) for lg in loggers)


@pytest.mark.parametrize("option", config_options("trainer"))
def test_every_trainer_option_instantiates_a_trainer(option: str, tmp_path: Path) -> None:
    cfg = compose_task([f"trainer={option}"], tmp_path)
    if option in ("cpu", "gpu"):
        assert cfg.trainer.accelerator == option
    # The accelerator is forced to CPU so that trainer=gpu is checked on machines without one.
    trainer = instantiate(
        cfg.trainer, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False
    )
    assert isinstance(trainer, L.Trainer)
    assert Path(trainer.default_root_dir) == tmp_path


def test_debug_presets_set_what_they_promise(tmp_path: Path) -> None:
    fdr = compose_task(["debug=fdr"], tmp_path)
    assert fdr.trainer.fast_dev_run is True
    assert fdr.task_name == "debug"
    overfit = compose_task(["debug=overfit"], tmp_path)
    assert overfit.trainer.overfit_batches > 0
    assert overfit.data.augment is False
    assert overfit.task_name == "debug"


def test_experiment_preset_composes_with_data_and_model(tmp_path: Path) -> None:
    cfg = compose_task(["experiment=unet_shapes"], tmp_path)
    assert cfg.model._target_ == "segkit.models.UNetModule"
    assert cfg.data._target_ == "segkit.data.ShapesDataModule"
    assert list(cfg.tags) == ["unet", "shapes"]


def test_run_and_sweep_dirs_live_under_the_log_dir_by_task_name(tmp_path: Path) -> None:
    cfg = compose_config("train", [f"paths.root_dir={tmp_path}"])
    assert Path(cfg.hydra.run.dir).parent == tmp_path / "logs" / "train" / "runs"
    assert Path(cfg.hydra.sweep.dir).parent == tmp_path / "logs" / "train" / "multiruns"
    debug = compose_config("train", [f"paths.root_dir={tmp_path}", "debug=fdr"])
    assert Path(debug.hydra.run.dir).parent == tmp_path / "logs" / "debug" / "runs"
    assert cfg.hydra.job.chdir is False


def test_segkit_root_env_sets_the_root_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGKIT_ROOT", str(tmp_path))
    cfg = compose_task([], tmp_path / "out")
    assert Path(cfg.paths.log_dir) == tmp_path / "logs"


def test_eval_config_composes_and_requires_a_checkpoint(tmp_path: Path) -> None:
    bare = compose_config("eval")
    assert OmegaConf.is_missing(bare, "ckpt_path")
    assert bare.split == "val"
    cfg = compose_config(
        "eval", [f"ckpt_path={tmp_path / 'x.ckpt'}", f"paths.output_dir={tmp_path}"]
    )
    with open_dict(cfg):
        del cfg["hydra"]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["ckpt_path"] == str(tmp_path / "x.ckpt")
    assert {"data", "trainer", "paths"} <= set(resolved)


@pytest.mark.timeout(180)
def test_train_help_lists_the_config_groups_and_their_options(tmp_path: Path) -> None:
    proc = run_cli(TRAIN_CMD, ["--help"], tmp_path, timeout=120)
    assert proc.returncode == 0, describe(proc)
    groups_section = proc.stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    listed = {}
    for line in groups_section.splitlines():
        name, sep, options = line.partition(":")
        if sep and name.strip() and " " not in name.strip():
            listed[name.strip()] = {o.strip() for o in options.split(",") if o.strip()}
    for group in REQUIRED_GROUPS:
        assert group in listed, f"--help does not list group {group!r}:\n{groups_section}"
        assert listed[group] == set(config_options(group))


@pytest.mark.timeout(180)
def test_unknown_model_option_fails_and_lists_the_available_ones(tmp_path: Path) -> None:
    proc = run_cli(TRAIN_CMD, ["model=nope"], tmp_path, timeout=120)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "model/nope" in output
    assert "Available options in 'model'" in output
    for option in config_options("model"):
        assert option in output.split("Available options in 'model'", 1)[1]
    assert not (tmp_path / "logs").exists(), "a failed composition must not create a run dir"


def test_slurm_launcher_composes_with_one_task_per_gpu(tmp_path: Path) -> None:
    cfg = compose_config("train", ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4", "hydra.launcher.nodes=2",
                                   "hydra.launcher.partition=gpu", "trainer=ddp", "trainer.num_nodes=${hydra:launcher.nodes}",
                                   f"paths.output_dir={tmp_path}"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (launcher["nodes"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == (2, 4, 4)
    # submitit's own requeue off: segkit's Preemption callback is the one mechanism.
    assert (launcher["partition"], launcher["signal_delay_s"], launcher["max_num_timeout"]) == ("gpu", 120, 0)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.sync_batchnorm is True
