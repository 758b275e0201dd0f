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
"""

from __future__ import annotations

import importlib
import io
from pathlib import Path
from typing import Any

import torch

from segkit.errors import SegkitError
from segkit.models.base import SegmentationModule


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


def load_module(ckpt_path: str) -> SegmentationModule:
    """Rebuild the LightningModule that wrote ``ckpt_path`` (a segkit checkpoint) on the CPU."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise SegkitError(f"ckpt_path={ckpt_path}: no such file; pass a .ckpt written by segkit-train")
    try:
        # weights_only: plain tensors and containers only, so no code from the file runs.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt/foreign files
        raise SegkitError(
            f"ckpt_path={ckpt_path}: not a loadable checkpoint ({type(error).__name__}); "
            "pass a .ckpt written by segkit-train"
        ) from None
    target = checkpoint.get("segkit_module") if isinstance(checkpoint, dict) else None
    module_name, _, class_name = (target or "").partition(":")
    if not module_name.startswith("segkit.models"):
        raise SegkitError(f"ckpt_path={ckpt_path}: not a segkit model checkpoint (no 'segkit_module' entry); use one from <run dir>/checkpoints/")
    source: Path | io.BytesIO = path
    if upgrade_hyperparameters(checkpoint.get("hyper_parameters", {})):
        source = io.BytesIO()
        torch.save(checkpoint, source)
        source.seek(0)
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        module = cls.load_from_checkpoint(source, map_location="cpu", weights_only=True)
    except (AttributeError, ImportError, RuntimeError, TypeError, KeyError) as error:
        raise SegkitError(f"ckpt_path={ckpt_path}: incompatible with this segkit version ({type(error).__name__}: {str(error).splitlines()[0]})") from None
    return module
