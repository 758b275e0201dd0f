"""A Dataset of ``(image file, mask file)`` pairs, decoded with every check when loaded."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from segkit.data.files.intensity import IntensityScaling
from segkit.data.files.masks import MaskDecoder
from segkit.data.files.preflight import Pair, load_pair
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
        keep_decoded: bool = False,
    ) -> None:
        self.pairs, self.transform = list(pairs), transform
        self.in_channels, self.decoder = in_channels, decoder
        self.intensity = intensity or IntensityScaling()
        self.with_instances = with_instances
        # Decoded, checked and scaled arrays by index, filled as samples are first loaded (in
        # each loader process): decoding costs more than a small net's step on a CPU.
        self.keep_decoded = keep_decoded
        self._decoded: dict[int, tuple[np.ndarray, ...]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def sample_name(self, index: int) -> str:
        """The image file's name (per-image scores)."""
        return Path(self.pairs[index][0]).name

    def decode(self, index: int) -> tuple[np.ndarray, ...]:
        """``(pixels (C, H, W) float, classes (H, W)[, instance ids (H, W)])`` of pair ``index``."""
        if index in self._decoded:
            return self._decoded[index]
        try:
            image, classes, instances, _ = load_pair(self.pairs[index], self.in_channels, self.decoder)
        except SegkitError as error:
            raise SampleError(str(error)) from None
        arrays: tuple[np.ndarray, ...] = (np.ascontiguousarray(self.intensity(image).transpose(2, 0, 1)), classes)
        if self.with_instances:
            arrays += (instances if instances is not None else np.zeros_like(classes),)
        if self.keep_decoded:
            self._decoded[index] = arrays
        return arrays

    def load(self, index: int) -> tuple[tv_tensors.TVTensor, ...]:
        # Copies when kept: the transforms hand out views (a crop), which callers may change.
        arrays = [array.copy() if self.keep_decoded else array for array in self.decode(index)]
        kinds = (tv_tensors.Image, *(tv_tensors.Mask,) * (len(arrays) - 1))
        return tuple(kind(torch.from_numpy(array)) for kind, array in zip(kinds, arrays))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        out = super().__getitem__(index)
        if self.with_instances:  # crop padding and ignored pixels belong to no object
            out[2][out[1] == self.decoder.ignore_index] = 0
        return out
