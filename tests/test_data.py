"""The built-in ``shapes`` data: deterministic scenes, all classes, ignore boundaries, joint flips."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from segkit.data import ShapesDataModule, ShapesDataset
from segkit.data.base import resolve_num_workers
from segkit.data.sampling import EpochSampler, ResumableDataLoader
from segkit.data.modules.shapes import SHAPES_MEAN, SHAPES_STD
from segkit.data.synthetic.shapes_render import IGNORE_INDEX
from segkit.errors import SegkitError


def batches(dataset: ShapesDataset, num_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    loader = DataLoader(dataset, batch_size=3, num_workers=num_workers, shuffle=False)
    images, masks = zip(*loader)
    return torch.cat(images), torch.cat(masks)


def test_same_seed_split_and_index_give_the_same_scene_in_two_instances() -> None:
    first = ShapesDataset("val", length=5, image_size=40, seed=3)
    second = ShapesDataset("val", length=5, image_size=40, seed=3)
    for index in range(5):
        image_a, mask_a = first[index]
        image_b, mask_b = second[index]
        assert torch.equal(image_a, image_b)
        assert torch.equal(mask_a, mask_b)


@pytest.mark.timeout(120)
def test_scenes_do_not_depend_on_the_number_of_dataloader_workers() -> None:
    dataset = ShapesDataset("train", length=6, image_size=32, seed=1)
    images_0, masks_0 = batches(dataset, num_workers=0)
    images_2, masks_2 = batches(dataset, num_workers=2)
    assert torch.equal(images_0, images_2)
    assert torch.equal(masks_0, masks_2)


def test_datamodule_val_batches_do_not_depend_on_the_number_of_workers() -> None:
    loaded = []
    for workers in (0, 2):
        datamodule = ShapesDataModule(train_size=4, val_size=6, test_size=4, image_size=32,
                                      batch_size=3, num_workers=workers)
        datamodule.setup("fit")
        loaded.append([batch for batch in datamodule.val_dataloader()])
    for (images_a, masks_a), (images_b, masks_b) in zip(*loaded, strict=True):
        assert torch.equal(images_a, images_b)
        assert torch.equal(masks_a, masks_b)


@pytest.mark.parametrize(
    "other",
    [
        {"seed": 1, "split": "val", "index": 0},
        {"seed": 0, "split": "test", "index": 0},
        {"seed": 0, "split": "train", "index": 0},
        {"seed": 0, "split": "val", "index": 1},
    ],
    ids=["seed", "split-test", "split-train", "index"],
)
def test_a_different_seed_split_or_index_gives_a_different_scene(other: dict) -> None:
    reference_image, reference_mask = ShapesDataset("val", length=4, image_size=48, seed=0)[0]
    dataset = ShapesDataset(other["split"], length=4, image_size=48, seed=other["seed"])
    image, mask = dataset[other["index"]]
    assert not torch.equal(image, reference_image)
    assert not torch.equal(mask, reference_mask)


def test_there_are_background_and_at_least_five_object_classes_and_all_appear() -> None:
    datamodule = ShapesDataModule(val_size=50, num_workers=0)
    names = list(datamodule.class_names)
    assert names[0] == "background"
    assert len(names) >= 6 and len(set(names)) == len(names)
    assert datamodule.num_classes == len(names)
    datamodule.setup("validate")
    seen: set[int] = set()
    for index in range(len(datamodule.val_set)):
        seen |= set(datamodule.val_set[index][1].unique().tolist())
    assert seen - {IGNORE_INDEX} == set(range(datamodule.num_classes))


def test_masks_mark_object_boundaries_with_the_ignore_index() -> None:
    dataset = ShapesDataset("val", length=4, image_size=64)
    for index in range(4):
        mask = dataset[index][1]
        values = set(mask.unique().tolist())
        assert IGNORE_INDEX in values
        assert values <= set(range(len(ShapesDataModule.class_names))) | {IGNORE_INDEX}
        # Pixels are either a class or the boundary band: most are a class.
        assert (mask == IGNORE_INDEX).float().mean() < 0.5


def test_boundary_width_zero_disables_the_ignore_band() -> None:
    mask = ShapesDataset("val", length=1, image_size=64, boundary_width=0)[0][1]
    assert IGNORE_INDEX not in mask.unique().tolist()


@pytest.mark.parametrize("size", [(37, 53), (53, 37), 17])
def test_any_image_size_works(size: int | tuple[int, int]) -> None:
    height, width = (size, size) if isinstance(size, int) else size
    image, mask = ShapesDataset("train", length=2, image_size=size)[1]
    assert image.shape == (3, height, width) and image.dtype == torch.float32
    assert mask.shape == (height, width) and mask.dtype == torch.int64


def test_datamodule_normalises_images_and_keeps_masks_as_class_indices() -> None:
    datamodule = ShapesDataModule(train_size=2, val_size=2, test_size=2, image_size=(37, 53),
                                  num_workers=0, batch_size=2)
    datamodule.setup("fit")
    images, masks = next(iter(datamodule.val_dataloader()))
    raw_image, raw_mask = datamodule.val_set.render(0)
    expected = (torch.from_numpy(raw_image).permute(2, 0, 1) - torch.tensor(SHAPES_MEAN)[:, None, None]) \
        / torch.tensor(SHAPES_STD)[:, None, None]
    torch.testing.assert_close(images[0], expected)
    assert torch.equal(masks[0], torch.from_numpy(raw_mask).long())
    assert images.shape == (2, 3, 37, 53)


def test_train_augmentation_flips_image_and_mask_together() -> None:
    datamodule = ShapesDataModule(train_size=24, image_size=(24, 40), num_workers=0, augment=True)
    datamodule.setup("fit")
    train_set = datamodule.train_set
    mean = torch.tensor(SHAPES_MEAN)[:, None, None]
    std = torch.tensor(SHAPES_STD)[:, None, None]
    flips = {
        "none": lambda t: t,
        "horizontal": lambda t: t.flip(-1),
        "vertical": lambda t: t.flip(-2),
        "both": lambda t: t.flip(-1).flip(-2),
    }
    torch.manual_seed(0)
    seen = set()
    for index in range(len(train_set)):
        image, mask = train_set[index]
        raw_image, raw_mask = train_set.render(index)
        plain_image = (torch.from_numpy(raw_image).permute(2, 0, 1) - mean) / std
        plain_mask = torch.from_numpy(raw_mask).long()
        matching = [
            name for name, flip in flips.items()
            if torch.allclose(image, flip(plain_image), atol=1e-5)
        ]
        assert len(matching) == 1, f"sample {index}: image is not a flip of the render"
        # The mask went through the very same flip as the image.
        assert torch.equal(mask, flips[matching[0]](plain_mask)), f"sample {index}: {matching[0]}"
        seen.add(matching[0])
    assert {"horizontal", "vertical"} & seen, "augmentation never flipped anything"


def test_validation_and_test_splits_are_not_augmented() -> None:
    datamodule = ShapesDataModule(val_size=4, test_size=4, image_size=32, num_workers=0)
    datamodule.setup("fit")
    for dataset in (datamodule.val_set, datamodule.test_set):
        torch.manual_seed(1)
        first = [dataset[i][1] for i in range(4)]
        torch.manual_seed(2)
        second = [dataset[i][1] for i in range(4)]
        assert all(torch.equal(a, b) for a, b in zip(first, second))
        assert torch.equal(first[0], torch.from_numpy(dataset.render(0)[1]).long())


def test_render_is_bit_identical_to_a_fresh_generator() -> None:
    dataset = ShapesDataset("test", length=3, image_size=(20, 30), seed=5)
    image_a, mask_a = dataset.render(2)
    image_b, mask_b = dataset.render(2)
    assert np.array_equal(image_a, image_b) and np.array_equal(mask_a, mask_b)
    assert image_a.min() >= 0.0 and image_a.max() <= 1.0


def test_out_of_range_index_and_unknown_split_are_rejected() -> None:
    dataset = ShapesDataset("val", length=3, image_size=16)
    with pytest.raises(IndexError):
        dataset[3]
    with pytest.raises(ValueError, match="split"):
        ShapesDataset("training", length=3)


def test_resolve_num_workers_passes_integers_through() -> None:
    assert resolve_num_workers(0) == 0
    assert resolve_num_workers(3) == 3


@pytest.mark.parametrize(("cores", "expected"), [(1, 0), (2, 0), (3, 2), (4, 3), (16, 8)])
def test_resolve_num_workers_auto_follows_the_usable_cores(
    cores: int, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert resolve_num_workers("auto") == expected


def test_resolve_num_workers_auto_without_affinity_uses_cpu_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert resolve_num_workers("auto") == 5


@pytest.mark.parametrize("bad", [-1, "two", "4"])
def test_resolve_num_workers_rejects_other_values(bad: int | str) -> None:
    with pytest.raises(SegkitError, match="data.num_workers"):
        resolve_num_workers(bad)


def test_datamodule_resolves_auto_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert ShapesDataModule(num_workers="auto").num_workers == 0


def test_resampled_training_shows_new_scenes_every_epoch_and_val_never_changes() -> None:
    dm = ShapesDataModule(image_size=16, train_size=4, val_size=2, test_size=2, num_workers=0, augment=False)
    dm.setup("fit")
    loader = dm.train_dataloader()
    epochs = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)  # what Lightning does before each epoch
        epochs.append(sorted(loader.sampler))
    assert epochs == [[0, 1, 2, 3], [4, 5, 6, 7]]
    first_epoch_scene, second_epoch_scene = dm.train_set[0], dm.train_set[4]
    assert not torch.equal(first_epoch_scene[0], second_epoch_scene[0])
    assert len(list(dm.train_set)) == 4  # iterating stops at len() even though indices go on
    with pytest.raises(IndexError):
        dm.val_set[2]


def test_without_resampling_every_epoch_repeats_the_same_scenes_in_a_new_order() -> None:
    dm = ShapesDataModule(image_size=16, train_size=8, num_workers=0, resample_train=False)
    dm.setup("fit")
    sampler = dm.train_dataloader().sampler
    orders = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(8))
    assert orders[0] != orders[1]


def test_epoch_sampler_shards_disjointly_over_ranks_and_resumes_within_a_share() -> None:
    shares = [EpochSampler(10, seed=3, num_replicas=2, rank=rank) for rank in (0, 1)]
    for sampler in shares:
        sampler.set_epoch(2)
    orders = [list(sampler) for sampler in shares]
    assert sorted(orders[0] + orders[1]) == list(range(10))
    shares[1].start_at(3)
    assert list(shares[1]) == orders[1][3:]
    assert list(shares[1]) == orders[1]  # the skip applies to one iteration only


def test_resumable_loader_state_points_past_a_finished_epoch() -> None:
    loader = ResumableDataLoader(list(range(8)), batch_size=4, sampler=EpochSampler(8, seed=0))
    loader.sampler.set_epoch(5)
    assert len(list(loader)) == 2
    assert loader.state_dict() == {"epoch": 6, "batches": 0}
