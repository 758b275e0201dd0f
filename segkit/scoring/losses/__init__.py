"""Losses, built from the ``model.loss`` config node (plain data, stored in checkpoints).

``{"name": NAME, **options}`` with NAME one of :data:`LOSSES` (``conf/model/loss/`` has one
file each), a dotted path ``package.module.Class`` to your own ``nn.Module`` (it receives
``num_classes`` and ``ignore_index`` if its ``__init__`` takes them), or ``sum``:
``{"name": "sum", "terms": [{"name": ..., "weight": w, ...}, ...]}``.

Example:
    >>> loss = build_loss({"name": "sum", "terms": [{"name": "cross_entropy"}, {"name": "dice", "weight": 0.5}]},
    ...                   num_classes=3, ignore_index=255)
    >>> type(loss).__name__, [type(t).__name__ for t in loss.losses], loss.weights
    ('WeightedSum', ['CrossEntropyLoss', 'DiceLoss'], [1.0, 0.5])
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from segkit.errors import SegkitError
from segkit.trust import trusted_class
from segkit.scoring.losses.pixel import (
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    WeightedSum,
)
from segkit.scoring.losses.weight_map import (
    WeightMapCrossEntropy,
    class_weight_map,
    unet_weight_map,
)

LOSSES: dict[str, type[nn.Module]] = {
    "cross_entropy": CrossEntropyLoss,
    "weight_map": WeightMapCrossEntropy,
    "dice": DiceLoss,
    "focal": FocalLoss,
}


def _loss_class(name: str) -> type[nn.Module]:
    if name in LOSSES:
        return LOSSES[name]
    module_name, _, class_name = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), class_name) if module_name else None
    except ImportError:
        found = None
    if not (inspect.isclass(found) and issubclass(found, nn.Module)):
        raise SegkitError(f"model.loss.name={name}: choose one of {', '.join([*LOSSES, 'sum'])}, "
                          "or give a dotted path to an nn.Module class")
    return found


def check_stored_loss(spec: Mapping[str, Any] | None, source: str) -> None:
    """Refuse a loss spec read from a file (a checkpoint) whose names are neither segkit's
    losses nor segkit classes: building it would import what it names (:mod:`segkit.trust`)."""
    if not spec:
        return
    name = str(spec.get("name"))
    if name == "sum":
        for term in spec.get("terms") or []:
            check_stored_loss(term, source)
    elif name not in LOSSES and not issubclass(trusted_class(name, f"{source} (model.loss.name)"), nn.Module):
        raise SegkitError(f"{source}: model.loss.name={name} is not a loss (an nn.Module)")


def build_loss(spec: Mapping[str, Any] | None, num_classes: int, ignore_index: int) -> nn.Module:
    """The loss that ``spec`` describes (``None``: cross-entropy), for ``num_classes`` classes."""
    options = dict(spec or {"name": "cross_entropy"})
    name = options.pop("name", None)
    if name is None:
        raise SegkitError(f"model.loss={dict(spec or {})}: needs a name, e.g. model/loss=cross_entropy")
    if name == "sum":
        terms = [dict(term) for term in options.pop("terms", [])]
        if options or not terms:
            raise SegkitError("model.loss: a sum takes only terms: [{name: ..., weight: ...}, ...]")
        weights = [term.pop("weight", 1.0) for term in terms]
        return WeightedSum([build_loss(term, num_classes, ignore_index) for term in terms], weights)
    cls = _loss_class(str(name))
    accepted = inspect.signature(cls).parameters
    given = {key: value for key, value in (("num_classes", num_classes), ("ignore_index", ignore_index))
             if key in accepted}
    try:
        return cls(**given, **options)
    except (TypeError, ValueError) as error:
        raise SegkitError(f"model.loss (name={name}): {error}; to switch losses, pick a file of "
                          "conf/model/loss/ (model/loss=NAME) rather than setting model.loss.name") from None


__all__ = [
    "LOSSES", "CrossEntropyLoss", "DiceLoss", "FocalLoss", "WeightMapCrossEntropy", "WeightedSum", "build_loss",
    "check_stored_loss", "class_weight_map", "unet_weight_map",
]
