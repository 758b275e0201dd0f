"""File discovery and checks for :class:`segkit.data.folder.FolderDataModule`.

Every problem is a :class:`SegkitError` of one line naming the file (full path) and the fix.
Pairing (by name stem) uses directory listings only; :func:`check_headers` opens each file but
reads only its header (``Image.open`` is lazy: size and mode without decoding the pixels);
:func:`check_pair` does the same checks on images already open, when a sample is loaded.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from segkit.errors import SegkitError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# Masks must be lossless: JPEG compression changes class indices at object edges.
MASK_EXTENSIONS = (".png", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
# 8-bit images PIL converts to RGB or grey without losing range; 16-bit/float ("I;16", "F")
# would be clipped to 255 by those conversions, so they are refused rather than saturated.
IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
# One channel of class indices; "P" is read as palette indices, not colours.
MASK_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")
LAYOUT = "{train,val,test}/{images,masks}/<name>.<ext>"

Pair = tuple[Path, Path]


def _listed(extensions: tuple[str, ...]) -> str:
    return ", ".join(extensions)


def check_root(root: Path) -> None:
    """Raise unless ``root`` is a directory."""
    if not root.is_dir():
        raise SegkitError(
            f"data.root={root}: no such directory; point data.root at the folder holding {LAYOUT} "
            "(test/ is optional)"
        )


def _files(folder: Path, extensions: tuple[str, ...], kind: str) -> dict[str, Path]:
    """``{stem: path}`` of the files in ``folder``; dot files and subfolders are skipped."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in extensions:
            jpeg_mask = kind == "mask" and path.suffix.lower() in (".jpg", ".jpeg")
            lossy = " (JPEG is lossy and changes class indices)" if jpeg_mask else ""
            raise SegkitError(
                f"{path}: unsupported {kind} file type '{path.suffix}'{lossy}; {kind}s must be "
                f"{_listed(extensions)}: convert the file or move it out of {folder}"
            )
        if path.stem in found:
            raise SegkitError(
                f"{found[path.stem]} and {path}: two {kind}s named '{path.stem}'; keep one, since "
                "images and masks are paired by name"
            )
        found[path.stem] = path
    return found


def find_pairs(root: Path, split: str) -> list[Pair]:
    """``(image, mask)`` paths of ``root/split``, sorted by name; raises on any unpaired file.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     for sub, name in (("images", "a.jpg"), ("masks", "a.png")):
        ...         (Path(folder) / "train" / sub).mkdir(parents=True)
        ...         (Path(folder) / "train" / sub / name).touch()
        ...     [(i.name, m.name) for i, m in find_pairs(Path(folder), "train")]
        [('a.jpg', 'a.png')]
    """
    split_dir = root / split
    if not split_dir.is_dir():
        raise SegkitError(
            f"{split_dir}: no such directory; create it with images/ and masks/ inside "
            f"(data=folder reads {root}/{LAYOUT})"
        )
    for sub in ("images", "masks"):
        if not (split_dir / sub).is_dir():
            raise SegkitError(
                f"{split_dir / sub}: no such directory; put the {split} {sub} there "
                "(an image and its mask share a name, e.g. images/a.jpg and masks/a.png)"
            )
    images_dir, masks_dir = split_dir / "images", split_dir / "masks"
    images = _files(images_dir, IMAGE_EXTENSIONS, "image")
    masks = _files(masks_dir, MASK_EXTENSIONS, "mask")
    for stem, image in images.items():
        if stem not in masks:
            raise SegkitError(
                f"{image}: no mask for '{stem}'; expected {masks_dir / stem}.png (or .tif/.tiff): "
                "add the mask or remove the image"
            )
    for stem, mask in masks.items():
        if stem not in images:
            raise SegkitError(
                f"{mask}: no image for '{stem}'; expected {images_dir / stem}.png (or .jpg/.jpeg/"
                ".tif/.tiff): add the image or remove the mask"
            )
    if not images:
        raise SegkitError(
            f"{images_dir}: split '{split}' has no images; add image files ({_listed(IMAGE_EXTENSIONS)}) "
            f"with masks of the same name in {masks_dir}"
        )
    return [(images[stem], masks[stem]) for stem in sorted(images)]


def unreadable(path: Path, error: BaseException) -> SegkitError:
    """The error for a file PIL cannot open or decode (not an image, truncated, corrupt)."""
    reason = " ".join(str(error).split())
    return SegkitError(
        f"{path}: unreadable, truncated or not an image ({type(error).__name__}: {reason}); "
        "re-export it as PNG/JPEG/TIFF, or remove it together with its image or mask"
    )


def open_image(path: Path) -> Image.Image:
    """``Image.open`` (header only), with unreadable files as :class:`SegkitError`."""
    try:
        return Image.open(path)
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise unreadable(path, error) from None


def check_pair(image: Image.Image, mask: Image.Image, pair: Pair) -> None:
    """Raise unless the open ``image`` and ``mask`` of ``pair`` have usable modes and one size."""
    image_path, mask_path = pair
    if image.mode not in IMAGE_MODES:
        raise SegkitError(
            f"{image_path}: image mode {image.mode} (16-bit or float) is not supported; save it "
            "as an 8-bit RGB or grayscale image"
        )
    if mask.mode not in MASK_MODES:
        raise SegkitError(
            f"{mask_path}: mask mode {mask.mode}; masks must hold one channel of class indices "
            "(L, I or palette P mode): convert colours to class indices, e.g. as a palette PNG"
        )
    if image.size != mask.size:
        (iw, ih), (mw, mh) = image.size, mask.size
        raise SegkitError(
            f"{image_path} is {iw}x{ih} (width x height) but its mask {mask_path} is {mw}x{mh}; "
            "resize the mask to its image's size (nearest-neighbour) or fix the pair"
        )


def check_headers(pairs: list[Pair]) -> None:
    """Open every image and mask of ``pairs`` for its header only, and :func:`check_pair` them."""
    for pair in pairs:
        with open_image(pair[0]) as image, open_image(pair[1]) as mask:
            check_pair(image, mask, pair)


def read_class_names(root: Path, num_classes: int, class_names: list[str] | None) -> list[str]:
    """``class_names``, else ``root/classes.txt`` (one per line, blank lines skipped), else
    ``class_0..class_{K-1}``; raises when the count is not ``num_classes``.

    Example:
        >>> read_class_names(Path("nowhere"), 3, None)
        ['class_0', 'class_1', 'class_2']
    """
    if class_names is not None:
        names, source = [str(name) for name in class_names], f"data.class_names={list(class_names)}"
        fix = "give one name per class or fix data.num_classes"
    elif (root / "classes.txt").is_file():
        path = root / "classes.txt"
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        source, fix = str(path), "write one class name per line or fix data.num_classes"
    else:
        return [f"class_{index}" for index in range(num_classes)]
    if len(names) != num_classes:
        raise SegkitError(f"{source}: {len(names)} class names but data.num_classes={num_classes}; {fix}")
    return names
