"""Augmentation for EM membrane segmentation (U-Net paper, section 3.1).

Shifts, rotations, grey-value changes and, above all, elastic deformations: random
displacements on a coarse 3x3 grid with 10 px standard deviation, interpolated bicubically to
every pixel. Every geometric step moves an image and its ``tv_tensors.Mask`` together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2


class ElasticDeformation(v2.Transform):
    """Smooth random warp: a ``grid x grid`` lattice of N(0, sigma) px displacements, bicubic.

    Output pixel ``p`` reads the input at ``p + u(p)``: images with bilinear interpolation,
    masks with nearest neighbour (labels stay labels), both with reflection padding and the same
    field, so image and mask stay aligned. Applied with probability ``p``; images keep their
    dtype (uint8 is rounded back), sizes never change.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> image = tv_tensors.Image(torch.rand(1, 40, 50))
        >>> mask = tv_tensors.Mask(torch.randint(0, 2, (40, 50)))
        >>> out_image, out_mask = ElasticDeformation(sigma=10.0)(image, mask)
        >>> tuple(out_image.shape), tuple(out_mask.shape), type(out_mask).__name__
        ((1, 40, 50), (40, 50), 'Mask')
    """

    def __init__(self, grid: int = 3, sigma: float = 10.0, p: float = 1.0) -> None:
        super().__init__()
        if grid < 2:
            raise ValueError(f"grid must be at least 2, got {grid}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.grid = grid
        self.sigma = sigma
        self.p = p

    def displacement_field(
        self, height: int, width: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A random ``(2, H, W)`` field ``(dx, dy)`` in pixels (the lattice values at its nodes).

        Example:
            >>> field = ElasticDeformation().displacement_field(9, 9, torch.Generator().manual_seed(0))
            >>> tuple(field.shape)
            (2, 9, 9)
        """
        coarse = torch.randn(1, 2, self.grid, self.grid, generator=generator) * self.sigma
        # align_corners=True puts the lattice's outer nodes on the image's corner pixels.
        field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
        return field[0]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if torch.rand(1).item() >= self.p:
            return {"grid": None}
        height, width = v2.query_size(flat_inputs)
        field = self.displacement_field(height, width)
        ys, xs = torch.meshgrid(
            torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
        )
        # Normalised sampling positions for grid_sample (align_corners=True: -1/+1 = pixel centres).
        gx = 2.0 * (xs + field[0]) / max(width - 1, 1) - 1.0
        gy = 2.0 * (ys + field[1]) / max(height - 1, 1) - 1.0
        return {"grid": torch.stack([gx, gy], dim=-1)[None]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        grid = params["grid"]
        if grid is None:
            return inpt
        if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.KeyPoints)):
            raise TypeError(f"ElasticDeformation does not support {type(inpt).__name__}")
        if not isinstance(inpt, torch.Tensor):
            raise TypeError(f"ElasticDeformation needs tv_tensors.Image/Mask, got {type(inpt).__name__}")
        is_mask = isinstance(inpt, tv_tensors.Mask)
        shape = inpt.shape
        # Any leading dims (C, T x C, or none for an (H, W) mask) become channels of one sample.
        flat = inpt.as_subclass(torch.Tensor).reshape(1, -1, *shape[-2:])
        work = flat if flat.is_floating_point() else flat.to(torch.float32)
        out = F.grid_sample(
            work,
            grid.to(device=work.device, dtype=work.dtype),
            mode="nearest" if is_mask else "bilinear",
            padding_mode="reflection",
            align_corners=True,
        )
        if not flat.is_floating_point():
            if not is_mask:
                info = torch.iinfo(flat.dtype)
                out = out.round_().clamp_(info.min, info.max)
            out = out.to(flat.dtype)
        return tv_tensors.wrap(out.reshape(shape), like=inpt)


class RandomRot90(v2.Transform):
    """Rotation by a random multiple of 90 degrees (exact, no resampling).

    Non-square inputs only get 0 or 180 degrees, so the size never changes.

    Example:
        >>> out = RandomRot90()(tv_tensors.Mask(torch.zeros(3, 4, dtype=torch.long)))
        >>> tuple(out.shape)
        (3, 4)
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        k = int(torch.randint(4, (1,)).item())
        return {"k": k if height == width else 2 * (k % 2)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.KeyPoints)):
            raise TypeError(f"RandomRot90 does not support {type(inpt).__name__}")
        if params["k"] == 0 or not isinstance(inpt, torch.Tensor):
            return inpt
        out = torch.rot90(inpt.as_subclass(torch.Tensor), params["k"], dims=(-2, -1))
        return tv_tensors.wrap(out, like=inpt)


def em_transforms(
    train: bool,
    mean: Sequence[float],
    std: Sequence[float],
    elastic: bool = True,
    crop_size: int | None = None,
    ignore_index: int = 255,
) -> v2.Compose:
    """Transforms for EM ``(Image (1, H, W) float in [0, 1] or uint8, Mask)`` pairs.

    Training, after an optional random crop (a shift; ``pad_if_needed``, mask padded with
    ``ignore_index``): the exact symmetries of EM sections, which have no preferred orientation
    (random multiples of 90 degrees and both flips), then a small random affine (up to 10
    degrees and 5 % shift, new mask pixels ``ignore_index``, new image pixels 0), an elastic
    deformation (3x3 grid, sigma 10 px), then float conversion and a brightness/contrast jitter of
    the image only. Evaluation: float conversion and normalisation only. Sizes are preserved
    unless ``crop_size`` is given.

    Example:
        >>> t = em_transforms(True, mean=[0.5], std=[0.2])
        >>> image, mask = t(tv_tensors.Image(torch.rand(1, 32, 32)),
        ...                 tv_tensors.Mask(torch.randint(0, 2, (32, 32))))
        >>> tuple(image.shape), image.dtype, tuple(mask.shape)
        ((1, 32, 32), torch.float32, (32, 32))
    """
    steps: list[v2.Transform] = []
    if train:
        fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: ignore_index}
        if crop_size is not None:
            steps.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill))
        steps += [
            RandomRot90(),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomAffine(degrees=10.0, translate=(0.05, 0.05), fill=fill),
        ]
        if elastic:
            steps.append(ElasticDeformation(grid=3, sigma=10.0))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if train:
        steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2))
    steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps)
