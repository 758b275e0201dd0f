"""Users' own data from a folder tree: ``data=folder data.root=PATH data.num_classes=K``.

Layout: ``PATH/{train,val,test}/{images,masks}/<name>.<ext>``; an image and its mask share a
name stem (``images/a.tif`` + ``masks/a.png``). Images: PNG, JPEG or TIFF, 8- or 16-bit
integer or float, any number of channels (``in_channels``; a multi-page or ``(C, H, W)`` TIFF
gives channels), scaled by :class:`segkit.data.files.intensity.IntensityScaling`. Masks: PNG or TIFF,
read as ``mask_type`` says (:mod:`segkit.data.files.masks`: class indices, binary, instance labels
or colours). ``test/`` is optional; without it, test uses val. Hidden (dot) files are skipped.

Validation (``validate``), so that no bad file is met after hours of training:

- ``full`` (default): at setup, every training and validation pair is decoded and checked
  (:mod:`segkit.data.files.preflight`: values, truncation, sizes, channels), in parallel with a
  progress bar, cached by path + size + mtime so the next run over the same files is instant.
- ``header``: at setup, headers only (sizes, channels); pixels are checked when loaded.
- ``lazy``: nothing but pairing at setup (millions of files, slow network storage).

Every problem is a one-line :class:`SegkitError` naming the file and the fix.

Cross-validation (``folds=K``, ``fold=k``; :mod:`segkit.data.folds`): the pool, ``train/`` and
``val/`` (``train/`` alone when there is no ``test/``, since test then reads ``val/``), is divided
into K parts by image path and classes; fold k validates on part k and trains on the others.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from segkit.data.base import SegmentationDataModule, check_normalization, whole_number
from segkit.data.folds import check_fold_settings, fold_split, read_present_classes
from segkit.data.files.crops import auto_crop_size, check_crop_size
from segkit.data.files.folder_index import check_headers, check_root, find_pairs, read_classes
from segkit.data.files.intensity import IntensityScaling
from segkit.data.files.large import is_large
from segkit.data.files.masks import MaskDecoder
from segkit.data.files.readers import read_pixels
from segkit.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from segkit.data.files.pairs import PairDataset
from segkit.data.files.preflight import (
    Pair,
    PairFacts,
    PreflightCache,
    check_binary_trap,
    pair_facts,
    scan_pairs,
)
from segkit.data.augment import RandomIntensity
from segkit.data.transforms import segmentation_transforms
from segkit.errors import SegkitError, shown

# Inputs other than RGB: the same normalisation as data=em and data=isbi2012 ([0, 1] -> [-2, 2]).
GREY_MEAN, GREY_STD = (0.5,), (0.25,)
VALIDATE_MODES = ("full", "header", "lazy")
# Masks decoded at setup under header/lazy validation to catch the 0/255 trap early.
TRAP_SAMPLE = 8
# keep_decoded=auto keeps a split's decoded arrays when they take at most this much in all
# loader processes together: the generated user data sets take 10-80 MiB.
KEEP_DECODED_LIMIT_BYTES = 1 << 30
Sizes = list[tuple[int, int]]
# What the checks of one folder found: its images' sizes (None: not read) and the facts of the pairs decoded.
Checked = tuple[Sizes | None, dict[Pair, PairFacts]]


class FolderDataModule(SegmentationDataModule):
    """Segmentation data from ``root/{train,val,test}/{images,masks}`` (see the module docstring).

    Training takes random ``crop_size`` crops (``"auto"``: :func:`auto_crop_size` of the
    training images; padded with ``ignore_index`` where an image is smaller), so differently
    sized images batch; validation and test run on whole images, one at a time. Class names
    (and a ``colors`` palette) come from ``class_names``/``palette``, else ``root/classes.txt``.

    ``mean``/``std`` (after intensity scaling to about [0, 1]) default to ImageNet's statistics
    for 3 channels, what the pretrained VGG16 of model=fcn expects, and to 0.5/0.25 per channel
    otherwise.

    Example:
        >>> dm = FolderDataModule(root="data/mine", num_classes=3, class_names=["sky", "road", "car"])
        >>> dm.num_classes, dm.class_names[2], dm.in_channels, dm.mean
        (3, 'car', 3, [0.485, 0.456, 0.406])
    """

    @classmethod
    def contract_config(cls, directory: Path) -> dict[str, Any]:
        from segkit.contracts.fake_data import make_fake_folder

        return {"root": str(make_fake_folder(directory)), "num_classes": 3, "batch_size": 2, "num_workers": 0}

    def __init__(
        self,
        root: str,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        in_channels: int = 3,
        mask_type: str = "index",
        palette: Sequence[Sequence[int]] | None = None,
        ignore_color: Sequence[int] | None = None,
        ignore_index: int = 255,
        crop_size: int | str | None = "auto",
        batch_size: int = 8,
        num_workers: int | str = "auto",
        pin_memory: bool = False,
        hflip: bool = True,
        vflip: bool = False,
        rot90: bool = False,
        elastic: bool = False,
        gain: float = 0.0,
        offset: float = 0.0,
        gamma: float = 0.0,
        noise: float = 0.0,
        foreground_oversample: float = 0.0,
        intensity: str = "auto",
        percentiles: Sequence[float] = (1.0, 99.8),
        value_range: Sequence[float] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        validate: str = "full",
        keep_decoded: bool | str = "auto",
        folds: int | None = None,
        fold: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        whole_number("num_classes", num_classes, 2, "classes")
        whole_number("in_channels", in_channels, 1, "channels of your images")
        if validate not in VALIDATE_MODES:
            raise SegkitError(f"data.validate={validate!r}: use 'full' (decode every pair at setup), 'header' or 'lazy'")
        check_crop_size(crop_size)
        if keep_decoded not in (True, False, "auto"):
            raise SegkitError(f"data.keep_decoded={keep_decoded!r}: use auto, true or false")
        if batch_size > 1 and crop_size is None:
            raise SegkitError(
                f"data.batch_size={batch_size} with data.crop_size=null: images may differ in size; "
                "set data.crop_size (e.g. auto or 256) or data.batch_size=1"
            )
        self.root = Path(root).expanduser().absolute()
        self.num_classes, self.in_channels, self.ignore_index = num_classes, in_channels, ignore_index
        names = None if class_names is None else list(class_names)
        self.class_names, file_palette = read_classes(self.root, num_classes, names)
        self.decoder = MaskDecoder(mask_type, num_classes, ignore_index,
                                   palette if palette is not None else file_palette, ignore_color)
        self.intensity = IntensityScaling.from_config(
            {"mode": intensity, "percentiles": percentiles, "value_range": value_range})
        self.crop_size, self.hflip, self.vflip, self.validate = crop_size, hflip, vflip, validate
        self.rot90, self.elastic = rot90, elastic
        if not 0.0 <= foreground_oversample <= 1.0:
            raise SegkitError(f"data.foreground_oversample={foreground_oversample}: use a fraction of crops in [0, 1] "
                              "(e.g. 0.33), 0 for uniform crops")
        self.foreground_oversample = foreground_oversample
        try:
            jitter = RandomIntensity(scale=gain, shift=offset, gamma=gamma, noise=noise)
        except ValueError as error:
            raise SegkitError(f"data.gain/offset/gamma/noise: {error}; 0 switches one off") from None
        self.intensity_jitter = jitter if gain or offset or gamma or noise else None
        default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if in_channels == 3 else (
            GREY_MEAN * in_channels, GREY_STD * in_channels)
        self.mean = list(default_mean if mean is None else mean)
        self.std = list(default_std if std is None else std)
        check_normalization(self.mean, self.std, in_channels)
        self.keep_decoded = keep_decoded
        self.folds, self.fold = folds, check_fold_settings(folds, fold)
        self._sets: dict[str, PairDataset] = {}

    @property
    def mask_type(self) -> str:
        return self.decoder.mask_type

    def make_split(self, name: str, pairs: Sequence[Pair], sizes: Sequence[tuple[int, int]] | None = None) -> PairDataset:
        """The split's dataset; ``sizes`` (the images' heights and widths, when known) decide
        ``keep_decoded=auto``."""
        train = name == "train"
        crop = self.crop_size if train else None
        transform = segmentation_transforms(
            train, self.mean, self.std, hflip=self.hflip, vflip=self.vflip,
            crop_size=crop if isinstance(crop, int) else None, ignore_index=self.ignore_index,
            rot90=self.rot90, elastic=self.elastic, intensity=self.intensity_jitter,
            foreground_oversample=self.foreground_oversample,
        )
        with_instances = train and self.mask_type == "instances"
        return PairDataset(pairs, transform, self.in_channels, self.decoder, self.intensity,
                           with_instances=with_instances, keep_decoded=self._keeps(sizes, with_instances),
                           crop_size=crop if isinstance(crop, int) else None, tile_large=not train)

    def _keeps(self, sizes: Sequence[tuple[int, int]] | None, with_instances: bool) -> bool:
        if self.keep_decoded != "auto":
            return bool(self.keep_decoded)
        if sizes is None:  # validate=lazy: sizes unknown
            return False
        # float32 pixels, int64 classes (and instance ids) per pixel, in every loader process.
        bytes_per_pixel = 4 * self.in_channels + 8 * (2 if with_instances else 1)
        pixels = sum(height * width for height, width in sizes)
        return pixels * bytes_per_pixel * max(1, self.num_workers) <= KEEP_DECODED_LIMIT_BYTES

    def _check(self, name: str, pairs: list[Pair]) -> Checked:
        """Run the ``validate`` checks on one split (see :data:`Checked`)."""
        cache = PreflightCache({"root": str(self.root), "in_channels": self.in_channels, "decoder": repr(self.decoder)})
        if self.validate == "full":
            # Slides too large to decode whole are checked by their headers (and read crop by crop).
            by_region = name != "train" or self.crop_size is not None  # evaluation tiles, training crops
            large = {pair for pair in pairs if is_large(Path(pair[0]))} if by_region else set()
            small = [pair for pair in pairs if pair not in large]
            facts = scan_pairs(small, self.in_channels, self.decoder, self.audit_command(), cache=cache,
                               description=f"checking {name}")
            check_binary_trap(small, facts, self.decoder)
            sizes = dict(zip(small, [(fact.height, fact.width) for fact in facts]))
            sizes.update({pair: (header.height, header.width) for pair, header in zip(large, check_headers(list(large)))})
            return [sizes[pair] for pair in pairs], dict(zip(small, facts))
        # A bad file among the sample is left for the loader to report, as this mode promises.
        sample = [(pair, facts) for pair in pairs[:TRAP_SAMPLE] if (facts := self._facts_or_none(pair)) is not None]
        check_binary_trap([pair for pair, _ in sample], [facts for _, facts in sample], self.decoder)
        if self.validate == "header":
            return [(header.height, header.width) for header in check_headers(pairs)], dict(sample)
        return None, dict(sample)

    def audit_command(self) -> str:
        """The ``segkit-data`` command that checks the files as this module does and lists every bad one."""
        root = str(self.root)
        words = ["segkit-data", shlex.quote(root) if root.isprintable() else shown(root),
                 f"--in-channels {self.in_channels}", f"--num-classes {self.num_classes}"]
        words += [f"--mask-type {self.mask_type}"] if self.mask_type != "index" else []
        words += [f"--ignore-index {self.ignore_index}"] if self.ignore_index != 255 else []
        return " ".join(words)

    def _facts_or_none(self, pair: Pair) -> PairFacts | None:
        try:
            return pair_facts(pair, self.in_channels, self.decoder)
        except SegkitError:
            return None

    def _sources(self, has_test: bool) -> dict[str, list[str]]:
        """The folders each set is read from (none: test reuses val). With folds, train and val are
        parts of the pool, which leaves out whatever test reads."""
        if self.folds is None:
            return {"train": ["train"], "val": ["val"], "test": ["test"] if has_test else []}
        pool = ["train", "val"] if has_test else ["train"]
        return {"train": pool, "val": pool, "test": ["test"] if has_test else ["val"]}

    def setup(self, stage: str | None = None) -> None:
        check_root(self.root)
        sources = self._sources((self.root / "test").exists())
        names = ["train", "val"] if stage in (None, "fit") else ["val"]
        names += ["test"] if stage in (None, "test") and sources["test"] else []
        wanted = [name for name in names if name not in self._sets]
        # Pairing of every folder first (listings only), then the slower checks.
        listed = {split: find_pairs(self.root, split) for name in wanted for split in sources[name]}
        checked = {split: self._check(split, pairs) for split, pairs in listed.items()}
        if self.folds is not None and {"train", "val"} & set(wanted):
            self._fold_sets(sources["train"], listed, checked)
        for name in (name for name in wanted if name not in self._sets):
            split_pairs, (sizes, _) = listed[sources[name][0]], checked[sources[name][0]]
            if name == "train" and self.crop_size == "auto":
                self._auto_crop(split_pairs, sizes)
            self._sets[name] = self.make_split(name, split_pairs, sizes)
        if "train" in self._sets:
            self.train_set = self._sets["train"]
        self.val_set = self._sets["val"]
        self.test_set = self._sets.get("test", self.val_set)  # val: until setup("test"), or for good

    def _auto_crop(self, pairs: list[Pair], sizes: Sizes | None) -> None:
        sizes = sizes or [(header.height, header.width) for header in check_headers(pairs[:64])]
        self.crop_size = auto_crop_size(sizes)

    def _fold_sets(self, pool: list[str], listed: dict[str, list[Pair]], checked: dict[str, Checked]) -> None:
        """Fold ``self.fold``'s train and val sets from the pool's folders, stratified by the classes
        each mask holds (from the checks' facts, else read once here)."""
        pairs = [pair for split in pool for pair in listed[split]]
        known = [checked[split][0] for split in pool]
        sizes = None if None in known else [size for part in known for size in part or []]
        facts = {pair: fact for split in pool for pair, fact in checked[split][1].items()}
        unread = [pair for pair in pairs if pair not in facts]
        read = dict(zip(unread, read_present_classes(unread, self._mask_classes, self.ignore_index)))
        classes = [read[pair] if pair in read else
                   frozenset(c for c, count in enumerate(facts[pair].class_counts) if count) for pair in pairs]
        names = [pair[0].relative_to(self.root).as_posix() for pair in pairs]
        where = " + ".join(f"{split}/" for split in pool) + f" of {shown(self.root)}"
        parts = fold_split(names, classes, self.folds, self.fold, where)  # type: ignore[arg-type]
        if self.crop_size == "auto":  # from the whole pool: one crop size for every fold
            self._auto_crop(pairs, sizes)
        for name, part in zip(("train", "val"), parts):
            self._sets[name] = self.make_split(name, [pairs[i] for i in part],
                                               None if sizes is None else [sizes[i] for i in part])

    def _mask_classes(self, pair: Pair) -> np.ndarray:
        """The decoded class mask of ``pair`` (as the loader decodes it)."""
        raw, _ = read_pixels(pair[1], palette_as_indices=self.mask_type != "colors", check_finite=False)
        return self.decoder(raw, pair[1])[0]

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.val_set, batch_size=1)

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.test_set, batch_size=1)
