"""The training loss's way to the loggers: the values and steps of ``self.log`` every step, at a
fraction of its cost.

Lightning writes a step's logged values to the loggers every ``trainer.log_every_n_steps``
steps. A ``self.log`` call costs about 0.6 ms on a 2-core CPU (it moves its stored result to
the value's device on every call), and once one value is stored Lightning rebuilds its metric
dictionaries after every batch for the rest of the epoch (about 0.05 ms a step); at the default
cadence of ten steps that was about a tenth of ``segkit-train``'s cost per step over a
hand-written loop (docs/overhead.md, "What was changed in the step").

So, while fitting with a cadence above one step, :class:`TrainLossLog` hands the loss to the
loggers itself on the steps Lightning would write it, as Lightning does it (the value as a
float, the ``epoch`` beside it, the step Lightning would label it with, then ``save()``), and
puts it in ``trainer.callback_metrics`` (which Lightning keeps between steps), where the progress
bar and callbacks that monitor ``train/loss`` read it. On an epoch's last batch it calls
``self.log`` as before, so that Lightning's epoch-end bookkeeping is its own. Every other case
(outside ``fit``, ``fast_dev_run``, gradient accumulation, a cadence of one step or none) logs
every step with ``self.log``. Loggers receive the same values at the same steps as from a
``self.log`` call every step (``tests/test_module.py``), but for one point: a run that a budget
(``trainer.max_steps`` or ``max_time``) stops mid-epoch, off the cadence, gets none at its last
step, where Lightning writes that step's loss when it is logged every step.
"""

from __future__ import annotations

import lightning as L
import torch

# The training loss's logged key, which the progress bar reads back.
TRAIN_LOSS = "train/loss"


class TrainLossLog:
    """When, and by which way, a module's training loss goes to the loggers.

    Example:
        >>> log = TrainLossLog()  # a module calls log.read_cadence(trainer) as each epoch starts
        >>> log.every  # not fitting yet: every step through self.log
        1
    """

    def __init__(self) -> None:
        self.every = 1  # steps between written losses, set by read_cadence; 1: self.log every step
        self.last_batch_idx = 0

    def read_cadence(self, trainer: L.Trainer) -> None:
        """The trainer's logging cadence, read as each epoch (or a resumed run) starts rather
        than in every training step."""
        every_step = trainer.fast_dev_run or trainer.accumulate_grad_batches != 1 or trainer.log_every_n_steps <= 0
        self.every = 1 if every_step else trainer.log_every_n_steps
        self.last_batch_idx = trainer.num_training_batches - 1

    def log(self, module: L.LightningModule, loss: torch.Tensor, batch_idx: int, batch_size: int) -> None:
        """Log ``loss``, the training step ``batch_idx``'s, from ``module.training_step``."""
        every = self.every
        if every == 1 or batch_idx >= self.last_batch_idx:
            # Not prog_bar=True: Lightning would convert it to a float (.item(), a host-device
            # sync on a GPU) after every step; the progress bar reads it when it redraws.
            module.log(TRAIN_LOSS, loss, batch_size=batch_size)
        # Inside training_step global_step counts the steps already taken, as Lightning's own
        # cadence check (batches that stepped + 1) does.
        elif (module.global_step + 1) % every == 0:
            self.write(module.trainer, loss.detach(), module.global_step)

    @staticmethod
    def write(trainer: L.Trainer, loss: torch.Tensor, step: int) -> None:
        """What Lightning's logger connector does with a logged value on a written step."""
        trainer.callback_metrics[TRAIN_LOSS] = loss
        if not trainer.loggers:
            return
        metrics = {TRAIN_LOSS: loss.item(), "epoch": trainer.current_epoch}  # .item(): as Lightning does
        trainer.logged_metrics[TRAIN_LOSS] = metrics[TRAIN_LOSS]
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            logger.save()
