"""Adds the ``conf/`` folders of installed segkit plugins to Hydra's search path.

Hydra imports every module under ``hydra_plugins`` and asks each ``SearchPathPlugin`` to edit
the search path of whichever Hydra application runs. This one edits only segkit's own (those
whose primary config folder is segkit's ``conf/``): other Hydra applications in the same
environment keep their search path. Plugins come after segkit's folder, so a plugin's
``model/unet.yaml`` cannot shadow segkit's ``model=unet``. See :mod:`segkit.plugins`.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


def _local_path(url: str | None) -> Path | None:
    """The folder of a search path entry: ``file://<path>`` or a bare path (as ``hydra.main``'s
    absolute ``config_path`` gives); ``None`` for other providers (``pkg://``, ``structured://``)."""
    if not url or ("://" in url and not url.startswith("file://")):
        return None
    return Path(url.removeprefix("file://")).resolve()


class SegkitPluginConfigs(SearchPathPlugin):
    """Appends ``file://<plugin package>/conf`` for every installed segkit plugin."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from segkit.config_dir import config_dir
        from segkit.plugins import installed_plugins

        segkit_conf = Path(config_dir()).resolve()
        if not any(_local_path(element.path) == segkit_conf for element in search_path.get_path()):
            return
        for plugin in installed_plugins():
            conf = plugin.conf_dir()
            if conf is not None:
                search_path.append(provider=f"segkit-plugin:{plugin.name}", path=f"file://{conf}")
