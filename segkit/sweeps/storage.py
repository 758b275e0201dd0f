"""Where a sweep's Optuna study lives, and opening it from any process that shares the file system.

``hydra.sweeper.storage``:

- ``null`` (default): ``<sweep dir>/optuna.journal``, Optuna's JournalStorage on a file, the
  storage Optuna recommends on NFS: each process appends whole records under a lock made by an
  exclusive create (``JournalFileOpenLock``, which NFS v3+ makes atomic), so workers on several
  machines can write one study. A sweep directory made by earlier segkit (``optuna.db``) keeps it.
- ``memory``: not stored (one process only).
- a URL with ``://`` (``postgresql://...``, ``sqlite:///...``): Optuna's RDB storage.
- any other value: a journal file at that path.

Example:
    >>> import tempfile
    >>> sweep = Path(tempfile.mkdtemp())
    >>> storage_url(None, sweep) == str(sweep / JOURNAL_NAME)
    True
    >>> study = open_study("demo", storage_url(None, sweep), direction="maximize")
    >>> study.tell(study.ask(), 0.5).value, open_study("demo", storage_url(None, sweep)).best_value
    (0.5, 0.5)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

JOURNAL_NAME = "optuna.journal"
LEGACY_SQLITE_NAME = "optuna.db"
MEMORY = "memory"


def storage_url(storage: str | None, sweep_dir: Path) -> str | None:
    """The study's storage as a path or URL (None: in memory) for ``hydra.sweeper.storage``."""
    if storage is None:
        legacy = sweep_dir / LEGACY_SQLITE_NAME
        if legacy.is_file() and not (sweep_dir / JOURNAL_NAME).exists():
            return f"sqlite:///{legacy}"
        return str(sweep_dir / JOURNAL_NAME)
    if storage == MEMORY:
        return None
    return storage


def open_storage(url: str | None) -> BaseStorage | None:
    """An Optuna storage for :func:`storage_url`'s value; None stays None (in memory)."""
    if url is None:
        return None
    if "://" in url:
        return optuna.storages.get_storage(url)
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The lock is <journal>.lock, created exclusively (the name Optuna's default lock and
    # optuna-dashboard use too); one left by a killed process is broken after 30 s.
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def open_study(name: str, url: str | None, *, direction: str | None = None, sampler: Any = None,
               pruner: Any = None) -> optuna.Study:
    """Create the study (``direction`` given) or load it (``direction=None``: it must exist)."""
    storage = open_storage(url)
    if direction is None:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                               direction=direction, load_if_exists=True)


def find_study_storage(sweep_dir: Path) -> str | None:
    """The storage a finished or running sweep in ``sweep_dir`` used (its journal, its legacy
    SQLite file, or the URL its ``multirun.yaml`` names), or None when it has no study."""
    multirun = sweep_dir / "multirun.yaml"
    if multirun.is_file():
        import yaml

        sweeper = ((yaml.safe_load(multirun.read_text()) or {}).get("hydra") or {}).get("sweeper") or {}
        if "storage" in sweeper and sweeper["storage"] not in (None, MEMORY):
            return str(sweeper["storage"])
    for name, url in ((JOURNAL_NAME, str(sweep_dir / JOURNAL_NAME)),
                      (LEGACY_SQLITE_NAME, f"sqlite:///{sweep_dir / LEGACY_SQLITE_NAME}")):
        if (sweep_dir / name).is_file():
            return url
    return None
