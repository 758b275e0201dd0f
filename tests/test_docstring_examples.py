"""Every runnable example in a public docstring runs and prints what it claims."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import segkit


def modules_with_examples() -> list[str]:
    """Every segkit module whose source holds a ``>>>`` example (found, not listed by hand)."""
    root = Path(segkit.__file__).parent
    names = []
    for path in sorted(root.rglob("*.py")):
        if ">>> " in path.read_text():
            parts = path.relative_to(root.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES_WITH_EXAMPLES = modules_with_examples()


@pytest.mark.parametrize("name", MODULES_WITH_EXAMPLES)
def test_docstring_examples_pass(name: str) -> None:
    module = importlib.import_module(name)
    for package in getattr(module, "REQUIRES_PACKAGES", ()):  # an optional extra's examples
        pytest.importorskip(package)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples left; drop it from the list"
    assert result.failed == 0
