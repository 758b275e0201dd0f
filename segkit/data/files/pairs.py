"""A Dataset of ``(image file, mask file)`` pairs, decoded with every check when loaded."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from segkit.data.files.intensity import IntensityScaling
from segkit.data.files.large import EVAL_MARGIN, LargePair, is_large, tile_cores
from segkit.data.files.readers import read_header
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
        crop_size: int | None = None,
        tile_large: bool = False,
    ) -> None:
        self.pairs, self.transform = list(pairs), transform
        self.in_channels, self.decoder = in_channels, decoder
        self.intensity = intensity or IntensityScaling()
        self.with_instances = with_instances
        # Decoded, checked and scaled arrays by index, filled as samples are first loaded (in
        # each loader process): decoding costs more than a small net's step on a CPU.
        self.keep_decoded = keep_decoded
        self._decoded: dict[int, tuple[np.ndarray, ...]] = {}
        # Training crops of this size: a large TIFF pair (segkit.data.files.large) is read crop by
        # crop instead of whole. Opened pairs are kept per loader process.
        self.crop_size = crop_size
        self._large: dict[int, LargePair | None] = {}
        # Samples: (pair, None) for a whole pair; with tile_large (validation, evaluation) a large
        # pair is one sample per tile core instead (segkit.data.files.large.tile_cores).
        self.samples: list[tuple[int, tuple[int, int, int, int] | None]] = []
        for number, (image_path, _) in enumerate(self.pairs):
            if tile_large and is_large(Path(image_path)):
                header = read_header(Path(image_path))
                self.samples += [(number, core) for core in tile_cores(header.height, header.width)]
            else:
                self.samples.append((number, None))

    def __len__(self) -> int:
        return len(self.samples)

    def sample_name(self, index: int) -> str:
        """The image file's name (per-image scores); a tile's with its first row and column."""
        number, core = self.samples[index]
        name = Path(self.pairs[number][0]).name
        return name if core is None else f"{name}@{core[0]},{core[2]}"

    def instance_labels(self, index: int) -> np.ndarray | None:
        """The true instance ids ``(H, W)`` of sample ``index`` (0: background), for object
        scores; ``None`` for a tile of a large image (its objects are cut at the tile's edges)."""
        number, core = self.samples[index]
        if core is not None:
            return None
        try:
            _, _, instances, _ = load_pair(self.pairs[number], self.in_channels, self.decoder)
        except SegkitError as error:
            raise SampleError(str(error)) from None
        if instances is None:
            raise SegkitError(f"{self.pairs[number][1]}: object scores need instance masks (data.mask_type=instances)")
        return instances

    def decode(self, index: int) -> tuple[np.ndarray, ...]:
        """``(pixels (C, H, W) float, classes (H, W)[, instance ids (H, W)])`` of pair ``index``."""
        if index in self._decoded:
            return self._decoded[index]
        try:
            image, classes, instances, _ = load_pair(self.pairs[self.samples[index][0]], self.in_channels, self.decoder)
        except SegkitError as error:
            raise SampleError(str(error)) from None
        arrays: tuple[np.ndarray, ...] = (np.ascontiguousarray(self.intensity(image).transpose(2, 0, 1)), classes)
        if self.with_instances:
            arrays += (instances if instances is not None else np.zeros_like(classes),)
        if self.keep_decoded:
            self._decoded[index] = arrays
        return arrays

    def large_pair(self, index: int) -> LargePair | None:
        """Pair ``index`` opened for reading by region, if it is large."""
        if index not in self._large:
            try:
                pair = self.pairs[index]
                self._large[index] = LargePair(pair, self.in_channels, self.decoder, self.intensity) if is_large(
                    Path(pair[0])) else None
            except SegkitError as error:
                raise SampleError(str(error)) from None
        return self._large[index]

    def load(self, index: int) -> tuple[tv_tensors.TVTensor, ...]:
        number, core = self.samples[index]
        large = self.large_pair(number) if core is not None or self.crop_size is not None else None
        if large is not None:
            try:
                if core is not None:
                    image, classes, instances = large.tile(core, EVAL_MARGIN, self.decoder.ignore_index)
                else:
                    image, classes, instances = large.crop(self.crop_size)  # type: ignore[arg-type]
            except SegkitError as error:
                raise SampleError(str(error)) from None
            arrays: list[np.ndarray] = [image, classes]
            if self.with_instances:
                arrays.append(instances if instances is not None else np.zeros_like(classes))
        else:
            # Copies when kept: the transforms hand out views (a crop), which callers may change.
            arrays = [array.copy() if self.keep_decoded else array for array in self.decode(index)]
        kinds = (tv_tensors.Image, *(tv_tensors.Mask,) * (len(arrays) - 1))
        return tuple(kind(torch.from_numpy(array)) for kind, array in zip(kinds, arrays))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        out = super().__getitem__(index)
        if self.with_instances:  # crop padding and ignored pixels belong to no object
            out[2][out[1] == self.decoder.ignore_index] = 0
        return out
