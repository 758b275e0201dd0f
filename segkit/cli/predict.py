"""``segkit-predict``: masks for your own images, of any size, from a segkit checkpoint.

Examples::

    segkit-predict ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt input=photos/ output=masks/
    segkit-predict ckpt_path=... input=big.tif output=out/ inference.mode=tile inference.window=1024
    segkit-predict ckpt_path=... input=img.png output=out/ save.overlay=true save.probabilities=true

For every image ``<stem>.<ext>``: ``<stem>.png`` (class indices as a palette PNG, the input's
size), optionally ``<stem>_overlay.png`` and ``<stem>_probs.npy`` (float16 ``(C, H, W)``).
Never writes into the input's directory; refuses two outputs on one path (``a.png`` and ``a.tif``;
``a.png``'s overlay and ``a_overlay.png``'s mask) and, unless ``overwrite=true``, existing outputs:
all checked for every image, with ``device=``, before the model is loaded.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from numpy.lib.format import open_memmap
from omegaconf import DictConfig
from PIL import Image
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from segkit.atomic import atomic_path
from segkit.cli.argv import hoist_multirun_flag
from segkit.cli.common import training_intensity_config, training_normalization
from segkit.cli.errors import SegkitError, exit_on_user_error
from segkit.config_dir import config_dir
from segkit.errors import file_in_the_way, shown
from segkit.data.files.intensity import IntensityScaling
from segkit.data.files.readers import match_channels, read_array
from segkit.inference.predict import InferenceConfig, predict_image
from segkit.models.base import SegmentationModule
from segkit.models.loading import load_module
from segkit.palette import colorize, voc_palette

log = logging.getLogger("segkit.predict")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# Images up to 32k x 32k: PIL's decompression-bomb guard (89 Mpx) would refuse large slides.
Image.MAX_IMAGE_PIXELS = 32768 * 32768


def input_images(path: str) -> list[Path]:
    """The image files of ``path`` (a file, or a directory's images sorted by name)."""
    source = Path(path)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise SegkitError(f"input={shown(path)}: no such file or directory; pass an image file or a folder of images")
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise SegkitError(f"input={shown(path)}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files




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


def output_files(image: Path, output: Path, cfg: DictConfig) -> dict[str, Path]:
    files = {"mask": output / f"{image.stem}.png"}
    if cfg.save.overlay:
        files["overlay"] = output / f"{image.stem}_overlay.png"
    if cfg.save.probabilities:
        files["probabilities"] = output / f"{image.stem}_probs.npy"
    return files


def planned_outputs(images: list[Path], output: Path, cfg: DictConfig) -> dict[Path, Path]:
    """Every file this run would write, with the image it comes from; refused if two share a path."""
    owners: dict[Path, tuple[Path, str]] = {}
    for image in images:
        for kind, path in output_files(image, output, cfg).items():
            if path in owners:
                first, first_kind = owners[path]
                raise SegkitError(
                    f"input={shown(cfg.input)}: {shown(first)}'s {first_kind} and {shown(image)}'s {kind} would "
                    f"both be written to {shown(path)}; rename one of the images or predict them into separate "
                    "output folders"
                )
            owners[path] = (image, kind)
    return {path: image for path, (image, _) in owners.items()}


def check_output(images: list[Path], cfg: DictConfig) -> Path:
    """The output folder (not created yet), after refusing a file in its place or its way, the
    input's folder, two outputs on one path and outputs that exist (unless ``overwrite``)."""
    given, where = Path(cfg.output), f"output={shown(cfg.output)}"
    if given.exists() and not given.is_dir():
        raise SegkitError(f"{where} is a file, not a folder; pass a folder for the masks (created if missing)")
    blocker = file_in_the_way(given)
    if blocker is not None:
        raise SegkitError(f"{where}: {shown(blocker)} is a file, not a folder; choose another output=")
    output = given.resolve()
    for image in images:
        if output == image.parent.resolve() or image.parent.resolve() in output.parents:
            raise SegkitError(f"{where} is inside the input's folder {shown(image.parent)}; choose another folder")
    for path, image in planned_outputs(images, output, cfg).items():
        if path.exists() and not path.is_file():
            raise SegkitError(f"{shown(path)} is a folder, where {shown(image.name)}'s output would go; "
                              "move it or choose another output=")
        if path.exists() and not cfg.overwrite:
            raise SegkitError(f"{shown(path)} exists; pass overwrite=true to replace it, or another output=")
    return output


def normalization(cfg: DictConfig, module: SegmentationModule) -> tuple[list[float], list[float]]:
    """``mean``/``std``: given, else those stored in the checkpoint, else the training run's
    config (``<run>/.hydra/config.yaml``)."""
    given = {key: cfg.get(key) for key in ("mean", "std") if cfg.get(key) is not None}
    stats = {**training_normalization(cfg.ckpt_path), **module.input_normalization(), **given}
    if stats.get("mean") is None or stats.get("std") is None:
        raise SegkitError(
            f"ckpt_path={cfg.ckpt_path}: the input normalisation is unknown (not in the checkpoint, no "
            "../../.hydra/config.yaml beside it); pass mean=[...] std=[...] as in training"
        )
    channels = module.hparams.get("in_channels", len(stats["mean"]))
    if len(stats["mean"]) != channels:
        raise SegkitError(f"mean={list(stats['mean'])} has {len(stats['mean'])} values; the model takes {channels} channels")
    return [float(v) for v in stats["mean"]], [float(v) for v in stats["std"]]


def read_image(path: Path, channels: int) -> np.ndarray:
    """``(H, W, channels)`` pixels of ``path`` in the file's own dtype (16-bit TIFFs included)."""
    return match_channels(read_array(path), channels, path)


def training_intensity(module: SegmentationModule, ckpt_path: str) -> IntensityScaling:
    """The intensity scaling training applied: stored in the checkpoint, else the run's
    ``data.intensity`` options, else the default (8-bit: / 255)."""
    stored = module.input_normalization().get("intensity")
    if stored is None:
        stored = training_intensity_config(ckpt_path)
    return IntensityScaling.from_config(stored)


def overlay_image(pixels: np.ndarray, mask: np.ndarray, intensity: IntensityScaling) -> np.ndarray:
    """The image (scaled as the net saw it, grey as RGB) half-blended with the class colours."""
    shown = np.clip(intensity(pixels), 0, 1)
    shown = shown[..., :3] if shown.shape[-1] >= 3 else np.repeat(shown[..., :1], 3, axis=-1)
    colours = colorize(torch.from_numpy(mask)).permute(1, 2, 0).numpy()
    return (127.5 * shown + 0.5 * colours).astype(np.uint8)


def save_png(array: np.ndarray, path: Path, palette: bool) -> None:
    """Write next to ``path`` then rename, so an interrupted run leaves no partial file."""
    if palette:  # share the mask's memory instead of copying it (large images)
        height, width = array.shape
        image = Image.frombuffer("P", (width, height), np.ascontiguousarray(array), "raw", "P", 0, 1)
        image.putpalette(voc_palette().flatten().tolist())
    else:
        image = Image.fromarray(array)
    with atomic_path(path) as partial:
        image.save(partial, format="PNG")


def predict(cfg: DictConfig) -> list[Path]:
    """Predict every input image; return the mask files written."""
    device = resolve_device(cfg.device)
    images = input_images(cfg.input)
    output = check_output(images, cfg)
    module = load_module(cfg.ckpt_path)
    module.to(device).eval()
    mean, std = normalization(cfg, module)
    intensity = training_intensity(module, cfg.ckpt_path)
    channels = len(mean)
    config = InferenceConfig(**cfg.inference)
    net = getattr(module, "net", None)
    # A valid-convolution net's tiles get their context here, on the image's pooling grid; its
    # module would pad each window again, off that grid. Rescaled TTA views need logits of the
    # input's size: the module's (which pads each rescaled window itself).
    valid_tiles = config.mode == "tile" and getattr(net, "context", None) is not None
    model = net if valid_tiles and config.scales == (1.0,) else module
    output.mkdir(parents=True, exist_ok=True)
    written = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not cfg.progress_bar) as progress:
        for path in images:
            image = read_image(path, channels)
            files = output_files(path, output, cfg)
            task = progress.add_task(path.name, total=None)
            probabilities = None
            if "probabilities" in files:
                shape = (module.num_classes, image.shape[0], image.shape[1])
                probabilities = open_memmap(files["probabilities"], mode="w+", dtype=np.float16, shape=shape)

            def write_band(top: int, band: np.ndarray, target: np.memmap | None = probabilities) -> None:
                if target is not None:
                    target[:, top:top + band.shape[1]] = band
                    target.flush()

            mask = predict_image(model, image, mean, std, config, net=net, device=device,
                                 on_probabilities=write_band if probabilities is not None else None,
                                 on_window=lambda task=task: progress.advance(task), intensity=intensity)
            del probabilities
            save_png(mask, files["mask"], palette=True)
            if "overlay" in files:
                save_png(overlay_image(image, mask, intensity), files["overlay"], palette=False)
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
    sys.argv = hoist_multirun_flag(sys.argv)
    hydra_main()


if __name__ == "__main__":
    main()
