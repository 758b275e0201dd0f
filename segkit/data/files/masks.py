"""Masks as annotators write them (``data.mask_type``), decoded to class indices.

=============  ==================================================================
``index``      values are class indices ``0..K-1``, or ``ignore_index`` (ignored)
``binary``     0 is background, any other value (1, 255, ...) is class 1
``instances``  0 is background, each other value one object; classes are
               background / object, and the pixels where two objects touch are
               background, so touching objects stay apart (as the U-Net paper's
               labels); the identities go on to the weight-map loss
``colors``     RGB colours mapped to classes through a palette (one colour a class)
=============  ==================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from segkit.errors import SegkitError, shown

MASK_TYPES = ("index", "binary", "instances", "colors")
# Raw values a mask's facts keep (enough to see a 0/255 trap or a label range).
MAX_RAW_VALUES = 64


def instance_borders(instances: np.ndarray) -> np.ndarray:
    """``True`` on object pixels whose 3 x 3 neighbourhood holds another object's id.

    Example:
        >>> ids = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]])
        >>> instance_borders(ids).astype(int).tolist()
        [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    objects = instances > 0
    highest = ndimage.maximum_filter(instances, size=3, mode="nearest")
    # Background reads as one more than the largest id (int64's maximum overflows in scipy's filter).
    lowest = ndimage.minimum_filter(np.where(objects, instances, instances.max() + 1), size=3, mode="nearest")
    return objects & ((highest != instances) | (lowest != instances))


def _one_channel(raw: np.ndarray, path: Path, mask_type: str) -> np.ndarray:
    if raw.shape[-1] == 1:
        return raw[..., 0]
    if raw.shape[-1] in (3, 4) and (raw[..., 0] == raw[..., 1]).all() and (raw[..., 0] == raw[..., 2]).all():
        return raw[..., 0]  # grey values saved as RGB(A)
    raise SegkitError(
        f"{shown(path)}: mask has {raw.shape[-1]} channels of different colours, but data.mask_type={mask_type} "
        "reads one channel of values; set data.mask_type=colors (with a palette) or save class indices"
    )


def _color_code(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


@dataclass
class MaskDecoder:
    """Decodes one raw mask ``(H, W, C)`` into ``(classes int64 (H, W), instances or None)``.

    ``num_classes=None`` (the audit) skips the range check of ``index`` masks.

    Example:
        >>> decode = MaskDecoder("binary", num_classes=2)
        >>> decode(np.array([[[0], [255]]], np.uint8), Path("m.png"))[0].tolist()
        [[0, 1]]
    """

    mask_type: str = "index"
    num_classes: int | None = None
    ignore_index: int = 255
    palette: Sequence[Sequence[int]] | None = None
    ignore_color: Sequence[int] | None = None
    _codes: np.ndarray = field(init=False, repr=False)
    _classes: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mask_type not in MASK_TYPES:
            raise SegkitError(f"data.mask_type={self.mask_type!r}: use one of {', '.join(MASK_TYPES)}")
        if self.mask_type in ("binary", "instances") and self.num_classes not in (None, 2):
            raise SegkitError(
                f"data.mask_type={self.mask_type} has 2 classes (background, object) but "
                f"data.num_classes={self.num_classes}; set data.num_classes=2"
            )
        if self.mask_type == "colors":
            if not self.palette:
                raise SegkitError(
                    "data.mask_type=colors needs a palette: data.palette=[[R,G,B], ...] (one colour a class) "
                    "or 'name R G B' lines in <root>/classes.txt"
                )
            if self.num_classes is not None and len(self.palette) != self.num_classes:
                raise SegkitError(
                    f"data.palette has {len(self.palette)} colours but data.num_classes={self.num_classes}; "
                    "give one colour per class"
                )
            colors = [tuple(int(v) for v in c) for c in self.palette]
            classes = list(range(len(colors)))
            if self.ignore_color is not None:
                colors.append(tuple(int(v) for v in self.ignore_color))
                classes.append(self.ignore_index)
            codes = _color_code(np.array(colors, np.int64))
            order = np.argsort(codes)
            self._codes, self._classes = codes[order], np.array(classes, np.int64)[order]

    @property
    def classes(self) -> int | None:
        """Classes the decoded masks have (``None``: unknown, an ``index`` audit)."""
        if self.mask_type in ("binary", "instances"):
            return 2
        if self.mask_type == "colors":
            return len(self.palette or ())
        return self.num_classes

    def __call__(self, raw: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        if self.mask_type == "colors":
            return self._colors(raw, path), None
        values = _one_channel(raw, path, self.mask_type)
        if np.issubdtype(values.dtype, np.floating):
            self._check_float(values, path)
        values = values.astype(np.int64)
        if self.mask_type == "binary":
            return (values != 0).astype(np.int64), None
        if self.mask_type == "instances":
            if (values < 0).any():
                raise SegkitError(
                    f"{shown(path)}: negative instance id {int(values.min())}; 0 is background, ids are > 0")
            classes = (values > 0).astype(np.int64)
            classes[instance_borders(values)] = 0
            return classes, values
        self._check_indices(values, path)
        return values, None

    def _check_float(self, values: np.ndarray, path: Path) -> None:
        """Refuse NaN, infinite and fractional values of a float mask, naming one of them."""
        # Only index masks map a raw value to the ignore index; binary/instances read 255 as an object.
        ignored = f" (e.g. with {self.ignore_index}, ignored)" if self.mask_type == "index" else ""
        fix = f"masks must hold integer labels: replace them in the file{ignored}"
        if not np.isfinite(values).all():
            value = "NaN" if np.isnan(values).any() else ("inf" if np.isposinf(values).any() else "-inf")
            count = int((np.isnan(values) if value == "NaN" else values == float(value)).sum())
            raise SegkitError(f"{shown(path)}: mask holds {value} at {count:,} pixel(s); {fix}")
        fractional = values != np.round(values)
        if fractional.any():
            example = float(values[fractional][0])
            raise SegkitError(
                f"{shown(path)}: mask holds fractional values (e.g. {example:g}, {int(fractional.sum()):,} "
                f"pixel(s)); {fix}"
            )

    def _check_indices(self, values: np.ndarray, path: Path) -> None:
        limit = self.num_classes
        too_large = (values >= limit) & (values != self.ignore_index) if limit is not None else False
        bad = values[(values < 0) | too_large]
        if not bad.size:
            return
        found = np.unique(bad).tolist()
        listed = ", ".join(map(str, found[:3])) + (", ..." if len(found) > 3 else "")
        classes = f"0..{limit - 1}" if limit is not None else "0 or more"
        more = f"set data.num_classes={max(found) + 1} if it is a class, or " if limit is not None and max(found) >= limit else ""
        raise SegkitError(
            f"{shown(path)}: mask value {listed} is not a class ({classes}) nor "
            f"data.ignore_index={self.ignore_index}; "
            f"{more}map the value to {self.ignore_index} (ignored); instance labels: data.mask_type=instances"
        )

    def _colors(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.shape[-1] not in (3, 4):
            raise SegkitError(
                f"{shown(path)}: data.mask_type=colors needs RGB masks, this one has {raw.shape[-1]} channel(s)")
        codes = _color_code(raw[..., :3])
        where = np.clip(np.searchsorted(self._codes, codes), 0, len(self._codes) - 1)
        known = self._codes[where] == codes
        if not known.all():
            y, x = (int(v[0]) for v in np.nonzero(~known))
            r, g, b = (int(v) for v in raw[y, x, :3])
            raise SegkitError(
                f"{shown(path)}: colour ({r}, {g}, {b}) (#{r:02x}{g:02x}{b:02x}) at x={x}, y={y} is not in the "
                "palette; add it to data.palette (or classes.txt), or set data.ignore_color to ignore it"
            )
        return self._classes[where]


def raw_values(raw: np.ndarray) -> list[int]:
    """Up to :data:`MAX_RAW_VALUES` distinct values of a one-channel integer mask, ascending."""
    if raw.shape[-1] != 1 or not np.issubdtype(raw.dtype, np.integer):
        return []
    return np.unique(raw)[:MAX_RAW_VALUES].astype(np.int64).tolist()
