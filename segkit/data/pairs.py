"""A Dataset of ``(image file, mask file)`` pairs, decoded with every check when loaded."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchvision import tv_tensors

from segkit.data.intensity import IntensityScaling
from segkit.data.masks import MaskDecoder
from segkit.data.preflight import Pair, load_pair
from segkit.data.samples import SampleDataset
from segkit.errors import SegkitError


class SampleError(SegkitError):
    """A :class:`SegkitError` met while loading a sample; keeps its one-line message when a
    DataLoader worker re-raises it in the main process (torch passes the worker's traceback as
    the message of a new exception of the same class)."""

    def __init__(self, message: str) -> None:
        prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
        if message.startswith("Caught "):
            original = [line for line in message.splitlines() if line.startswith(prefix)]
            message = original[-1][len(prefix):] if original else message
        super().__init__(message)


class PairDataset(SampleDataset):
    """The pairs of one split as ``(image float (C, H, W), mask long (H, W))`` through a joint
    ``transform``; with ``with_instances`` a third item, the instance ids ``(H, W)`` (0 where
    the mask is ignored, crop padding included), for the U-Net weight-map loss.

    Example:
        >>> from segkit.data.transforms import segmentation_transforms
        >>> split = PairDataset([], segmentation_transforms(False, [0.5], [0.25]), 1, MaskDecoder())
        >>> len(split)
        0
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        transform: Callable,
        in_channels: int,
        decoder: MaskDecoder,
        intensity: IntensityScaling | None = None,
        with_instances: bool = False,
    ) -> None:
        self.pairs, self.transform = list(pairs), transform
        self.in_channels, self.decoder = in_channels, decoder
        self.intensity = intensity or IntensityScaling()
        self.with_instances = with_instances

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[tv_tensors.TVTensor, ...]:
        try:
            image, classes, instances, _ = load_pair(self.pairs[index], self.in_channels, self.decoder)
        except SegkitError as error:
            raise SampleError(str(error)) from None
        pixels = np.ascontiguousarray(self.intensity(image).transpose(2, 0, 1))
        items = [tv_tensors.Image(torch.from_numpy(pixels)), tv_tensors.Mask(torch.from_numpy(classes))]
        if self.with_instances:
            ids = instances if instances is not None else np.zeros_like(classes)
            items.append(tv_tensors.Mask(torch.from_numpy(ids)))
        return tuple(items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        out = super().__getitem__(index)
        if self.with_instances:  # crop padding and ignored pixels belong to no object
            out[2][out[1] == self.decoder.ignore_index] = 0
        return out
