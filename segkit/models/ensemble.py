"""``segkit-eval``'s model for several checkpoints: their :class:`~segkit.inference.ensemble.Ensemble`
as a :class:`~segkit.models.base.SegmentationModule`, scored like any other.

The data module normalises every batch once, with its own ``mean``/``std``; a model trained with
other statistics (a fold whose statistics came from its own training images) gets the batch
converted to its own, ``x * std_data / std_own + (mean_data - mean_own) / std_own`` per channel,
which is what normalising the same scaled pixels with its statistics would give. The intensity
scaling before it (raw pixels to about [0, 1]) cannot be undone from a normalised batch, so it is
the data's for every model (``segkit-eval`` refuses models trained with different scalings).

Example:
    >>> import torch
    >>> from segkit.models import UNetModule
    >>> from segkit.inference.ensemble import Normalization
    >>> members = [UNetModule(num_classes=2, depth=1, base_width=2).eval() for _ in range(2)]
    >>> own = [Normalization.of([0.5] * 3, [0.25] * 3), Normalization.of([0.4] * 3, [0.2] * 3)]
    >>> ensemble = EnsembleModule(members, own, data_mean=[0.5] * 3, data_std=[0.25] * 3).eval()
    >>> with torch.no_grad():
    ...     ensemble(torch.zeros(1, 3, 8, 8)).shape
    torch.Size([1, 2, 8, 8])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from segkit.inference.ensemble import Ensemble, Normalization
from segkit.models.base import SegmentationModule


class EnsembleModule(SegmentationModule):
    """The mean softmax probability of ``members`` (log-probabilities as its logits), each member
    fed the data's batches in its own normalisation.

    Args:
        members: the models, sharing classes and input channels; the first gives the class
            names, ignore index, loss (for the logged ``loss``) and data spec.
        normalizations: what each member was trained with (``None``: as the data gives it).
        data_mean, data_std: the data module's normalisation of the batches (``None``: unknown,
            every member then takes the batches as they are).

    :attr:`test_time_augmentation` averages each member's logits over its views before the
    member's softmax, so a member's probability is what it alone gives with the same TTA.
    """

    not_hparams: ClassVar[tuple[str, ...]] = ("members", "normalizations", "data_mean", "data_std")

    def __init__(self, members: Sequence[SegmentationModule], normalizations: Sequence[Normalization | None],
                 data_mean: Sequence[float] | None = None, data_std: Sequence[float] | None = None) -> None:
        first = members[0]
        super().__init__(first.num_classes, first.class_names, first.ignore_index,
                         loss=first.hparams.get("loss"), data_spec=first.data_spec)
        self.net = Ensemble(members, normalizations)
        self._converts: list[bool] = []
        for slot, target in enumerate(self.net.normalizations):
            converts = target is not None and data_mean is not None and data_std is not None and (
                tuple(data_mean), tuple(data_std)) != (target.mean, target.std)
            self._converts.append(converts)
            if converts:
                assert target is not None and data_mean is not None and data_std is not None
                scale = torch.tensor(data_std) / torch.tensor(target.std)
                shift = (torch.tensor(data_mean) - torch.tensor(target.mean)) / torch.tensor(target.std)
                # Buffers: they follow the module to its device, with no copy per batch.
                self.register_buffer(f"_scale{slot}", scale[:, None, None].float(), persistent=False)
                self.register_buffer(f"_shift{slot}", shift[:, None, None].float(), persistent=False)

    def member_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` ``(N, C, H, W)`` as normalised by the data, in each slot's normalisation,
        stacked along the channels (:class:`~segkit.inference.ensemble.Ensemble`'s input)."""
        inputs = [images * getattr(self, f"_scale{slot}") + getattr(self, f"_shift{slot}") if converts else images
                  for slot, converts in enumerate(self._converts)]
        return inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.member_inputs(images))

    def evaluation_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.member_inputs(images), tta=self.test_time_augmentation)
