"""Command-line conveniences applied before Hydra parses ``sys.argv``."""

from __future__ import annotations

MULTIRUN_FLAGS = ("-m", "--multirun")


def hoist_multirun_flag(argv: list[str]) -> list[str]:
    """Move ``-m``/``--multirun`` before the overrides, so that
    ``segkit-train experiment=x -m model=a,b`` works as ``segkit-train -m experiment=x model=a,b``
    (Hydra's parser rejects overrides on both sides of the flag).

    Example:
        >>> hoist_multirun_flag(["segkit-train", "experiment=x", "-m", "model=a,b"])
        ['segkit-train', '-m', 'experiment=x', 'model=a,b']
    """
    flags = [a for a in argv[1:] if a in MULTIRUN_FLAGS]
    if not flags:
        return argv
    return [argv[0], flags[0], *[a for a in argv[1:] if a not in MULTIRUN_FLAGS]]
