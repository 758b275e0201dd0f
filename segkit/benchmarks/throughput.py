"""Training throughput: segkit's Lightning fit loop against a plain hand-written PyTorch loop.

Both loops train the same U-Net (same initial weights) with the same optimiser on the same
in-memory batches (pre-rendered shapes scenes, so scene rendering is not timed), batch size
and thread count. The fit loop runs as ``segkit-train`` runs it: the segkit LightningModule
with its per-step train metrics and loss logging to TensorBoard; validation, checkpointing
and the progress bar are off, because the plain loop has none of them. Runs alternate
(plain, fit, plain, fit, ...) so that drift in machine load hits both alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from segkit.data.shapes import ShapesDataModule
from segkit.models.unet import UNetModule


@dataclass
class ThroughputResult:
    """Images per second of each loop, per repeat."""

    plain: list[float]
    fit: list[float]
    batch_size: int
    image_size: int
    steps: int

    @property
    def ratio(self) -> float:
        """Best fit-loop throughput over best plain-loop throughput.

        On a shared machine, other load only ever slows a run down, so each loop's fastest
        run is the closest to its undisturbed speed (as ``timeit`` takes the minimum).
        """
        return max(self.fit) / max(self.plain)

    @property
    def median_ratio(self) -> float:
        """Median over median, for comparison: noisier where load comes and goes."""
        return statistics.median(self.fit) / statistics.median(self.plain)


def _batches(num_images: int, batch_size: int, image_size: int) -> DataLoader:
    dm = ShapesDataModule(image_size=image_size, train_size=num_images, augment=False, num_workers=0)
    dm.setup("fit")
    pairs = [dm.train_set[i] for i in range(num_images)]
    dataset = TensorDataset(torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=True)


def _module(seed: int) -> UNetModule:
    torch.manual_seed(seed)
    optimizer = lambda params: torch.optim.AdamW(params, lr=1e-3)  # noqa: E731
    return UNetModule(num_classes=len(ShapesDataModule.class_names), depth=3, base_width=16, optimizer=optimizer)


def time_plain_loop(loader: DataLoader, warmup: int, seed: int = 0) -> float:
    """Images/s of a textbook loop: forward, cross-entropy, zero_grad, backward, step."""
    net = _module(seed).net
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    images_timed, start = 0, 0.0
    for step, (images, masks) in enumerate(loader):
        if step == warmup:
            start = time.perf_counter()
        loss = F.cross_entropy(net(images), masks, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            images_timed += images.shape[0]
    return images_timed / (time.perf_counter() - start)


class _StepTimer(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0
        self.end = 0.0
        self.images = 0

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: object, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: object, batch: tuple, batch_idx: int) -> None:
        if batch_idx >= self.warmup:
            self.images += batch[0].shape[0]
            self.end = time.perf_counter()


def time_fit_loop(loader: DataLoader, warmup: int, seed: int = 0) -> float:
    """Images/s of ``Trainer.fit`` on the segkit UNetModule, TensorBoard logging on."""
    timer = _StepTimer(warmup)
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_epochs=1, limit_val_batches=0, logger=TensorBoardLogger(log_dir),
            log_every_n_steps=10, callbacks=[timer], enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0,
        )
        trainer.fit(_module(seed), train_dataloaders=loader)
    return timer.images / (timer.end - timer.start)


def measure_throughput(steps: int = 60, warmup: int = 5, batch_size: int = 8, image_size: int = 64, repeats: int = 3) -> ThroughputResult:
    """Alternate plain and fit runs ``repeats`` times; each times ``steps`` steps after ``warmup``.

    Example:
        >>> r = measure_throughput(steps=2, warmup=1, batch_size=2, image_size=32, repeats=1)
        >>> r.ratio > 0
        True
    """
    loader = _batches((steps + warmup) * batch_size, batch_size, image_size)
    plain, fit = [], []
    for _ in range(repeats):
        plain.append(time_plain_loop(loader, warmup))
        fit.append(time_fit_loop(loader, warmup))
    return ThroughputResult(plain, fit, batch_size, image_size, steps)
