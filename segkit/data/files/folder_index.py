"""File discovery and checks for :class:`segkit.data.modules.folder.FolderDataModule`.

Every problem is a :class:`SegkitError` of one line naming the file (full path) and the fix.
Pairing (by name stem) uses directory listings only; :func:`check_headers` reads each file's
header only (TIFF tags, Pillow's lazy open: size and channels without decoding the pixels).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from segkit.data.files.readers import Header, read_header
from segkit.errors import shown
from segkit.errors import SegkitError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# Masks must be lossless: JPEG compression changes class indices at object edges.
MASK_EXTENSIONS = (".png", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
LAYOUT = "{train,val,test}/{images,masks}/<name>.<ext>"

Pair = tuple[Path, Path]


def _listed(extensions: tuple[str, ...]) -> str:
    return ", ".join(extensions)


def link_problem(path: Path) -> str | None:
    """What is wrong with ``path`` if it is a symlink that leads nowhere (``None``: nothing).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     loop = Path(folder) / "a.png"
        ...     loop.symlink_to(loop)
        ...     link_problem(loop)
        'a symlink loop (the link leads back to itself)'
    """
    if not path.is_symlink() or path.exists():
        return None
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop so
        return "a symlink loop (the link leads back to itself)"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symlink loop (the link leads back to itself)"
    return f"a broken symlink to {shown(os.readlink(path))} (no such file or directory)"


def missing_directory(path: Path) -> str:
    """Why ``path`` is no directory, for a message: a symlink loop, a broken link, or nothing there."""
    problem = link_problem(path)
    return f"{problem}, not a directory" if problem else "no such directory"


def check_root(root: Path) -> None:
    """Raise unless ``root`` is a directory."""
    if not root.is_dir():
        raise SegkitError(
            f"data.root={shown(root)}: {missing_directory(root)}; point data.root at the folder holding {LAYOUT} "
            "(test/ is optional)"
        )


def _files(folder: Path, extensions: tuple[str, ...], kind: str) -> dict[str, Path]:
    """``{stem: path}`` of the files in ``folder``; dot files and subfolders are skipped."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        problem = link_problem(path)
        if problem:
            raise SegkitError(
                f"{shown(path)}: {problem}; replace the link with the {kind} file it should point to, or remove it"
            )
        if not path.is_file():
            continue
        if path.suffix.lower() not in extensions:
            jpeg_mask = kind == "mask" and path.suffix.lower() in (".jpg", ".jpeg")
            lossy = " (JPEG is lossy and changes class indices)" if jpeg_mask else ""
            raise SegkitError(
                f"{shown(path)}: unsupported {kind} file type {path.suffix!r}{lossy}; {kind}s must be "
                f"{_listed(extensions)}: convert the file or move it out of {shown(folder)}"
            )
        if path.stem in found:
            raise SegkitError(
                f"{shown(found[path.stem])} and {shown(path)}: two {kind}s named {path.stem!r}; keep one, since "
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
            f"{shown(split_dir)}: {missing_directory(split_dir)}; create it with images/ and masks/ inside "
            f"(data=folder reads {shown(root)}/{LAYOUT})"
        )
    for sub in ("images", "masks"):
        if not (split_dir / sub).is_dir():
            raise SegkitError(
                f"{shown(split_dir / sub)}: {missing_directory(split_dir / sub)}; put the {split} {sub} there "
                "(an image and its mask share a name, e.g. images/a.jpg and masks/a.png)"
            )
    images_dir, masks_dir = split_dir / "images", split_dir / "masks"
    images = _files(images_dir, IMAGE_EXTENSIONS, "image")
    masks = _files(masks_dir, MASK_EXTENSIONS, "mask")
    for stem, image in images.items():
        if stem not in masks:
            raise SegkitError(
                f"{shown(image)}: no mask for {stem!r}; expected {shown(masks_dir / (stem + '.png'))} (or .tif/.tiff): "
                "add the mask or remove the image"
            )
    for stem, mask in masks.items():
        if stem not in images:
            raise SegkitError(
                f"{shown(mask)}: no image for {stem!r}; expected {shown(images_dir / (stem + '.png'))} (or .jpg/.jpeg/"
                ".tif/.tiff): add the image or remove the mask"
            )
    if not images:
        raise SegkitError(
            f"{shown(images_dir)}: split '{split}' has no images; add image files ({_listed(IMAGE_EXTENSIONS)}) "
            f"with masks of the same name in {shown(masks_dir)}"
        )
    return [(images[stem], masks[stem]) for stem in sorted(images)]


def check_header_pair(pair: Pair) -> Header:
    """The image's :class:`Header` after checking that ``pair``'s image and mask have one size."""
    image, mask = read_header(pair[0]), read_header(pair[1])
    if (image.height, image.width) != (mask.height, mask.width):
        raise SegkitError(
            f"{shown(pair[0])} is {image.width}x{image.height} (width x height) but its mask {shown(pair[1])} is "
            f"{mask.width}x{mask.height}; resize the mask to its image's size (nearest-neighbour) or fix the pair"
        )
    return image


def check_headers(pairs: list[Pair]) -> list[Header]:
    """Every pair's image :class:`Header`, read without decoding pixels, sizes checked."""
    return [check_header_pair(pair) for pair in pairs]


def parse_classes_line(line: str, path: Path) -> tuple[str, tuple[int, int, int] | None]:
    """``name``, ``name R G B`` or ``name #rrggbb`` -> ``(name, colour or None)``.

    Example:
        >>> parse_classes_line("road #804080", Path("classes.txt"))
        ('road', (128, 64, 128))
    """
    tokens = line.split()
    try:
        if len(tokens) >= 2 and tokens[-1].startswith("#") and len(tokens[-1]) == 7:
            code = tokens[-1][1:]
            return " ".join(tokens[:-1]), (int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16))
        if len(tokens) >= 4 and all(token.isdigit() for token in tokens[-3:]):
            red, green, blue = (int(token) for token in tokens[-3:])
            if max(red, green, blue) <= 255:
                return " ".join(tokens[:-3]), (red, green, blue)
    except ValueError:
        pass
    if tokens[-1].startswith("#"):
        raise SegkitError(f"{shown(path)}: '{line.strip()}' has a bad colour; write 'name R G B' or 'name #rrggbb'")
    return line.strip(), None


def read_classes(
    root: Path, num_classes: int, class_names: list[str] | None,
) -> tuple[list[str], list[tuple[int, int, int]] | None]:
    """``(names, palette or None)``: ``class_names``, else ``root/classes.txt`` (one class a
    line: ``name``, or ``name R G B`` / ``name #rrggbb`` with the class's mask colour, for
    ``mask_type=colors``), else ``class_0..class_{K-1}``; raises when the count is not
    ``num_classes``.

    Example:
        >>> read_classes(Path("nowhere"), 3, None)
        (['class_0', 'class_1', 'class_2'], None)
    """
    palette: list[tuple[int, int, int]] | None = None
    if class_names is not None:
        names, source = [str(name) for name in class_names], f"data.class_names={list(class_names)}"
        fix = "give one name per class or fix data.num_classes"
    elif (root / "classes.txt").is_file():
        path = root / "classes.txt"
        parsed = [parse_classes_line(line, path) for line in path.read_text().splitlines() if line.strip()]
        names = [name for name, _ in parsed]
        colors = [color for _, color in parsed]
        if all(color is not None for color in colors):
            palette = colors  # type: ignore[assignment]
        source, fix = shown(path), "write one class name per line or fix data.num_classes"
    else:
        return [f"class_{index}" for index in range(num_classes)], None
    if len(names) != num_classes:
        raise SegkitError(f"{source}: {len(names)} class names but data.num_classes={num_classes}; {fix}")
    return names, palette
