"""Callbacks the contracts add to a run to observe it."""

from __future__ import annotations

import lightning as L


class RecordNetOutputDtypes(L.Callback):
    """Records the dtype of ``pl_module.net``'s output in every training step (in ``seen``, a
    class attribute, since Hydra builds the instance inside the run)."""

    seen: list[object] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.net.register_forward_hook(lambda module, args, output: self.seen.append(output.dtype))
