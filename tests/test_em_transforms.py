"""segkit.data.em_transforms: elastic deformation keeps image and mask aligned; EM pipelines."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torchvision import tv_tensors

from segkit.data.em_transforms import ElasticDeformation, RandomRot90, em_transforms

IGNORE = 255


def blob_mask(height: int = 64, width: int = 64) -> torch.Tensor:
    """Cells (0) on a membrane (1): four discs and a bar, enough edges to see a warp."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    mask = torch.ones(height, width, dtype=torch.long)
    for cy, cx, r in [(16, 16, 10), (16, 46, 12), (46, 18, 11), (44, 48, 9)]:
        mask[(ys - cy) ** 2 + (xs - cx) ** 2 <= r * r] = 0
    mask[30:34, :] = 1
    return mask


def warp(transform: ElasticDeformation, seed: int, *inputs: torch.Tensor) -> Any:
    torch.manual_seed(seed)
    return transform(*inputs)


def test_image_and_mask_are_deformed_identically() -> None:
    mask = blob_mask()
    # The image is the label itself, so a faithful joint warp gives back the warped label
    # after thresholding, up to the bilinear blur on label edges.
    image = tv_tensors.Image(mask.float()[None])
    out_image, out_mask = warp(ElasticDeformation(sigma=10.0), 0, image, tv_tensors.Mask(mask))
    assert (out_mask != mask).float().mean() > 0.05, "the warp should move label edges"
    disagree = ((out_image[0] > 0.5).long() != out_mask).float().mean()
    assert disagree < 0.02


def test_masks_keep_their_labels_dtype_and_type() -> None:
    mask = blob_mask()
    mask[:5] = IGNORE
    image = tv_tensors.Image(torch.rand(1, 64, 64))
    _, out_mask = warp(ElasticDeformation(), 1, image, tv_tensors.Mask(mask))
    assert isinstance(out_mask, tv_tensors.Mask)
    assert out_mask.dtype == torch.long
    assert set(out_mask.unique().tolist()) <= {0, 1, IGNORE}


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_sizes_and_image_dtype_are_unchanged(dtype: torch.dtype) -> None:
    image = tv_tensors.Image((torch.rand(1, 48, 80) * 255).to(dtype))
    mask = tv_tensors.Mask(blob_mask(48, 80))
    out_image, out_mask = warp(ElasticDeformation(), 2, image, mask)
    assert out_image.shape == (1, 48, 80) and out_mask.shape == (48, 80)
    assert out_image.dtype == dtype and isinstance(out_image, tv_tensors.Image)
    assert not torch.equal(out_image, image)


def test_three_channel_images_use_one_field_for_all_channels() -> None:
    plane = torch.rand(40, 40)
    image = tv_tensors.Image(plane.expand(3, 40, 40).clone())
    out = warp(ElasticDeformation(), 3, image)  # one input in, one out
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])


def test_same_seed_same_result_other_seed_other_result() -> None:
    image, mask = tv_tensors.Image(torch.rand(1, 64, 64)), tv_tensors.Mask(blob_mask())
    transform = ElasticDeformation()
    first = warp(transform, 7, image, mask)
    again = warp(transform, 7, image, mask)
    other = warp(transform, 8, image, mask)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_probability_zero_is_the_identity() -> None:
    image, mask = tv_tensors.Image(torch.rand(1, 64, 64)), tv_tensors.Mask(blob_mask())
    out_image, out_mask = warp(ElasticDeformation(p=0.0), 0, image, mask)
    assert torch.equal(out_image, image) and torch.equal(out_mask, mask)


def test_field_nodes_are_grid_displacements_with_std_sigma() -> None:
    # 65 px with a 3x3 lattice: nodes on pixels 0, 32, 64, where bicubic interpolation is exact.
    transform = ElasticDeformation(grid=3, sigma=10.0)
    generator = torch.Generator().manual_seed(0)
    fields = torch.stack([transform.displacement_field(65, 65, generator) for _ in range(300)])
    assert fields.shape == (300, 2, 65, 65)
    nodes = fields[:, :, ::32, ::32]
    assert nodes.std().item() == pytest.approx(10.0, rel=0.05)
    assert nodes.mean().abs().item() < 0.5
    # Between nodes the field is smooth (neighbouring pixels move together) and a bit weaker.
    assert fields.std().item() < 10.0 and fields.std().item() > 6.0
    assert (fields[..., 1:] - fields[..., :-1]).abs().max().item() < 4.0


def test_field_is_reproducible_with_a_generator() -> None:
    transform = ElasticDeformation(sigma=3.0)
    a = transform.displacement_field(20, 30, torch.Generator().manual_seed(5))
    b = transform.displacement_field(20, 30, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (2, 20, 30)


def test_rot90_rotates_image_and_mask_together() -> None:
    mask = blob_mask()
    image = tv_tensors.Image(mask.float()[None])
    for seed in range(8):
        torch.manual_seed(seed)
        out_image, out_mask = RandomRot90()(image, tv_tensors.Mask(mask))
        assert torch.equal(out_image[0].long(), out_mask)


def test_train_pipeline_shapes_dtypes_and_mask_values() -> None:
    transform = em_transforms(True, mean=[0.5], std=[0.2])
    for seed, dtype in [(0, torch.float32), (1, torch.uint8)]:
        torch.manual_seed(seed)
        pixels = torch.rand(1, 64, 64)
        image = tv_tensors.Image((pixels * 255).to(dtype) if dtype == torch.uint8 else pixels)
        out_image, out_mask = transform(image, tv_tensors.Mask(blob_mask()))
        assert out_image.shape == (1, 64, 64) and out_image.dtype == torch.float32
        assert out_mask.shape == (64, 64) and out_mask.dtype == torch.long
        assert set(out_mask.unique().tolist()) <= {0, 1, IGNORE}


def test_train_pipeline_with_crop() -> None:
    transform = em_transforms(True, mean=[0.5], std=[0.2], crop_size=48)
    out_image, out_mask = transform(tv_tensors.Image(torch.rand(1, 64, 64)), tv_tensors.Mask(blob_mask()))
    assert out_image.shape == (1, 48, 48) and out_mask.shape == (48, 48)


def test_eval_pipeline_only_normalises_and_is_deterministic() -> None:
    transform = em_transforms(False, mean=[0.5], std=[0.25])
    image, mask = tv_tensors.Image(torch.rand(1, 32, 40)), tv_tensors.Mask(blob_mask(32, 40))
    first, second = transform(image, mask), transform(image, mask)
    assert torch.equal(first[0], second[0])
    torch.testing.assert_close(first[0], (image - 0.5) / 0.25)
    assert torch.equal(first[1], mask)
