"""``TestFigures``: the test split's confusion matrix, IoU per class and worst images, logged
to TensorBoard at the end of ``segkit-train``'s test (the figures ``segkit-eval`` saves as PNGs)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from segkit.models.base import SegmentationModule
from segkit.scoring.eval_files import split_figures, worst_figure
from segkit.scoring.figures import figure_to_array
from segkit.training.per_image import PerImageScores


def tensorboard_loggers(trainer: L.Trainer) -> list[TensorBoardLogger]:
    """The trainer's TensorBoard loggers (none under ``logger=csv`` or ``fast_dev_run``)."""
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


class TestFigures(PerImageScores):
    """At the test epoch's end, log ``<prefix>/confusion_matrix`` (row-normalised),
    ``<prefix>/per_class_IoU`` and, with ``worst_k > 0``, ``<prefix>/worst_images`` (the
    ``worst_k`` test images of lowest mIoU: input | truth | prediction) as TensorBoard images.

    Scores each test image as the test step runs (no second pass; only the ``worst_k`` images
    are kept, on the CPU). Does nothing without a TensorBoardLogger; logs on rank 0.

    Example:
        >>> callback = TestFigures(worst_k=4)  # then Trainer(callbacks=[callback]).test(...)
    """

    __test__ = False  # a Lightning callback, not a pytest test class

    def __init__(self, worst_k: int = 4, prefix: str = "test") -> None:
        super().__init__(None, worst_k=worst_k, keep_per_image=False, stages=("test",))
        self.prefix = prefix

    def active(self, trainer: L.Trainer, stage: str) -> bool:
        return super().active(trainer, stage) and bool(tensorboard_loggers(trainer))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active(trainer, "test"):
            return
        self.finish()  # every rank: the gather under DDP is collective
        if not trainer.is_global_zero:
            return
        names = list(getattr(pl_module, "class_names", [f"class_{i}" for i in range(self.num_classes)]))
        figures = split_figures(self.total, names, self.prefix)
        if self.worst_k > 0:
            stats = pl_module.input_normalization() if isinstance(pl_module, SegmentationModule) else {}
            figures["worst_images"] = worst_figure(self.worst, names, self.prefix, self.ignore_index,
                                                   stats.get("mean"), stats.get("std"))
        for name, figure in figures.items():
            image = figure_to_array(figure)
            for logger in tensorboard_loggers(trainer):
                logger.experiment.add_image(f"{self.prefix}/{name}", image, global_step=trainer.global_step,
                                            dataformats="HWC")
        self.worst = []  # the images are not needed any more
