"""The plain loop's work in a bare Lightning ``Trainer``: ``python -m segkit.benchmarks.lightning_loop``.

What Lightning itself costs a step, apart from what segkit adds to it. The same composed config,
data module, seed, net, memory order and AdamW as :mod:`segkit.benchmarks.plain_loop`, in the
smallest ``LightningModule`` a user could write (``training_step`` returns the cross-entropy,
``configure_optimizers`` the AdamW), fitted by a ``Trainer`` with nothing added: no logger,
callback, checkpoint, progress bar, model summary, validation or schedule. Lightning sets each
epoch of the sampler, so it loads the batches both other loops load. It records the time at the
end of every step (the module's ``on_train_batch_end``) and writes them to a JSON file.

Example::

    python -m segkit.benchmarks.lightning_loop steps.json 200 model.depth=1 data.image_size=32
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F

from segkit.benchmarks.plain_loop import loop_parts, write_step_ends


class BareModule(L.LightningModule):
    """The plain loop's step as a user's first ``LightningModule``: forward, cross-entropy, AdamW."""

    def __init__(self, net: torch.nn.Module, ignore_index: int, memory_format: torch.memory_format) -> None:
        super().__init__()
        self.net = net
        self.ignore_index = ignore_index
        self.memory_format = memory_format
        self.step_ends: list[float] = []

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, masks, *_ = batch
        logits = self.net(images.contiguous(memory_format=self.memory_format))
        return F.cross_entropy(logits, masks, ignore_index=self.ignore_index)

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        self.step_ends.append(time.perf_counter())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def lightning_step_ends(overrides: Sequence[str], steps: int) -> list[float]:
    """``time.perf_counter()`` at the end of each of ``steps`` steps of :class:`BareModule` in a
    bare ``Trainer``."""
    datamodule, net, memory_format = loop_parts(overrides)
    module = BareModule(net, datamodule.ignore_index, memory_format)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    return module.step_ends


def main(argv: Sequence[str] | None = None) -> None:
    """``lightning_loop OUT.json STEPS [OVERRIDES...]``: write ``{"step_ends": [...]}`` to OUT.json."""
    write_step_ends(argv, lightning_step_ends)


if __name__ == "__main__":
    main()
