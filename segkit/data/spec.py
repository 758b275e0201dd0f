"""What a data module tells the model: the one declared contract between data and model.

A :class:`DataSpec` is made by the data module (:meth:`SegmentationDataModule.spec`), handed to
the model when it is built (``segkit-train``), stored in every checkpoint as plain data
(``checkpoint["segkit_data"]``) and read back from there by ``segkit-eval``, ``segkit-predict``
and ``segkit-export``. Models never look at the data module itself.

Example:
    >>> spec = DataSpec(num_classes=2, class_names=("bg", "cell"), in_channels=1,
    ...                 mean=(0.5,), std=(0.25,), membrane_class=1)
    >>> DataSpec.from_dict(spec.to_dict()) == spec
    True
    >>> spec.model_arguments()
    {'num_classes': 2, 'class_names': ['bg', 'cell'], 'in_channels': 1, 'ignore_index': 255}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from segkit.errors import SegkitError


@dataclass(frozen=True)
class DataSpec:
    """The data's side of the contract.

    Args:
        num_classes: classes (the model's logit channels).
        class_names: one name per class (logged as ``val/IoU/<name>``).
        in_channels: image channels.
        ignore_index: mask value left out of the loss and metrics.
        mean, std: per-channel normalisation applied after ``intensity`` (``None``: unknown).
        intensity: how raw pixels became about [0, 1]
            (:meth:`segkit.data.files.intensity.IntensityScaling.to_dict`); ``None``: 8-bit / 255.
        membrane_class: the class whose ISBI 2012 scores (pixel error, V_rand) are logged;
            ``None``: not logged.
    """

    num_classes: int
    class_names: tuple[str, ...]
    in_channels: int
    ignore_index: int = 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    intensity: Mapping[str, Any] | None = None
    membrane_class: int | None = None

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise SegkitError(f"num_classes={self.num_classes} but {len(self.class_names)} class names "
                              f"{list(self.class_names)[:8]}; give one name per class")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is not None and len(values) != self.in_channels:
                raise SegkitError(f"data.{key}={list(values)}: {len(values)} values for "
                                  f"in_channels={self.in_channels}; give one per channel")

    @classmethod
    def of(cls, num_classes: int, class_names: Sequence[str] | None, in_channels: int, ignore_index: int = 255,
           mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
           intensity: Mapping[str, Any] | None = None, membrane_class: int | None = None) -> DataSpec:
        """A spec from loose values (lists, numpy floats; ``class_names=None``: ``class_<i>``)."""
        names = tuple(str(n) for n in class_names) if class_names is not None else tuple(
            f"class_{i}" for i in range(num_classes))
        return cls(int(num_classes), names, int(in_channels), int(ignore_index),
                   None if mean is None else tuple(float(v) for v in mean),
                   None if std is None else tuple(float(v) for v in std),
                   None if intensity is None else dict(intensity),
                   None if membrane_class is None else int(membrane_class))

    def model_arguments(self) -> dict[str, Any]:
        """The constructor arguments every segkit model takes from the data."""
        return {"num_classes": self.num_classes, "class_names": list(self.class_names),
                "in_channels": self.in_channels, "ignore_index": self.ignore_index}

    def normalization(self) -> dict[str, Any]:
        """``{"mean", "std"[, "intensity"]}`` as plain lists, or ``{}`` when the statistics are
        unknown: what predict and export apply to raw images."""
        if self.mean is None or self.std is None:
            return {}
        stats: dict[str, Any] = {"mean": list(self.mean), "std": list(self.std)}
        if self.intensity is not None:
            stats["intensity"] = dict(self.intensity)
        return stats

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, no tuples), as stored in checkpoints (``weights_only`` loads it)."""
        data = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSpec:
        """The inverse of :meth:`to_dict` (unknown keys refused: a newer segkit's checkpoint)."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise SegkitError(f"segkit_data has unknown entries {sorted(unknown)}: written by a newer segkit?")
        return cls.of(**data)
