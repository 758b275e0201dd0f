"""smp models with their encoder's weights: downloaded by smp / timm, or read from a local file
(offline clusters: nothing is downloaded then), and the statistics those weights expect.

``encoder_weights`` is ``None`` (random), a weights name (``imagenet``; ``ssl``, ``swsl``,
``advprop``... where smp has them), or a path:

- smp's own encoders (``resnet18``, ``efficientnet-b0``, ...): the encoder's state dict, e.g. the
  ``model.safetensors`` smp downloads from ``https://huggingface.co/smp-hub/<encoder>.imagenet``
  or ``torch.save(smp_model.encoder.state_dict(), path)``; a ``config.json`` beside it (as that
  repository has) gives the mean and std, else ImageNet's are used;
- timm encoders (``tu-<timm model>``): timm's checkpoint of that model (the file timm downloads
  from ``https://huggingface.co/timm/<model>``), loaded by timm itself.

Input channels other than 3 adapt the first convolution as smp does for pretrained weights (one
channel: the RGB filters summed; more: cycled and scaled by 3 / C).

Example:
    >>> model = build_smp_model("unet", "tu-test_resnet", None, in_channels=4, num_classes=2)
    >>> type(model).__name__, encoder_statistics("tu-test_resnet", None)
    ('Unet', None)
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segkit.errors import SegkitError, shown
from segkit.nets.smp import REQUIRES_PACKAGES, smp_package

__all__ = ["REQUIRES_PACKAGES", "build_smp_model", "encoder_statistics", "weights_file"]

WEIGHTS_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
Statistics = tuple[list[float], list[float]]


def weights_file(encoder_weights: str) -> Path | None:
    """The file ``encoder_weights`` names (a path separator, a weights suffix, or an existing
    file), or ``None`` for a weights name such as ``imagenet``.

    Example:
        >>> weights_file("imagenet"), weights_file("/data/resnet18.safetensors")
        (None, PosixPath('/data/resnet18.safetensors'))
    """
    path = Path(encoder_weights)
    if "/" in encoder_weights or "\\" in encoder_weights or path.suffix in WEIGHTS_SUFFIXES or path.is_file():
        return path
    return None


def _download_source(encoder_name: str, tag: str) -> str:
    """Where smp / timm fetch these weights from, for the offline error."""
    if encoder_name.startswith("tu-"):
        import timm

        cfg = timm.models.get_pretrained_cfg(encoder_name[3:])
        hub, url = (cfg.hf_hub_id, cfg.url) if cfg is not None else (None, None)
        return f"https://huggingface.co/{hub}" if hub else url or f"timm's {encoder_name[3:]} weights"
    settings = smp_package().encoders.encoders[encoder_name]["pretrained_settings"][tag]
    return f"https://huggingface.co/{settings['repo_id']} (model.safetensors and config.json)"


def _check_names(smp: Any, arch: str, encoder_name: str, encoder_weights: str | None, path: Path | None,
                 options: Mapping[str, Any]) -> None:
    """Refuse an unknown architecture, encoder, weights name or architecture option in one line."""
    if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise SegkitError(f"model.arch={arch}: not an smp architecture; choose one of "
                          f"{', '.join(sorted(smp.MODEL_ARCHITECTURES_MAPPING))}")
    timm_encoder = encoder_name.startswith("tu-")
    if not (encoder_name in smp.encoders.encoders or timm_encoder and _is_timm_model(encoder_name[3:])):
        raise SegkitError(f"model.encoder_name={encoder_name}: not an smp encoder; use one of smp's "
                          "(resnet18, resnet34, efficientnet-b0, mobilenet_v2, ...) or tu-<timm model name>")
    accepted = inspect.signature(smp.MODEL_ARCHITECTURES_MAPPING[arch.lower()].__init__).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown and not timm_encoder:  # smp passes the rest to timm encoders only, and ignores it otherwise
        raise SegkitError(f"model.arch_options.{unknown[0]}: not an argument of smp's {arch}; its options: "
                          f"{', '.join(k for k in accepted if k.startswith('decoder'))}")
    if encoder_weights is None or path is not None:
        if path is not None and not path.is_file():
            raise SegkitError(f"model.encoder_weights={shown(path)}: no such file; pass the encoder's weights file, "
                              "imagenet (downloaded) or null (random weights)")
        return
    if timm_encoder and encoder_weights != "imagenet":
        raise SegkitError(f"model.encoder_weights={encoder_weights}: timm encoders take imagenet (timm's default "
                          f"weights of the name; others by tag: model.encoder_name={encoder_name}.<tag>), a file or null")
    if timm_encoder and not _is_timm_model(encoder_name[3:], pretrained=True):
        raise SegkitError(f"model.encoder_weights=imagenet: timm has no pretrained weights for {encoder_name[3:]}; "
                          "pick a timm model that has (timm.list_pretrained()) or use null for random weights")
    tags = [] if timm_encoder else list(smp.encoders.encoders[encoder_name]["pretrained_settings"])
    if not timm_encoder and encoder_weights not in tags:
        raise SegkitError(f"model.encoder_weights={encoder_weights}: {encoder_name} has the weights {', '.join(tags)}; "
                          "or pass a local file (model.encoder_weights=/path/to/file) or null for random weights")


def _is_timm_model(name: str, pretrained: bool = False) -> bool:
    import timm

    return bool(timm.models.is_model_pretrained(name) if pretrained else timm.is_model(name))


def build_smp_model(arch: str, encoder_name: str, encoder_weights: str | None, in_channels: int, num_classes: int,
                    arch_options: Mapping[str, Any] | None = None) -> nn.Module:
    """``smp.create_model(arch, encoder_name, ...)`` with ``num_classes`` logits and the encoder's
    weights from ``encoder_weights`` (see the module's docstring); every bad value is one line."""
    smp = smp_package()
    options = dict(arch_options or {})
    path = None if encoder_weights is None else weights_file(encoder_weights)
    _check_names(smp, arch, encoder_name, encoder_weights, path, options)
    timm_encoder = encoder_name.startswith("tu-")
    weights: str | bool | None = encoder_weights
    if path is not None and timm_encoder:  # timm reads the file and adapts the first convolution itself
        options["pretrained_cfg_overlay"] = {**options.get("pretrained_cfg_overlay", {}), "file": str(path)}
        weights = True
    elif path is not None:
        weights = None  # built with 3 channels, loaded below, then adapted
    elif weights is not None and timm_encoder:
        weights = True  # smp: timm encoders take a bool, the weights' tag is in the name
    channels = 3 if path is not None and not timm_encoder else in_channels
    try:
        model = smp.create_model(arch, encoder_name, encoder_weights=weights, in_channels=channels,
                                 classes=num_classes, **options)
    except OSError as error:  # no network: huggingface_hub's errors and URLError are OSErrors
        if path is not None or encoder_weights is None:
            raise
        raise SegkitError(
            f"model.encoder_weights={encoder_weights}: cannot download the {encoder_name} weights ({type(error).__name__}: "
            f"no network?); download them where there is one from {_download_source(encoder_name, encoder_weights)}, "
            "then pass model.encoder_weights=/path/to/model.safetensors"
        ) from None
    except RuntimeError as error:  # timm's load_state_dict: a file of another model
        if path is None:
            raise
        raise SegkitError(f"model.encoder_weights={shown(path)}: not timm's {encoder_name[3:]} checkpoint "
                          f"({' '.join(str(error).split())[:200]})") from None
    if path is not None and not timm_encoder:
        _load_encoder_file(model.encoder, path, encoder_name)
        model.encoder.set_in_channels(in_channels, pretrained=True)  # smp's adaptation of pretrained weights
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise several types for foreign files
        raise SegkitError(f"model.encoder_weights={shown(path)}: not a readable state dict ({type(error).__name__}); "
                          "pass a .safetensors or torch.save file of the encoder's weights") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SegkitError(f"model.encoder_weights={shown(path)}: holds a {type(state).__name__}, not a state dict")
    return state


def _load_encoder_file(encoder: nn.Module, path: Path, encoder_name: str) -> None:
    """Copy the encoder's tensors from the file: an encoder state dict, or a whole smp model's
    (its ``encoder.`` keys); a missing, extra or misshapen tensor is refused in one line."""
    state = _read_state_dict(path)
    own = encoder.state_dict()
    if not own.keys() & state.keys():
        state = {key.removeprefix("encoder."): value for key, value in state.items() if key.startswith("encoder.")}
    problems = [(key, "missing") for key in own if key not in state]
    problems += [(key, "not in the encoder") for key in state if key not in own]
    problems += [(key, f"{tuple(state[key].shape)}, the encoder has {tuple(own[key].shape)}")
                 for key in own if key in state and state[key].shape != own[key].shape]
    if problems:
        key, problem = problems[0]
        raise SegkitError(f"model.encoder_weights={shown(path)}: not the {encoder_name} encoder's weights ({key}: {problem}"
                          f"{f', and {len(problems) - 1} more' if len(problems) > 1 else ''}); pass smp's file for this "
                          "encoder or torch.save(smp_model.encoder.state_dict(), path)")
    encoder.load_state_dict(state)


def encoder_statistics(encoder_name: str, encoder_weights: str | None) -> Statistics | None:
    """The RGB mean and std the encoder's pretrained weights expect (on [0, 1] pixels), ``None``
    for random weights. smp's :func:`get_preprocessing_params` (timm's pretrained config for
    ``tu-`` encoders); for a file, a ``config.json`` beside it, else ImageNet's statistics."""
    if encoder_weights is None:
        return None
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # timm comes with smp

    path = weights_file(encoder_weights)
    imagenet = (list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD))
    if encoder_name.startswith("tu-") or path is None:
        tag = encoder_weights if path is None else "imagenet"
        try:  # smp reads timm's local config for tu- encoders, else smp-hub's config.json (cached with the weights)
            params = smp_package().encoders.get_preprocessing_params(encoder_name, tag)
        except (ValueError, OSError, KeyError, RuntimeError):
            return imagenet
        return [float(v) for v in params["mean"]], [float(v) for v in params["std"]]
    config = path.with_name("config.json")
    if config.is_file():
        try:
            settings = json.loads(config.read_text())
            return [float(v) for v in settings["mean"]], [float(v) for v in settings["std"]]
        except (ValueError, KeyError, TypeError):
            raise SegkitError(f"{shown(config)}: beside model.encoder_weights but has no mean and std lists; "
                              "remove it (ImageNet's statistics are used then) or fix it") from None
    return imagenet
