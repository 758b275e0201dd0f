"""What every segkit Dataset ends with: a sample's tv_tensors through the joint transform,
returned as plain tensors.

Subclasses (rendered data sets, file pairs, VOC, ISBI slices) only say how sample ``index``
is loaded (:meth:`SampleDataset.load`); augmentation and normalisation stay one torchvision
v2 transform applied to image and mask together, so geometric changes hit both alike.

Example:
    >>> import torch
    >>> from torchvision import tv_tensors
    >>> class Ones(SampleDataset):
    ...     def __len__(self) -> int:
    ...         return 1
    ...     def load(self, index: int):
    ...         return tv_tensors.Image(torch.ones(1, 4, 6)), tv_tensors.Mask(torch.zeros(4, 6, dtype=torch.long))
    >>> image, mask = Ones()[0]
    >>> type(image).__name__, tuple(image.shape), tuple(mask.shape)
    ('Tensor', (1, 4, 6), (4, 6))
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from segkit.data.sampling import sample_randomness

PairTransform = Callable[..., tuple[torch.Tensor, ...]]


class SampleDataset(Dataset, ABC):
    """A Dataset whose sample ``index`` is :meth:`load` ``(index)`` through ``transform``.

    A training index carries its augmentation's seed (:class:`segkit.data.sampling.SampleKey`),
    so the random transforms of a sample depend on ``(seed, epoch, index)`` only.
    """

    transform: PairTransform | None = None

    @abstractmethod
    def load(self, index: int) -> tuple[tv_tensors.TVTensor, ...]:
        """Sample ``index`` as ``(Image (C, H, W), Mask (H, W)[, Mask of instance ids])``."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        with sample_randomness(getattr(index, "seed", None)):
            items = self.load(int(index))
            if self.transform is not None:
                items = self.transform(*items)
        return tuple(item.as_subclass(torch.Tensor) for item in items)
