"""The exception for problems with the user's input, shown as one line by the entry points,
and the helpers that keep such a line one line and precise."""

from __future__ import annotations

from pathlib import Path


class SegkitError(Exception):
    """What is wrong, where (file, value, config key) and how to fix it; no traceback shown."""


def shown(value: object) -> str:
    """``value`` for a one-line message: as typed, or escaped as ``repr`` does when it holds a
    newline or another unprintable character (a file name may).

    Example:
        >>> shown(Path("/data/a b.png")), shown("/data/a\\nb.png")
        ('/data/a b.png', "'/data/a\\\\nb.png'")
    """
    text = str(value)
    return text if text.isprintable() else repr(text)


def file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` if it is a file (``path`` cannot be created then).

    Example:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "notes.txt"; _ = file.write_text("")
        >>> file_in_the_way(file / "out" / "mask.png") == file
        True
    """
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None
