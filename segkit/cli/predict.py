"""``segkit-predict``: masks for your own images, of any size, from a segkit checkpoint.

Examples::

    segkit-predict ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt input=photos/ output=masks/
    segkit-predict ckpt_path=... input=big.tif output=out/ inference.mode=tile inference.window=1024
    segkit-predict ckpt_path=... input=img.png output=out/ save.overlay=true save.probabilities=true

For every image ``<stem>.<ext>``: ``<stem>.png`` (class indices as a palette PNG, the input's
size), optionally ``<stem>_overlay.png`` and ``<stem>_probs.npy`` (float16 ``(C, H, W)``).
Never writes into the input's directory; refuses to replace existing outputs unless
``overwrite=true`` (checked for every image before the first prediction).
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
from segkit.cli.config_dir import config_dir
from segkit.cli.errors import SegkitError, exit_on_user_error
from segkit.data.intensity import IntensityScaling
from segkit.data.readers import match_channels, read_array
from segkit.inference.predict import InferenceConfig, predict_image
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
        raise SegkitError(f"input={path}: no such file or directory; pass an image file or a folder of images")
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise SegkitError(f"input={path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def output_files(image: Path, output: Path, cfg: DictConfig) -> dict[str, Path]:
    files = {"mask": output / f"{image.stem}.png"}
    if cfg.save.overlay:
        files["overlay"] = output / f"{image.stem}_overlay.png"
    if cfg.save.probabilities:
        files["probabilities"] = output / f"{image.stem}_probs.npy"
    return files


def check_output(images: list[Path], cfg: DictConfig) -> Path:
    """The output directory, after refusing the input's directory and existing files."""
    output = Path(cfg.output).resolve()
    for image in images:
        if output == image.parent.resolve() or image.parent.resolve() in output.parents:
            raise SegkitError(
                f"output={cfg.output} is inside the input's folder {image.parent}; choose another output folder"
            )
    if not cfg.overwrite:
        for image in images:
            for path in output_files(image, output, cfg).values():
                if path.exists():
                    raise SegkitError(f"{path} exists; pass overwrite=true to replace it, or another output=")
    stems = [image.stem for image in images]
    if len(set(stems)) != len(stems):
        raise SegkitError(f"input={cfg.input}: two images share a name stem; their masks would collide")
    output.mkdir(parents=True, exist_ok=True)
    return output


def normalization(cfg: DictConfig, module: torch.nn.Module) -> tuple[list[float], list[float]]:
    """``mean``/``std``: given, else those stored in the checkpoint, else the training run's
    config (``<run>/.hydra/config.yaml``)."""
    given = {key: cfg.get(key) for key in ("mean", "std") if cfg.get(key) is not None}
    stats = {**training_normalization(cfg.ckpt_path), **(getattr(module, "input_normalization", None) or {}), **given}
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


def training_intensity(module: torch.nn.Module, ckpt_path: str) -> IntensityScaling:
    """The intensity scaling training applied: stored in the checkpoint, else the run's
    ``data.intensity`` options, else the default (8-bit: / 255)."""
    stored = (getattr(module, "input_normalization", None) or {}).get("intensity")
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
    images = input_images(cfg.input)
    output = check_output(images, cfg)
    module = load_module(cfg.ckpt_path)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
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
