"""Training throughput: what ``segkit-train`` runs against a plain hand-written PyTorch loop.

The segkit side is :func:`segkit.cli.train.train` itself on the composed ``train`` config: the
default callbacks (checkpointing, exact resume, LR monitor, image grid, progress bar, model
summary), the TensorBoard logger, the scheduler, the train metrics and segkit's resumable
loader, as a user's run has them. Only validation and the final test are off (the plain loop
has neither), and a :class:`StepTimer` callback records when each batch starts.

The plain side builds the same data module and net from the same config and seed and runs the
textbook loop over the same train loader: forward, cross-entropy, zero_grad, backward, AdamW
step. Both are timed the same way, from the start of batch ``warmup`` to the start of batch
``warmup + steps`` (loading included), and runs alternate (plain, segkit, plain, ...) so that
drift in machine load hits both alike.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from segkit.cli.common import instantiate_model
from segkit.cli.config_dir import config_dir


@dataclass
class ThroughputResult:
    """Seconds per training step of each loop, one value per repeat."""

    plain: list[float]
    segkit: list[float]
    overrides: list[str]
    steps: int

    @property
    def ratio(self) -> float:
        """Plain / segkit step time, best runs: on a shared machine, load only ever slows a run
        down, so each loop's fastest run is the closest to its undisturbed speed (``timeit``)."""
        return min(self.plain) / min(self.segkit)

    @property
    def median_ratio(self) -> float:
        """Median over median, for comparison: noisier where load comes and goes."""
        return statistics.median(self.plain) / statistics.median(self.segkit)


class StepTimer(L.Callback):
    """Writes ``{"batch_starts": [...]}`` (``time.perf_counter`` at each train batch start) to
    ``path`` when training ends; the benchmark adds it to the run's callbacks."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: object, batch_idx: int) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        Path(self.path).write_text(json.dumps({"batch_starts": self.starts}))


def train_config(overrides: Sequence[str], output_dir: Path, total_steps: int) -> DictConfig:
    """The ``train`` config as ``segkit-train OVERRIDES`` composes it, for ``total_steps`` steps
    with validation and test off, writing under ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[
            *overrides, f"trainer.max_steps={total_steps}", "++trainer.limit_val_batches=0",
            "test=false", f"paths.output_dir={output_dir}",
        ])
    GlobalHydra.instance().clear()
    return cfg


def _per_step(starts: Sequence[float], warmup: int, steps: int) -> float:
    return (starts[warmup + steps] - starts[warmup]) / steps


def time_segkit(overrides: Sequence[str], warmup: int, steps: int) -> float:
    """Seconds per step of ``segkit.cli.train.train`` on the composed config (see the module doc)."""
    from segkit.cli.train import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = train_config(overrides, Path(tmp) / "run", warmup + steps + 1)
        timings = Path(tmp) / "steps.json"
        with open_dict(cfg):
            cfg.callbacks = cfg.get("callbacks") or {}
            cfg.callbacks.step_timer = {"_target_": f"{__name__}.StepTimer", "path": str(timings)}
        train(cfg)
        return _per_step(json.loads(timings.read_text())["batch_starts"], warmup, steps)


def time_plain(overrides: Sequence[str], warmup: int, steps: int) -> float:
    """Seconds per step of a textbook loop over the same config's train loader and net."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = train_config(overrides, Path(tmp) / "run", warmup + steps + 1)
        L.seed_everything(cfg.seed, verbose=False)
        datamodule = instantiate(cfg.data)
        net = instantiate_model(cfg.model, datamodule).net
        datamodule.setup("fit")
        net.train()
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
        starts: list[float] = []
        while len(starts) <= warmup + steps:
            for images, masks, *_ in datamodule.train_dataloader():
                starts.append(time.perf_counter())
                if len(starts) > warmup + steps:
                    break
                loss = F.cross_entropy(net(images), masks, ignore_index=datamodule.ignore_index)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return _per_step(starts, warmup, steps)


def measure_throughput(overrides: Sequence[str] = (), steps: int = 170, warmup: int = 20, repeats: int = 3) -> ThroughputResult:
    """Alternate plain and segkit runs ``repeats`` times, each timing ``steps`` steps after ``warmup``.

    Example:
        >>> tiny = ["data.image_size=32", "data.train_size=16", "data.batch_size=2"]
        >>> quiet = ["callbacks.progress_bar=null", "++trainer.enable_progress_bar=false",
        ...          "callbacks.model_summary=null", "++trainer.enable_model_summary=false"]
        >>> r = measure_throughput(tiny + quiet, steps=2, warmup=1, repeats=1)
        >>> r.ratio > 0 and len(r.plain) == len(r.segkit) == 1
        True
    """
    plain, segkit = [], []
    for _ in range(repeats):
        plain.append(time_plain(overrides, warmup, steps))
        segkit.append(time_segkit(overrides, warmup, steps))
    return ThroughputResult(plain, segkit, list(overrides), steps)
