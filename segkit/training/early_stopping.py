"""Early stopping that resumes as a run's limits do (``conf/callbacks/early_stopping.yaml``).

Lightning's ``EarlyStopping`` keeps its count of validations without gain in the checkpoint, so
a killed run resumes counting where it stopped. Two things it does on a resume are wrong for
segkit's "the same command resumes" (``ckpt_path=auto``):

- it takes ``patience`` from the checkpoint, silently overriding the one on the command line;
  here the command's patience holds, as a changed ``trainer.max_steps`` does;
- a run that early stopping had ended, run again, trains until the next validation and stops
  again, rewriting ``last.ckpt``; here it stays stopped (no step is taken) and is tested again.
  With a larger patience it continues.

Example:
    >>> stopper = PatienceInValidations(monitor="val/mIoU", mode="max", patience=5)
    >>> stopper.load_state_dict({"wait_count": 3, "stopped_epoch": 0, "best_score": torch.tensor(0.5),
    ...                          "patience": 3})
    >>> stopper.patience, stopper.wait_count
    (5, 3)
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping


class PatienceInValidations(EarlyStopping):
    """Lightning's ``EarlyStopping``, with the configured patience kept on a resume and a
    resumed run that had stopped left stopped (module docstring)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience = patience

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resumed from the validation that stopped it (or with a patience lowered below the count).
        if self.wait_count >= self.patience:
            trainer.should_stop = True
