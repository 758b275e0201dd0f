"""A callback: writes how many optimiser steps the run took."""

from pathlib import Path

import lightning as L


class StepCountFile(L.Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path.write_text(f"{trainer.global_step}\n")
