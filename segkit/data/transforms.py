"""Joint image + mask transforms built on torchvision.transforms.v2.

Images travel as ``tv_tensors.Image`` and masks as ``tv_tensors.Mask``, so one call applies the
same random flip/crop to both, interpolates masks with nearest neighbour, never normalises a
mask, and fills new mask pixels with the ignore index.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from segkit.data.augment import ForegroundCrop, RandomIntensity
from segkit.data.em_transforms import ElasticDeformation, RandomRot90


def segmentation_transforms(
    train: bool,
    mean: Sequence[float],
    std: Sequence[float],
    hflip: bool = True,
    vflip: bool = False,
    crop_size: int | None = None,
    ignore_index: int = 255,
    rot90: bool = False,
    elastic: bool = False,
    intensity: RandomIntensity | None = None,
    foreground_oversample: float = 0.0,
) -> v2.Compose:
    """Transforms for ``(Image, Mask)`` pairs: augmentation when ``train``, then normalisation.

    Training: a random crop (with ``foreground_oversample``, that fraction of crops holds an
    object pixel: :class:`segkit.data.augment.ForegroundCrop`), then flips and multiples of 90 degrees (``rot90``; with ``hflip``
    that is all 8 symmetries of a square), the U-Net paper's elastic deformation (``elastic``: 3x3
    grid, sigma 10 px), then on the float image only ``intensity`` (gain, offset, gamma, noise).

    Example:
        >>> t = segmentation_transforms(True, mean=[0.5] * 3, std=[0.25] * 3, crop_size=32)
        >>> image, mask = t(tv_tensors.Image(torch.rand(3, 40, 50)),
        ...                 tv_tensors.Mask(torch.zeros(40, 50, dtype=torch.long)))
        >>> tuple(image.shape), tuple(mask.shape), mask.dtype
        ((3, 32, 32), (32, 32), torch.int64)
    """
    steps: list[v2.Transform] = []
    if train:
        if crop_size is not None and foreground_oversample > 0:
            steps.append(ForegroundCrop(crop_size, foreground_oversample, ignore_index))
        elif crop_size is not None:
            fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: ignore_index}
            steps.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill))
        if hflip:
            steps.append(v2.RandomHorizontalFlip())
        if vflip:
            steps.append(v2.RandomVerticalFlip())
        if rot90:
            steps.append(RandomRot90())
        if elastic:
            steps.append(ElasticDeformation(grid=3, sigma=10.0))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if train and intensity is not None:
        steps.append(intensity)
    steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps)
