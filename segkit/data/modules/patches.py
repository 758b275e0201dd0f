"""``data=patches``: any segmentation DataModule, with training batches of (window, centre label)
pairs drawn in the loader's workers (:class:`~segkit.data.windows.WindowSampler`); validation and
test keep the wrapped module's whole images, for the dense form to score.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from segkit.data.base import SegmentationDataModule
from segkit.data.sampling import sample_randomness
from segkit.data.windows import WindowClassifier, WindowSampler
from segkit.errors import SegkitError


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
        from segkit.data.modules.shapes import ShapesDataModule

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
        model = self.trainer.lightning_module if self.trainer is not None else None
        declared = model if isinstance(model, WindowClassifier) else None
        if self.window is None:
            if declared is None:
                raise SegkitError(f"data.window=null: the model ({type(model).__name__}) declares no window size; "
                                  "set data.window (e.g. 95 for N4) or use model=patch_cnn")
            self.window = declared.window
        sampler = self.sampler or (declared.sampler if declared else WindowSampler(ignore_index=self.ignore_index))
        self.train_set = WindowSamples(self.base.train_set, sampler, self.window)
        self.val_set, self.test_set = self.base.val_set, self.base.test_set

    def train_dataloader(self) -> DataLoader:
        return self._train_loader(self.train_set, collate_fn=_concatenate)

    def val_dataloader(self) -> DataLoader:
        return self.base.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.base.test_dataloader()
