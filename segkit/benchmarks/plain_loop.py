"""The hand-written loop segkit is measured against: ``python -m segkit.benchmarks.plain_loop``.

It composes the same ``train`` config as ``segkit-train OVERRIDES``, builds the same data module
and net from it with the same seed (in the same memory order: ``model.channels_last``), and runs
the textbook loop over the same training loader, setting each epoch as Lightning does (so both
loops load the same batches): forward, cross-entropy, ``zero_grad``, backward, AdamW step. Like
a loop that never imported Lightning, it does not try to load NVML at every optimiser step
(:mod:`segkit.training.cuda_check`). It records the time at the end of every step, as
``segkit-train``'s TensorBoard events do, and writes them to a JSON file.

Example::

    python -m segkit.benchmarks.plain_loop steps.json 200 model.depth=1 data.image_size=32
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from segkit.config_dir import config_dir
from segkit.training.build import instantiate_model
from segkit.training.cuda_check import skip_failing_nvml_check


def compose_train_config(overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """The ``train`` config as ``segkit-train OVERRIDES`` composes it, writing under ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}"])
    GlobalHydra.instance().clear()
    return cfg


def loop_parts(overrides: Sequence[str]) -> tuple[L.LightningDataModule, torch.nn.Module, torch.memory_format]:
    """The data module and net of ``segkit-train OVERRIDES``, seeded as it seeds them, the net in
    its memory order (``model.channels_last``; a good loop would use it too)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_train_config(overrides, Path(tmp))
    # A loop that never imported Lightning asks torch for CUDA without NVML (segkit.training.cuda_check);
    # segkit-train does the same, so neither pays a failed library load per optimiser step.
    skip_failing_nvml_check()
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = instantiate(cfg.data)
    net = instantiate_model(cfg.model, datamodule).net
    memory_format = torch.channels_last if cfg.model.get("channels_last") else torch.contiguous_format
    return datamodule, net.to(memory_format=memory_format), memory_format


def write_step_ends(argv: Sequence[str] | None, step_ends: Callable[[Sequence[str], int], list[float]]) -> None:
    """``OUT.json STEPS [OVERRIDES...]``: write ``{"step_ends": step_ends(OVERRIDES, STEPS)}`` to OUT.json."""
    out, steps, *overrides = list(sys.argv[1:] if argv is None else argv)
    Path(out).write_text(json.dumps({"step_ends": step_ends(overrides, int(steps))}))


def plain_step_ends(overrides: Sequence[str], steps: int,
                    before_step: Callable[[int], None] | None = None) -> list[float]:
    """``time.perf_counter()`` at the end of each of ``steps`` textbook training steps;
    ``before_step(i)`` is called as step ``i`` starts, before its batch is loaded."""
    datamodule, net, memory_format = loop_parts(overrides)
    datamodule.setup("fit")
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ends: list[float] = []
    if before_step is not None:
        before_step(0)
    loader = datamodule.train_dataloader()
    epoch = 0
    while len(ends) < steps:
        # Each epoch's own samples (new scenes with resample_train), as Lightning sets them before
        # every epoch of segkit-train: both loops then load the same batches at every step.
        if callable(set_epoch := getattr(loader.sampler, "set_epoch", None)):
            set_epoch(epoch)
        epoch += 1
        for images, masks, *_ in loader:
            logits = net(images.contiguous(memory_format=memory_format))
            loss = F.cross_entropy(logits, masks, ignore_index=datamodule.ignore_index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ends.append(time.perf_counter())
            if len(ends) == steps:
                break
            if before_step is not None:
                before_step(len(ends))
    return ends


def main(argv: Sequence[str] | None = None) -> None:
    """``plain_loop OUT.json STEPS [OVERRIDES...]``: write ``{"step_ends": [...]}`` to OUT.json."""
    write_step_ends(argv, plain_step_ends)


if __name__ == "__main__":
    main()
