"""A progress bar that costs nothing per step: Lightning's rich bar, refreshed on a clock.

Lightning's ``RichProgressBar`` redraws after every training batch, at a fraction of a
millisecond on a CPU, and a metric logged with ``prog_bar=True`` is converted to a float
(``.item()``, which on a GPU waits for the step to finish: a host-device sync) after every
batch, whether or not it was logged in it. A person reads a bar a few times a second at most,
so this one redraws at most every ``refresh_every_s`` seconds while training, and at an epoch's
last batch; the training loss, logged without ``prog_bar``, is read as it redraws. The thread
that draws the bar wakes on the same clock: Lightning's wakes 100 times a second (its
``refresh_rate``), and each wake takes the interpreter lock from the training loop and, on a
machine with few cores, the CPU from one of torch's threads. Validation,
test and predict bars behave as Lightning's. Without an epoch limit (``trainer.max_epochs=-1``,
a step or time budget) the bar says "Epoch 3", not Lightning's "Epoch 3/-2".
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.trainer.states import TrainerFn

from segkit.models.loss_logging import TRAIN_LOSS  # the loss the bar shows, logged every trainer.log_every_n_steps


class SegmentationProgressBar(RichProgressBar):
    """``RichProgressBar`` whose training bar and metrics are refreshed at most every
    ``refresh_every_s`` seconds (and at the end of each epoch).

    Example:
        >>> bar = SegmentationProgressBar(refresh_every_s=0.5)  # Trainer(callbacks=[bar])
        >>> bar.refresh_every_s
        0.5
    """

    def __init__(self, *args: Any, refresh_every_s: float = 0.25, **kwargs: Any) -> None:
        # Lightning's refresh_rate is the drawing thread's wakes a second (default 100); the bar
        # changes at most every refresh_every_s, so the thread need not look more often.
        if refresh_every_s > 0:
            kwargs.setdefault("refresh_rate", 1 / refresh_every_s)
        super().__init__(*args, **kwargs)
        self.refresh_every_s = refresh_every_s
        self._refreshed_at = float("-inf")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.monotonic()
        last = batch_idx + 1 >= trainer.num_training_batches
        if now - self._refreshed_at < self.refresh_every_s and not last:
            return
        self._refreshed_at = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float | dict[str, float]]:
        """Lightning's bar metrics plus the latest training loss, read (one ``.item()``) only here."""
        items = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get(TRAIN_LOSS)
        if loss is not None and trainer.state.fn == TrainerFn.FITTING:  # fit's validation too, not test
            items[TRAIN_LOSS] = loss.item()
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        # Lightning writes "Epoch 0/-2" for max_epochs=-1 (segkit's step and time budgets).
        description = super()._get_train_description(current_epoch)
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs < 0:
            description = description.replace(f"/{max_epochs - 1}", "", 1)
        return description
