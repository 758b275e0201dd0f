"""``ObjectScores``: object-level scores of an instance-labelled split, in the evaluation pass itself.

Each evaluated image's foreground probability (one minus the background class's softmax) is
split into objects as ``segkit-predict save.instances=true`` splits it
(:func:`segkit.scoring.objects.instances_from_foreground`), and matched at IoU > 0.5 ... 0.95 to
the true instances the data set holds (``dataset.instance_labels(index)``): precision, recall,
F1, ``ap50`` (TP / (TP + FP + FN) at 0.5, the Data Science Bowl's and StarDist's) and ``mean_ap``
over the ten thresholds, pooled over the split and per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist

from segkit.scoring.objects import ObjectMatch, instances_from_foreground, match_objects
from segkit.training.per_image import STAGES, first_loader, sample_order

# per_image.csv columns the object scores add (after the pixel scores).
OBJECT_COLUMNS = ("objects_f1", "objects_ap50", "objects_mean_ap", "objects_predicted", "objects_true")


def has_instances(datamodule: Any) -> bool:
    """Whether ``datamodule`` reads instance masks (its sets then hand out ``instance_labels``)."""
    return getattr(datamodule, "mask_type", None) == "instances"


class ObjectScores(L.Callback):
    """Object scores of the validation or test pass (``stages``), from the logits the module's
    evaluation step returns (``outputs["logits"]``) and the true instances of its data set.

    After the pass, :attr:`total` is the pooled :class:`ObjectMatch` and :attr:`per_image` maps
    each dataset index to its own. Under DDP the ranks' shares are gathered.

    Example:
        >>> truth = np.zeros((6, 12), int); truth[1:5, 1:5] = 1; truth[1:5, 7:11] = 2
        >>> class Split:
        ...     def instance_labels(self, index):
        ...         return truth
        >>> scores = ObjectScores()
        >>> scores.start(Split(), [0])
        >>> objects = torch.from_numpy(truth > 0).float() * 9  # logits: background 0, objects 9 where true
        >>> scores.update(torch.stack([torch.zeros(6, 12), objects])[None])
        >>> scores.finish()
        >>> scores.total.scores()["f1"], scores.total.scores()["true"]
        (1.0, 2)
    """

    def __init__(self, stages: Sequence[str] = STAGES) -> None:
        self.stages = tuple(stages)
        self.total = ObjectMatch()
        self.per_image: dict[int, ObjectMatch] = {}
        self.start(None, None)

    def start(self, dataset: Any, order: list[int] | None) -> None:
        """Begin a pass over ``dataset`` visited in ``order`` (dataset indices)."""
        self._dataset, self._order, self._seen = dataset, order or [], 0
        self._matches: dict[int, ObjectMatch] = {}
        self.skipped = 0  # samples without object scores (tiles of large images)

    def update(self, logits: torch.Tensor) -> None:
        """Score a batch of logits ``(N, K, H, W)`` (the next ``N`` images of the pass)."""
        foreground = 1.0 - logits.detach().float().softmax(dim=1)[:, 0].cpu().numpy()
        for probability in foreground:
            index = self._order[self._seen] if self._seen < len(self._order) else self._seen
            self._seen += 1
            labels = self._dataset.instance_labels(index)
            if labels is None:  # a tile of a large image: its objects are cut at the tile's edges
                self.skipped += 1
                continue
            true = np.asarray(labels)
            if true.shape != probability.shape:
                raise ValueError(f"image {index}: instance labels of shape {true.shape} but predictions of "
                                 f"{probability.shape}; object scores need whole, unresized images")
            self._matches[index] = match_objects(instances_from_foreground(probability), true)

    def finish(self) -> None:
        """Gather the ranks' shares (DDP) and set :attr:`total` and :attr:`per_image`."""
        parts = [self._matches]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()  # type: ignore[list-item]
            dist.all_gather_object(parts, self._matches)
        self.per_image = {index: match for part in parts for index, match in part.items()}
        self.total = sum(self.per_image.values(), ObjectMatch())

    def rows(self) -> dict[int, list[float]]:
        """Per-image values of :data:`OBJECT_COLUMNS` by dataset index."""
        rows = {}
        for index, match in self.per_image.items():
            scores = match.scores()
            rows[index] = [scores["f1"], scores["ap50"], scores["mean_ap"], scores["predicted"], scores["true"]]
        return rows

    # --- Lightning hooks ---------------------------------------------------------------------

    def _active(self, trainer: L.Trainer, stage: str) -> bool:
        return stage in self.stages and not trainer.sanity_checking

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active(trainer, "validate"):
            loader = first_loader(trainer.val_dataloaders)
            self.start(getattr(loader, "dataset", None), sample_order(loader))

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active(trainer, "test"):
            loader = first_loader(trainer.test_dataloaders)
            self.start(getattr(loader, "dataset", None), sample_order(loader))

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._active(trainer, "validate") and dataloader_idx == 0:
            self.update(outputs["logits"])

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                          batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._active(trainer, "test") and dataloader_idx == 0:
            self.update(outputs["logits"])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active(trainer, "validate"):
            self.finish()

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active(trainer, "test"):
            self.finish()
