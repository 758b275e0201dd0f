"""``segkit-predict``: masks for your own images, of any size, from a segkit checkpoint.

Examples::

    segkit-predict ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt input=photos/ output=masks/
    segkit-predict ckpt_path=... input=big.tif output=out/ inference.mode=tile inference.window=1024
    segkit-predict ckpt_path=... input=img.png output=out/ save.overlay=true save.probabilities=true
    segkit-predict ckpt_path='[fold0.ckpt,fold1.ckpt]' input=photos/ output=masks/   # an ensemble

Several checkpoints (a list, or a glob pattern such as
``'logs/train/multiruns/<time>/*/checkpoints/last.ckpt'``) predict as one model: the mean of their
softmax probabilities, each model fed the image normalised as its own training data was
(:mod:`segkit.inference.ensemble`).

For every image ``<stem>.<ext>``: the class indices at the input's size, ``<stem>.png`` (a palette
PNG, for PNG/JPEG/BMP inputs), ``<stem>.tif`` (a tiled label OME-TIFF, for TIFF inputs) or
``<stem>.zarr`` (OME-Zarr, for OME-Zarr inputs) as ``save.format=auto`` chooses; TIFF and OME-Zarr
inputs are read window by window and stacks plane by plane (:mod:`segkit.cli.predict_writing`).
Optionally ``<stem>_instances.tif``, ``<stem>_overlay.png`` and ``<stem>_probs.npy`` (float16
``([planes...,] C, H, W)``). Never writes into the input's directory; refuses two outputs on one
path (``a.png`` and ``a.jpg``; ``a.png``'s overlay and ``a_overlay.png``'s mask) and, unless
``overwrite=true``, existing outputs: all checked for every image, with ``device=``, before the
model is loaded.
"""

from __future__ import annotations

import logging
import sys
from functools import partial
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from segkit.cli.predict_outputs import check_output, input_images, is_lazy, output_files, output_format
from segkit.cli.predict_writing import write_outputs
from segkit.cli.argv import hoist_multirun_flag
from segkit.cli.common import training_intensity, training_normalization
from segkit.cli.errors import SegkitError, exit_on_user_error
from segkit.config_dir import config_dir
from segkit.data.files.lazy import LazyImage, open_planes
from segkit.data.files.readers import match_channels, non_finite, read_array
from segkit.errors import shown
from segkit.inference.ensemble import Ensemble, Normalization, valid_geometry
from segkit.inference.predict import InferenceConfig, predict_bands
from segkit.malloc import fix_mmap_threshold
from segkit.models.base import SegmentationModule
from segkit.models.loading import check_ensemble, checkpoint_paths, load_module

__all__ = ["main", "normalization", "predict", "resolve_device", "training_intensity"]

log = logging.getLogger("segkit.predict")
# Images up to 32k x 32k: PIL's decompression-bomb guard (89 Mpx) would refuse large slides.
Image.MAX_IMAGE_PIXELS = 32768 * 32768


def resolve_device(spec: object) -> torch.device:
    """The device of ``device=``: auto (CUDA if available, else the CPU) or one torch knows and
    this machine has; refused before the model is loaded."""
    text = str(spec)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        choices = "auto, cpu, cuda, cuda:N or mps"
        raise SegkitError(f"device={shown(text)}: torch knows no such device; use {choices}") from None
    problem = device_problem(device)
    if problem is not None:
        raise SegkitError(f"device={shown(text)}: {problem}; use auto or cpu")
    return device


def device_problem(device: torch.device) -> str | None:
    """Why this machine cannot predict on ``device``, or ``None``."""
    if device.type == "cpu":
        return None
    backend = torch.backends.mps if device.type == "mps" else getattr(torch, device.type, None)
    if not callable(getattr(backend, "is_available", None)):
        return f"segkit-predict does not run on {device.type} devices"
    if not backend.is_available():  # type: ignore[union-attr]
        return f"{device.type.upper()} is not available on this machine"
    count = int(getattr(backend, "device_count", lambda: 1)())
    if device.index is not None and device.index >= count:
        return f"this machine has {count} {device.type} device(s), {device.type}:0 to {device.type}:{count - 1}"
    return None


def normalization(cfg: DictConfig, module: SegmentationModule, ckpt_path: str | None = None) -> tuple[list[float], list[float]]:
    """``mean``/``std``: given, else those stored in the checkpoint (``ckpt_path``, default
    ``cfg.ckpt_path``), else the training run's config (``<run>/.hydra/config.yaml``)."""
    ckpt_path = str(cfg.ckpt_path) if ckpt_path is None else ckpt_path
    given = {key: cfg.get(key) for key in ("mean", "std") if cfg.get(key) is not None}
    stats = {**training_normalization(ckpt_path), **module.input_normalization(), **given}
    if stats.get("mean") is None or stats.get("std") is None:
        raise SegkitError(
            f"ckpt_path={ckpt_path}: the input normalisation is unknown (not in the checkpoint, no "
            "../../.hydra/config.yaml beside it); pass mean=[...] std=[...] as in training"
        )
    channels = module.hparams.get("in_channels", len(stats["mean"]))
    if len(stats["mean"]) != channels:
        raise SegkitError(f"mean={list(stats['mean'])} has {len(stats['mean'])} values; the model takes {channels} channels")
    return [float(v) for v in stats["mean"]], [float(v) for v in stats["std"]]


def read_image(path: Path, channels: int) -> list[np.ndarray | LazyImage]:
    """The 2-D planes of ``path``, each ``(H, W, channels)`` in the file's own dtype (16-bit
    TIFFs included): a TIFF's or OME-Zarr's read lazily, window by window, one plane per Z/T
    index of a stack; other formats decoded whole."""
    if not is_lazy(path):
        return [match_channels(read_array(path), channels, path)]
    planes = open_planes(path, in_channels=channels)
    match_channels(planes[0][0:1, 0:1], channels, path)  # a channel mismatch is refused now, not mid-slide
    problem = non_finite(planes[0].sample()[:, None, :], path)  # NaN or inf (all of it, up to 4 Mpx)
    if problem is not None:
        raise problem
    for plane in planes:
        plane.channels = channels
    return planes


def ensemble_model(cfg: DictConfig, paths: list[str], config: InferenceConfig,
                   device: torch.device) -> tuple[Ensemble, torch.nn.Module | None, int]:
    """The models of ``paths`` as one :class:`Ensemble`, each with its own normalisation and
    intensity scaling; the net that sets the window geometry; the number of classes."""
    modules = [load_module(path).to(device).eval() for path in paths]
    normalizations = [Normalization.of(*normalization(cfg, module, path), training_intensity(module, path))
                      for module, path in zip(modules, paths)]
    nets = [getattr(module, "net", None) for module in modules]
    geometries = {valid_geometry(net) for net in nets}
    # As for one model (predict below): valid-convolution nets of one geometry tile on their grid
    # as they are; otherwise the modules, and the window geometry of the nets if they share one.
    if config.mode == "tile" and len(geometries) == 1 and None not in geometries and config.scales == (1.0,):
        ensemble = Ensemble(nets, normalizations)  # type: ignore[arg-type]
        return ensemble, ensemble, modules[0].num_classes
    return Ensemble(modules, normalizations), nets[0] if len(geometries) == 1 else None, modules[0].num_classes


def predict(cfg: DictConfig) -> list[Path]:
    """Predict every input image; return the mask files written."""
    device = resolve_device(cfg.device)
    images = input_images(cfg.input)
    paths = checkpoint_paths(cfg.ckpt_path)
    if len(paths) > 1:
        check_ensemble(paths)
    output = check_output(images, cfg)
    config = InferenceConfig(**cfg.inference)
    model: torch.nn.Module
    if len(paths) == 1:
        module = load_module(paths[0])
        module.to(device).eval()
        mean, std = normalization(cfg, module, paths[0])
        intensity = training_intensity(module, paths[0])
        net = getattr(module, "net", None)
        # A valid-convolution net's tiles get their context here, on the image's pooling grid; its
        # module would pad each window again, off that grid. Rescaled TTA views need logits of the
        # input's size: the module's (which pads each rescaled window itself).
        valid_tiles = config.mode == "tile" and getattr(net, "context", None) is not None
        model = net if valid_tiles and config.scales == (1.0,) else module  # type: ignore[assignment]
        num_classes = module.num_classes
    else:
        ensemble, net, num_classes = ensemble_model(cfg, paths, config, device)
        model, first = ensemble, ensemble.normalizations[0]
        assert first is not None
        # Reading (channels) and the overlay use the first model's; each model gets its own input.
        mean, std, intensity = list(first.mean), list(first.std), first.intensity
    predictor = partial(predict_bands, model, mean=mean, std=std, config=config, net=net, device=device,
                        intensity=intensity)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not cfg.progress_bar) as progress:
        for path in images:
            planes = read_image(path, len(mean))
            files = output_files(path, output, cfg)
            task = progress.add_task(path.name, total=None)
            try:
                write_outputs(path, planes, files, output_format(path, cfg), num_classes,
                              partial(predictor, on_window=lambda task=task: progress.advance(task)), intensity)
            finally:
                for plane in planes:
                    if isinstance(plane, LazyImage):
                        plane.close()
            progress.update(task, total=progress.tasks[task].completed)
            written.append(files["mask"])
    log.info("wrote %d mask(s) to %s", len(written), output)
    return written


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
@exit_on_user_error("segkit-predict")
def hydra_main(cfg: DictConfig) -> None:
    predict(cfg)


def main() -> None:
    """Console entry point ``segkit-predict``."""
    fix_mmap_threshold()  # peak memory on slides: see segkit/malloc.py
    sys.argv = hoist_multirun_flag(sys.argv)
    hydra_main()


if __name__ == "__main__":
    main()
