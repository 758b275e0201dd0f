"""Rebuild the module that wrote a segkit checkpoint: what segkit-eval, -predict and -export load.

Example:
    >>> import tempfile, lightning as L
    >>> from segkit.models import UNetModule
    >>> trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
    ...                     enable_model_summary=False)
    >>> trainer.strategy.connect(UNetModule(num_classes=2, depth=2, base_width=4))
    >>> path = Path(tempfile.mkdtemp()) / "unet.ckpt"
    >>> trainer.save_checkpoint(path)
    >>> type(load_module(str(path))).__name__
    'UNetModule'

Several checkpoints (an ensemble: ``ckpt_path=[a.ckpt,b.ckpt]`` or a glob pattern) are named by
:func:`checkpoint_paths` and checked against each other by :func:`check_ensemble`.
"""

from __future__ import annotations

import glob
import io
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from segkit.errors import SegkitError, shown
from segkit.models.base import SegmentationModule
from segkit.scoring.losses import check_stored_loss
from segkit.trust import trusted_class


def upgrade_hyperparameters(hparams: dict[str, Any]) -> bool:
    """Rewrite, in place, the hyperparameters of checkpoints written before ``model.loss``
    (``loss_reduction`` and ``weight_map``) as a loss spec; ``True`` if anything changed.

    Example:
        >>> hparams = {"num_classes": 2, "loss_reduction": "sum", "weight_map": None}
        >>> upgrade_hyperparameters(hparams), hparams
        (True, {'num_classes': 2, 'loss': {'name': 'cross_entropy', 'reduction': 'sum'}})
    """
    if "loss_reduction" not in hparams and "weight_map" not in hparams:
        return False
    reduction = hparams.pop("loss_reduction", "mean")
    weight_map = hparams.pop("weight_map", None)
    name = "weight_map" if weight_map else "cross_entropy"
    hparams["loss"] = {"name": name, **dict(weight_map or {}), "reduction": reduction}
    return True


def read_checkpoint(path: Path, key: str = "ckpt_path") -> dict[str, Any]:
    """The contents of a checkpoint written by ``segkit-train``, as plain data.

    Refuses, in one line naming ``key=path``, a missing, empty, damaged or foreign file (a bare
    ``torch.save`` of weights has no ``segkit_module``), and one holding objects other than
    plain data (``weights_only``: nothing stored in a checkpoint is executed).
    """
    where = f"{key}={shown(path)}"
    if not path.is_file():
        raise SegkitError(f"{where}: no such file; pass a .ckpt written by segkit-train")
    if path.stat().st_size == 0:
        raise SegkitError(f"{where}: the file is empty (0 bytes); pass a .ckpt written by segkit-train")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise SegkitError(
            f"{where}: refused, the file holds objects other than plain data "
            f"({str(error).splitlines()[0][:120]}); use checkpoints written by segkit-train"
        ) from None
    except Exception as error:  # torch raises several types for damaged or foreign files
        raise SegkitError(
            f"{where}: not a loadable checkpoint ({type(error).__name__}); pass a .ckpt written by segkit-train"
        ) from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "segkit_module"} <= checkpoint.keys():
        raise SegkitError(
            f"{where}: not a segkit-train checkpoint (no 'state_dict' and 'segkit_module' entries: a bare "
            "torch.save of weights?); use one from <run dir>/checkpoints/"
        )
    return checkpoint


def checkpoint_module_class(checkpoint: dict[str, Any], source: str) -> type[SegmentationModule]:
    """The SegmentationModule class a checkpoint names, checked before anything is imported."""
    cls = trusted_class(str(checkpoint["segkit_module"]), f"{source} (segkit_module)")
    if not issubclass(cls, SegmentationModule):
        raise SegkitError(f"{source}: segkit_module={checkpoint['segkit_module']} is not a segkit model module")
    hparams = checkpoint.get("hyper_parameters") or {}
    check_stored_loss(hparams.get("loss"), source)
    names, count = hparams.get("class_names"), hparams.get("num_classes")
    if names is not None and (not isinstance(count, int) or len(names) != count):
        raise SegkitError(
            f"{source}: num_classes={count} but {len(names)} class names {list(names)[:8]}; the checkpoint "
            "is inconsistent (edited?), use one written by segkit-train"
        )
    return cls


def load_module(ckpt_path: str) -> SegmentationModule:
    """Rebuild the LightningModule that wrote ``ckpt_path`` (a segkit checkpoint) on the CPU."""
    path = Path(ckpt_path)
    checkpoint = read_checkpoint(path)
    cls = checkpoint_module_class(checkpoint, f"ckpt_path={ckpt_path}")
    source: Path | io.BytesIO = path
    if upgrade_hyperparameters(checkpoint.get("hyper_parameters", {})):
        source = io.BytesIO()
        torch.save(checkpoint, source)
        source.seek(0)
    try:
        module = cls.load_from_checkpoint(source, map_location="cpu", weights_only=True)
    except (AttributeError, ImportError, RuntimeError, TypeError, KeyError) as error:
        raise SegkitError(f"ckpt_path={ckpt_path}: incompatible with this segkit version ({type(error).__name__}: {str(error).splitlines()[0]})") from None
    return module


def _natural(text: str) -> list[Any]:
    """Sort key putting ``fold2`` before ``fold10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def checkpoint_paths(value: object) -> list[str]:
    """The checkpoints ``ckpt_path`` names: one path, a list of paths (an ensemble; repeats
    kept), or a glob pattern (``runs/*/checkpoints/last.ckpt``: every match, ``2`` before ``10``)
    for a path that does not exist as typed. A pattern matching nothing is refused.

    Example:
        >>> checkpoint_paths("a.ckpt"), checkpoint_paths(["fold0.ckpt", "fold1.ckpt"])
        (['a.ckpt'], ['fold0.ckpt', 'fold1.ckpt'])
    """
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if not items:
        raise SegkitError("ckpt_path=[]: give a checkpoint, a list of them [a.ckpt,b.ckpt] or a glob pattern")
    paths: list[str] = []
    for item in items:
        if not isinstance(item, (str, Path)):
            raise SegkitError(f"ckpt_path={shown(item)}: not a path; give checkpoint paths (.ckpt files)")
        text = str(item)
        if not any(char in text for char in "*?[") or Path(text).exists():
            paths.append(text)
            continue
        matches = sorted(glob.glob(text, recursive=True), key=_natural)
        if not matches:
            raise SegkitError(f"ckpt_path={shown(text)}: no file matches this pattern; check the path, "
                              "e.g. ckpt_path='logs/train/multiruns/<time>/*/checkpoints/last.ckpt'")
        paths += matches
    return paths


def _task_of(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What the models of an ensemble must share: classes, their names and input channels."""
    hparams, spec = checkpoint.get("hyper_parameters") or {}, checkpoint.get("segkit_data") or {}
    task = {key: hparams[key] if hparams.get(key) is not None else spec.get(key)
            for key in ("num_classes", "class_names", "in_channels")}
    task["class_names"] = None if task["class_names"] is None else list(task["class_names"])
    return task


def check_ensemble(paths: Sequence[str], checkpoints: Sequence[dict[str, Any]] | None = None) -> None:
    """Refuse, in one line naming both checkpoints and their values, models that disagree on
    ``num_classes``, ``class_names`` (where both store them) or ``in_channels``: their
    probabilities could not be averaged. ``checkpoints``: the files' contents, if read already."""
    if checkpoints is None:
        checkpoints = [read_checkpoint(Path(path)) for path in paths]
    first = _task_of(checkpoints[0])
    for path, checkpoint in zip(paths[1:], checkpoints[1:]):
        other = _task_of(checkpoint)
        for key, value in first.items():
            if value is not None and other[key] is not None and value != other[key]:
                raise SegkitError(
                    f"ckpt_path: {shown(paths[0])} has {key}={value} but {shown(path)} has {key}={other[key]}; the "
                    "models of an ensemble must share their classes and input channels (their probabilities are averaged)"
                )
