"""Write a file so that readers see the old file or the whole new one, never a partial one.

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "report.json"
    >>> with atomic_path(path) as partial:
    ...     _ = partial.write_text("{}")
    >>> path.read_text(), sorted(p.name for p in path.parent.iterdir())
    ('{}', ['report.json'])
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, durable: bool = False) -> Iterator[Path]:
    """A temporary path next to ``path``, renamed onto ``path`` when the block ends normally.

    If the block raises, ``path`` is left as it was and the temporary file is removed.
    ``durable=True`` also flushes the file and its directory to disk before and after the
    rename (checkpoints: a power cut must not leave an empty ``last.ckpt``).
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        if durable:
            _fsync(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    if durable:
        _fsync(path.parent)


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file or a directory) to disk, where the platform allows it."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. directories on Windows
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
