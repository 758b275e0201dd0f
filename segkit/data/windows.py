"""(window, centre label) samples for sliding-window classifiers, from any segmentation data.

Ciresan et al. (2012) train on all membrane pixels plus as many random non-membrane ones,
with rotations and mirroring. :class:`WindowSampler` draws, per image, pixels balanced over the
classes present (or uniformly), cuts the window around each from the mirror-padded image and
applies one of the 8 dihedral transforms. ``data=patches``
(:class:`segkit.data.modules.patches.PatchDataModule`) draws them in a data loader.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import torch

from segkit.errors import SegkitError
from segkit.geometry import mirror_pad, window_batch, window_padding

Balance = Literal["classes", "none"]


@runtime_checkable
class WindowClassifier(Protocol):
    """What ``data=patches`` takes from the model it feeds when ``data.window`` is null: the
    window side and how windows are drawn (the model side of the patch contract;
    :class:`segkit.models.patch_cnn.PatchCNNModule` keeps it)."""

    window: int
    sampler: WindowSampler


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
