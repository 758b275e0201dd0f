"""What ``segkit-predict`` reads and writes: input files, output names and formats, and the
checks that refuse a bad output before the model is loaded."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from segkit.data.files.lazy import is_zarr
from segkit.data.files.readers import TIFF_SUFFIXES
from segkit.errors import SegkitError, file_in_the_way, shown

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
FORMATS = ("auto", "png", "tiff", "zarr")
SUFFIX = {"png": ".png", "tiff": ".tif", "zarr": ".zarr"}


def input_images(path: str) -> list[Path]:
    """The image files of ``path`` (a file, an OME-Zarr folder, or a folder's images and
    ``.zarr`` folders sorted by name)."""
    source = Path(path)
    if source.is_file() or is_zarr(source):
        return [source]
    if not source.is_dir():
        raise SegkitError(f"input={shown(path)}: no such file or directory; pass an image file or a folder of images")
    files = sorted(p for p in source.iterdir() if not p.name.startswith(".") and (
        (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) or is_zarr(p)))
    if not files:
        raise SegkitError(f"input={shown(path)}: no images ({', '.join(IMAGE_SUFFIXES)}, .zarr) in this folder")
    return files


def is_lazy(image: Path) -> bool:
    """Whether ``image`` is read window by window (TIFF, OME-Zarr) rather than decoded whole."""
    return image.suffix.lower() in TIFF_SUFFIXES or is_zarr(image)


def output_format(image: Path, cfg: DictConfig) -> str:
    """``png``, ``tiff`` or ``zarr``: ``save.format``, or with ``auto`` the input's own kind
    (TIFF in, label TIFF out; OME-Zarr in, OME-Zarr out; PNG, JPEG and BMP in, palette PNG out)."""
    chosen = str(cfg.save.get("format", "auto"))
    if chosen not in FORMATS:
        raise SegkitError(f"save.format={shown(chosen)}: use one of {', '.join(FORMATS)}")
    if chosen != "auto":
        return chosen
    return "zarr" if is_zarr(image) else "tiff" if image.suffix.lower() in TIFF_SUFFIXES else "png"


def _stem(image: Path) -> str:
    name = image.name
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return image.stem


def output_files(image: Path, output: Path, cfg: DictConfig) -> dict[str, Path]:
    """Every file ``image`` gives: ``mask`` and, as asked, ``instances``, ``overlay``, ``probabilities``."""
    kind, stem = output_format(image, cfg), _stem(image)
    files = {"mask": output / f"{stem}{SUFFIX[kind]}"}
    if cfg.save.get("instances", False):
        files["instances"] = output / f"{stem}_instances{'.zarr' if kind == 'zarr' else '.tif'}"
    if cfg.save.overlay:
        files["overlay"] = output / f"{stem}_overlay.png"
    if cfg.save.probabilities:
        files["probabilities"] = output / f"{stem}_probs.npy"
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
        wants_folder = path.suffix == ".zarr"
        if path.exists() and path.is_dir() != wants_folder:
            raise SegkitError(f"{shown(path)} is a {'file' if wants_folder else 'folder'}, where {shown(image.name)}'s "
                              "output would go; move it or choose another output=")
        if path.exists() and not cfg.overwrite:
            raise SegkitError(f"{shown(path)} exists; pass overwrite=true to replace it, or another output=")
    return output
