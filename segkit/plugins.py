"""Plugins: installed packages that add models, data, losses and callbacks to segkit.

A plugin is any installed distribution that declares an entry point in the group
``segkit.plugins`` whose value names an importable package::

    # mylab's pyproject.toml
    [project.entry-points."segkit.plugins"]
    mylab = "mylab"

segkit then (a) adds the package's ``conf/`` folder (``mylab/conf/model/toy.yaml``, ...) to
Hydra's search path for its commands (``hydra_plugins/segkit_plugin_configs``), so
``segkit-train model=toy`` composes with no flag, and (b) trusts the package's classes in
checkpoints and saved run configs, as it trusts its own (:mod:`segkit.trust`).

Reading entry points imports nothing: a plugin's code runs only when a config names it.

Example:
    >>> [plugin.package for plugin in installed_plugins()]  # none in a bare install
    []
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path

ENTRY_POINT_GROUP = "segkit.plugins"


@dataclass(frozen=True)
class Plugin:
    """One installed plugin: its entry point's ``name``, the ``package`` it names and the
    ``distribution`` that declared it."""

    name: str
    package: str
    distribution: str

    def conf_dir(self) -> Path | None:
        """The package's ``conf/`` folder, found without importing the package; ``None`` if
        it has none."""
        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            return None
        for location in (spec.submodule_search_locations or []) if spec else []:
            if (Path(location) / "conf").is_dir():
                return Path(location) / "conf"
        return None


@lru_cache(maxsize=1)
def installed_plugins() -> tuple[Plugin, ...]:
    """The plugins of this environment, sorted by package; entry points whose value is not a
    dotted package name (``pkg.sub``, no ``:attr``) are skipped, as they name no package."""
    found = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        package = point.value.strip()
        if not package or not all(part.isidentifier() for part in package.split(".")):
            continue
        distribution = point.dist.name if point.dist is not None else "?"
        found[package] = Plugin(point.name, package, distribution)
    return tuple(found[package] for package in sorted(found))


def plugin_packages() -> tuple[str, ...]:
    """The packages named by installed plugins (see :func:`installed_plugins`)."""
    return tuple(plugin.package for plugin in installed_plugins())


def plugin_conf_dirs() -> list[Path]:
    """The ``conf/`` folders of installed plugins, in package order."""
    return [path for plugin in installed_plugins() if (path := plugin.conf_dir()) is not None]
