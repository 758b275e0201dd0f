"""Which code a file may name: segkit's own classes and its installed plugins', nothing else.

A checkpoint or a run directory's saved config can name code (``_target_: ...``, a loss's
dotted path, the module class that wrote a checkpoint). Such files travel: a run directory
copied from a colleague, a checkpoint downloaded from a paper's page. Importing or calling
what they name would run their code, so segkit accepts only classes defined inside
segkit or inside a package an installed plugin declares (:mod:`segkit.plugins`: installing it
was the user's choice to run its code), and checks the name's text before importing anything. What a user writes on
their own command line or in their own config files is theirs to run, and is not checked here.

Example:
    >>> trusted_class("segkit.data.ShapesDataModule", "a saved config").__name__
    'ShapesDataModule'
    >>> trusted_class("builtins.open", "a saved config")
    Traceback (most recent call last):
    ...
    segkit.errors.SegkitError: a saved config names builtins.open: refused, ...
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from segkit.errors import SegkitError
from segkit.plugins import plugin_packages


def trusted_packages() -> tuple[str, ...]:
    """Packages whose classes a checkpoint or a saved run config may name: segkit and the
    packages of installed plugins."""
    return ("segkit", *plugin_packages())


def _in_trusted_package(dotted: str) -> bool:
    return any(dotted == package or dotted.startswith(f"{package}.") for package in trusted_packages())


def trusted_class(path: str, source: str) -> type:
    """The class ``path`` (``package.module.Class`` or ``package.module:Class``) names, if it is
    defined in a trusted package; else a :class:`SegkitError` naming ``source``.

    The text is checked before any import, and only trusted modules are imported; the object
    found must be a class whose own module is trusted too (``segkit.x.os.system`` reaches a
    function of another package through a segkit module, and is refused).
    """
    refusal = (f"{source} names {path}: refused, a file may only name classes of segkit or of "
               f"an installed segkit plugin (packages: {', '.join(trusted_packages())}), since importing it "
               "would run its code")
    text = str(path).replace(":", ".")
    if not _in_trusted_package(text) or not all(part.isidentifier() for part in text.split(".")):
        raise SegkitError(refusal)
    module_name, _, attributes = str(path).partition(":")
    if not attributes:
        module_name, _, attributes = module_name.rpartition(".")
    try:
        found: Any = importlib.import_module(module_name)
        for attribute in attributes.split("."):
            found = getattr(found, attribute)
    except (ImportError, AttributeError):
        raise SegkitError(f"{source} names {path}, which this segkit version does not have") from None
    if not (inspect.isclass(found) and _in_trusted_package(found.__module__)):
        raise SegkitError(refusal)
    return found


def check_config_targets(node: Any, source: str) -> None:
    """Refuse a config read from a file (not the user's own) whose ``_target_`` entries name
    anything but trusted classes, at any depth."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "_target_":
                trusted_class(str(value), source)
            else:
                check_config_targets(value, source)
    elif isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
        for item in node:
            check_config_targets(item, source)
