"""``segkit-data``: audit a data=folder tree before training (a readable data set fingerprint).

Example::

    segkit-data data/mine                       # read masks as class indices, suggest the rest
    segkit-data data/cells --mask-type instances --in-channels 1 --out cells-audit.json

Prints counts, image sizes, bit depths, intensity percentiles, class frequencies per split,
warnings (0/255 masks read as indices, instance ids or colours read as classes, 16-bit images,
images smaller than the crop, missing or rare classes) and the ``segkit-train`` command to run;
writes all of it, with every file's facts and every bad file, to ``audit.json``. Exit status:
0 (warnings allowed), 1 when bad files were found (all listed, one line each), 2 for a usage
error (one line).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from segkit.atomic import atomic_path
from segkit.cli.flags import FlagParser
from segkit.errors import SegkitError

PROGRAM = "segkit-data"
# segkit.data.files.masks.MASK_TYPES and segkit.data.files.folder_index.LAYOUT, repeated so that --help and
# usage errors answer at once: importing segkit.data loads torch (a test checks they agree).
MASK_TYPES = ("index", "binary", "instances", "colors")
LAYOUT = "{train,val,test}/{images,masks}/<name>.<ext>"
# Classes shown in the printed table; audit.json has them all.
SHOWN_CLASSES = 16


def _shown(path: Path | str) -> str:
    """``path`` for a one-line message, escaped when unprintable (as segkit.data.files.readers.shown)."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def _no_directory(path: Path) -> str:
    """Why ``path`` is no directory: a symlink loop or broken link, or nothing there."""
    if path.is_symlink():
        from segkit.data.files.folder_index import missing_directory

        return missing_directory(path)
    return "no such directory"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options of ``segkit-data`` (see ``--help``).

    Example:
        >>> parse_args(["data/mine", "--num-classes", "4"]).num_classes
        4
    """
    parser = FlagParser(
        prog=PROGRAM, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Audit a data=folder tree ROOT/{LAYOUT} before training: sizes, bit depths, "
                    "intensities, class frequencies, traps, and the settings and command to train with.",
        epilog=f"example:\n  {PROGRAM} data/mine\n  {PROGRAM} data/cells --mask-type instances --in-channels 1\n\n"
               "exit status: 0 ok (warnings allowed), 1 bad files found (all listed), 2 usage error",
    )
    parser.add_argument("root", metavar="ROOT", help="folder holding train/, val/ and optionally test/")
    parser.add_argument("--num-classes", type=int, metavar="K",
                        help="check index masks against 0..K-1 (default: unchecked, K suggested)")
    parser.add_argument("--mask-type", choices=MASK_TYPES, default="index",
                        help="how masks are read, as data.mask_type (default: index)")
    parser.add_argument("--in-channels", type=int, metavar="C",
                        help="read images with C channels, as data.in_channels (default: as stored)")
    parser.add_argument("--ignore-index", type=int, default=255, metavar="N",
                        help="mask value left out of the statistics (default: 255)")
    parser.add_argument("--out", default="audit.json", help="the JSON report (default: ./audit.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.num_classes is not None and args.num_classes < 2:
        parser.error(f"--num-classes {args.num_classes}: needs at least 2")
    if args.in_channels is not None and args.in_channels < 1:
        parser.error(f"--in-channels {args.in_channels}: use the channels of your images (1 or more)")
    return args


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` next to ``path``, then rename: no half-written report."""
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(data, indent=1) + "\n")


def read_class_file(root: Path) -> tuple[list[str] | None, list[tuple[int, int, int]] | None]:
    """``(names, palette)`` from ``root/classes.txt`` (``None`` where absent)."""
    path = root / "classes.txt"
    if not path.is_file():
        return None, None
    from segkit.data.files.folder_index import parse_classes_line

    parsed = [parse_classes_line(line, path) for line in path.read_text().splitlines() if line.strip()]
    colours = [colour for _, colour in parsed]
    palette = colours if colours and all(colour is not None for colour in colours) else None
    return [name for name, _ in parsed], palette  # type: ignore[return-value]


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _spread(values: dict[str, Any] | None) -> str:
    return "" if not values else " / ".join(_number(values[key]) for key in ("min", "median", "max"))


def _counts(counts: dict[str, int] | None) -> str:
    return ", ".join(f"{key}: {count}" for key, count in (counts or {}).items())


def print_report(report: dict[str, Any], console: Console) -> None:
    """The report, readable: splits, intensities, classes, warnings, suggestions."""
    read = report["read_as"]
    console.print(Text(f"{PROGRAM} {report['root']}", style="bold"),
                  Text(f"(masks read as {read['mask_type']}, ignore_index {read['ignore_index']})"))
    splits: dict[str, dict[str, Any]] = report["splits"]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("split", "pairs", "bad", "height min/med/max", "width min/med/max", "channels", "dtypes"):
        table.add_column(column, justify="right" if column in ("pairs", "bad") else "left")
    for name, split in splits.items():
        table.add_row(name, str(split["pairs"]), str(split["bad"]), _spread(split.get("height")),
                      _spread(split.get("width")), _counts(split.get("channels")), _counts(split.get("dtypes")))
    console.print(table)
    console.print(Text("intensity percentiles of each image, per channel: min / median / max over the images"))
    table = Table("split", "channel", "low (1st pct)", "high (99.8th pct)", box=box.SIMPLE_HEAD, pad_edge=False)
    for name, split in splits.items():
        for channel in split.get("intensity", []):
            table.add_row(name, str(channel["channel"]), _spread(channel["low"]), _spread(channel["high"]))
    console.print(table)
    if any(split.get("objects_per_image") for split in splits.values()):
        console.print("objects per image (min / median / max, total): " + "; ".join(
            f"{name} {_spread(split['objects_per_image'])} ({split['objects_per_image']['total']})"
            for name, split in splits.items() if split.get("objects_per_image")))
    weights = report["suggestions"]["model.loss.class_weights"]["value"]
    console.print(Text("class pixels: fraction of the valid (not ignored) pixels of each split"))
    table = Table("class", *splits, *(["weight"] if weights else []), box=box.SIMPLE_HEAD, pad_edge=False)
    for c, name in enumerate(report["class_names"][:SHOWN_CLASSES]):
        cells = [f"{100 * split['class_fraction'][c]:.2f}%" if "class_fraction" in split else ""
                 for split in splits.values()]
        weight = ([f"{weights[c]:.3g}" if weights[c] is not None else "-"] if weights else [])
        table.add_row(name, *cells, *weight)
    table.add_row("ignored", *(f"{100 * split.get('ignored_fraction', 0):.2f}%" for split in splits.values()),
                  *([""] if weights else []))
    console.print(table)
    if len(report["class_names"]) > SHOWN_CLASSES:
        console.print(f"... {len(report['class_names']) - SHOWN_CLASSES} more classes in the JSON report")
    absent = [note for split in splits.values() for note in split.get("absent_notes", [])]
    if absent:
        console.print(Text("; ".join(absent)))
    for warning in report["warnings"]:
        console.print(Text("warning: ", style="bold yellow") + Text(warning["message"]))
    console.print(Text("\nsuggested settings", style="bold"))
    for key, suggestion in report["suggestions"].items():
        if key != "command":
            value = suggestion["value"]
            # A list as an override takes it, e.g. model.loss.class_weights=[0.68,1.9].
            shown = "[" + ",".join("-" if v is None else f"{v:.3g}" for v in value) + "]" if isinstance(value, list) else value
            shown = "unknown" if value is None else shown
            console.print(Text(f"  {key}={shown}", style="cyan") + Text(f"  # {suggestion['why']}", style="dim"))
    console.print(Text("train with:", style="bold"))
    console.print(Text(f"  {report['suggestions']['command']}"), soft_wrap=True)


def run(args: argparse.Namespace, console: Console) -> int:
    """Audit ``args.root``, print, write the JSON report; the exit status."""
    root, out = Path(args.root).expanduser().absolute(), Path(args.out)
    if not root.is_dir():
        raise SegkitError(f"{_shown(args.root)}: {_no_directory(Path(args.root).expanduser())}; pass the folder "
                          f"holding {LAYOUT} (test/ is optional)")
    if out.exists() and not args.overwrite:
        raise SegkitError(f"{_shown(out)} exists; pass --overwrite to replace it, or another --out")
    if not out.parent.is_dir():
        raise SegkitError(
            f"--out {_shown(out)}: no such directory {_shown(out.parent)}; create it or choose another --out")
    from segkit.data.files.audit import build_report, scan_root
    from segkit.data.files.masks import MaskDecoder
    from segkit.data.files.preflight import PreflightCache

    names, palette = read_class_file(root)
    decoder = MaskDecoder(args.mask_type, args.num_classes, args.ignore_index,
                          palette if args.mask_type == "colors" else None)
    # The settings training's preflight keys its cache with: with the same options, it reuses these facts.
    cache = PreflightCache({"root": str(root), "in_channels": args.in_channels, "decoder": repr(decoder)})
    results = scan_root(root, decoder, args.in_channels, cache, progress=not args.no_progress and console.is_terminal)
    report = build_report(results, decoder, root, args.in_channels, names)
    print_report(report, console)
    write_json(out, report)
    for error in report["errors"]:
        print(f"{PROGRAM}: bad file: {error['error']}", file=sys.stderr)
    if report["errors"]:
        console.print(Text(f"{len(report['errors'])} bad pair(s) of {len(results)} (listed above); wrote {out}",
                           style="bold red"), soft_wrap=True)
        return 1
    console.print(Text(f"{len(results)} pairs, {len(report['warnings'])} warning(s); wrote {out}"), soft_wrap=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``segkit-data``; returns the exit status.

    Example:
        >>> main(["no/such/folder", "--out", "/no/such/dir/audit.json"])
        2
    """
    try:
        args = parse_args(argv)
        return run(args, Console(highlight=False))
    except SegkitError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
