"""Where the Hydra configs live, for a checkout and for a regular install alike."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> str:
    """Absolute path of segkit's ``conf/``.

    A checkout (or editable install) uses ``<repo>/conf``; a wheel ships the same files as
    ``segkit/conf`` (pyproject maps one onto the other).

    Example:
        >>> (Path(config_dir()) / "train.yaml").is_file()
        True
    """
    for candidate in (_PACKAGE.parent / "conf", _PACKAGE / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"segkit's configs are missing: neither {_PACKAGE.parent / 'conf'} nor "
        f"{_PACKAGE / 'conf'} holds train.yaml; reinstall segkit (pip install segkit)"
    )
