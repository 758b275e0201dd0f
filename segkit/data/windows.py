"""(window, centre label) samples for sliding-window classifiers, from any segmentation data.

Ciresan et al. (2012) train on all membrane pixels plus as many random non-membrane ones,
with rotations and mirroring. :class:`WindowSampler` draws, per image, pixels balanced over the
classes present (or uniformly), cuts the window around each from the mirror-padded image and
applies one of the 8 dihedral transforms. :class:`PatchDataModule` wraps any segmentation
DataModule so that its training loader yields such samples (drawn in the loader's workers);
validation and test keep the wrapped module's whole images, for the dense form to score.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset

from segkit.data.base import SegmentationDataModule
from segkit.data.sampling import sample_randomness
from segkit.errors import SegkitError
from segkit.geometry import mirror_pad, window_batch, window_padding

Balance = Literal["classes", "none"]


class WindowSampler:
    """Draw ``windows_per_image`` (window, centre label) pairs from each image of a batch.

    Args:
        windows_per_image: samples per image.
        balance: ``classes``: equal counts for every class present in the image (for 2
            classes, membrane / non-membrane as in the paper); ``none``: uniform over pixels.
        dihedral: apply a random one of the 8 rotations/mirrorings to each window.
        ignore_index: label never drawn.

    Example:
        >>> sampler = WindowSampler(windows_per_image=6, balance="classes")
        >>> masks = torch.zeros(1, 20, 20, dtype=torch.long); masks[0, :2] = 1  # 10% class 1
        >>> windows, labels = sampler(torch.randn(1, 3, 20, 20), masks, window=9)
        >>> tuple(windows.shape), labels.tolist().count(1)
        ((6, 3, 9, 9), 3)
    """

    def __init__(self, windows_per_image: int = 32, balance: Balance = "classes", dihedral: bool = True,
                 ignore_index: int = 255) -> None:
        if balance not in ("classes", "none"):
            raise ValueError(f"balance={balance!r}: choose classes or none")
        self.windows_per_image, self.balance, self.dihedral = windows_per_image, balance, dihedral
        self.ignore_index = ignore_index

    def pixels(self, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Flat indices of the sampled centre pixels of one ``(H, W)`` mask."""
        flat = mask.flatten()
        valid = (flat != self.ignore_index).nonzero().squeeze(1)
        if valid.numel() == 0:
            return valid
        count = self.windows_per_image
        if self.balance == "none":
            return valid[torch.randint(valid.numel(), (count,), generator=generator)]
        classes = flat[valid].unique()
        # Class of each sample: cycle through the present classes, in random order.
        order = classes[torch.randperm(classes.numel(), generator=generator)]
        chosen = order[torch.arange(count) % classes.numel()]
        picks = []
        for cls in classes:
            members = valid[flat[valid] == cls]
            n = int((chosen == cls).sum())
            picks.append(members[torch.randint(members.numel(), (n,), generator=generator)])
        return torch.cat(picks)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, window: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W)`` images, ``(B, H, W)`` masks -> ``(N, C, w, w)`` windows, ``(N,)`` labels."""
        before, after = window_padding(window)
        all_windows, all_labels = [], []
        for image, mask in zip(images, masks):
            index = self.pixels(mask, generator)
            rows, cols = index // mask.shape[1], index % mask.shape[1]
            padded = mirror_pad(image[None], before, after, before, after)[0]
            # The window centred at (r, c) starts at (r, c) in the padded image.
            all_windows.append(window_batch(padded, rows, cols, window))
            all_labels.append(mask[rows, cols])
        windows, labels = torch.cat(all_windows), torch.cat(all_labels)
        if self.dihedral and windows.shape[0]:
            windows = random_dihedral(windows, generator)
        return windows, labels


def random_dihedral(windows: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each ``(C, w, w)`` window rotated by a random multiple of 90 degrees and maybe mirrored
    (the 8 symmetries of the square, which keep an odd window's centre in place)."""
    choice = torch.randint(8, (windows.shape[0],), generator=generator)
    out = windows.clone()
    for k in range(8):
        selected = (choice == k).nonzero().squeeze(1)
        if selected.numel():
            part = torch.rot90(windows[selected], k % 4, dims=(-2, -1))
            out[selected] = part.flip(-1) if k >= 4 else part
    return out


class WindowSamples(Dataset):
    """Item ``i``: the windows sampled from image ``i`` of ``source`` (``(k, C, w, w)``, ``(k,)``)."""

    def __init__(self, source: Dataset, sampler: WindowSampler, window: int) -> None:
        self.source, self.sampler, self.window = source, sampler, window

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.source[index]  # a SampleKey index seeds the image's augmentation there
        seed = getattr(index, "seed", None)
        # The window draws: seeded per sample too, by a stream apart from the augmentation's.
        with sample_randomness(None if seed is None else seed + 1):
            return self.sampler(image[None], mask[None], self.window)


def _concatenate(items: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([w for w, _ in items]), torch.cat([label for _, label in items])


class PatchDataModule(SegmentationDataModule):
    """Any segmentation DataModule, with training batches of (window, centre label) pairs.

    ``window=None`` takes the model's ``window`` (e.g. 95 for N4) at setup, and ``sampler=None``
    the model's window sampler (``model.windows_per_image``, ``balance``, ``dihedral``: one
    place, whether windows are drawn here in the loader or by the model from whole images;
    :class:`WindowSampler`'s defaults without a model). A training batch holds ``batch_size``
    images x ``windows_per_image`` windows.

    Example:
        >>> from segkit.data import ShapesDataModule
        >>> dm = PatchDataModule(ShapesDataModule(train_size=4, num_workers=0), window=15,
        ...                      sampler=WindowSampler(windows_per_image=8), batch_size=2, num_workers=0)
        >>> dm.setup("fit")
        >>> windows, labels = next(iter(dm.train_dataloader()))
        >>> tuple(windows.shape), tuple(labels.shape), dm.num_classes
        ((16, 3, 15, 15), (16,), 6)
    """

    @classmethod
    def contract_config(cls, directory: Path) -> dict[str, Any]:
        # The base's own contract values; a 15-px window, not the model's.
        from segkit.data.shapes import ShapesDataModule

        return {"base": ShapesDataModule.contract_config(directory), "window": 15, "batch_size": 2, "num_workers": 0}

    def __init__(self, base: SegmentationDataModule, window: int | None = None, batch_size: int = 4,
                 num_workers: int | str = "auto", pin_memory: bool = False, sampler: WindowSampler | None = None) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.base, self.window, self.sampler = base, window, sampler
        self.num_classes, self.class_names = base.num_classes, base.class_names
        self.in_channels, self.ignore_index = base.in_channels, base.ignore_index
        # The base's statistics, scaling and membrane class (EM bases: the ISBI scores).
        self.mean, self.std, self.intensity = base.mean, base.std, base.intensity
        self.membrane_class = base.membrane_class

    def prepare_data(self) -> None:
        self.base.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.base.setup(stage)
        model = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        if self.window is None:
            self.window = getattr(model, "window", None)
            if self.window is None:
                raise SegkitError("data.window=null: the model has no window size; set data.window (e.g. 95 for N4)")
        sampler = self.sampler or getattr(model, "sampler", None) or WindowSampler(ignore_index=self.ignore_index)
        self.train_set = WindowSamples(self.base.train_set, sampler, self.window)
        self.val_set, self.test_set = self.base.val_set, self.base.test_set

    def train_dataloader(self) -> DataLoader:
        return self._train_loader(self.train_set, collate_fn=_concatenate)

    def val_dataloader(self) -> DataLoader:
        return self.base.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.base.test_dataloader()
