"""Make the plugin visible to the FiftyOne App: a link to this folder in FiftyOne's plugins directory.

FiftyOne finds plugins by walking ``fo.config.plugins_dir`` (``FIFTYONE_PLUGINS_DIR``,
default ``~/fiftyone/__plugins__``) for ``fiftyone.yml`` files, following links.
:func:`install_plugin` puts the link ``<plugins_dir>/alldata`` there (replacing a stale
alldata link, never a folder it did not make), so the App server, started after it, loads
the operators and the panel; :func:`uninstall_plugin` removes it.
"""

from __future__ import annotations

import os
from pathlib import Path

from alldata.errors import AlldataError

__all__ = ["LINK_NAME", "PLUGIN_NAME", "PluginInstallError", "install_plugin", "installed_at", "plugin_dir", "uninstall_plugin"]

#: The plugin's name in ``fiftyone.yml`` (operator URIs are ``@alldata/alldata/<operator>``).
PLUGIN_NAME = "@alldata/alldata"
#: The link's name inside the plugins directory.
LINK_NAME = "alldata"


class PluginInstallError(AlldataError, OSError):
    """The plugins directory holds something else under the plugin's name, or cannot be written."""


def plugin_dir() -> Path:
    """This folder: ``fiftyone.yml`` and the ``__init__.py`` FiftyOne runs."""
    return Path(__file__).resolve().parent


def _plugins_dir(plugins_dir: str | Path | None) -> Path:
    if plugins_dir is not None:
        return Path(plugins_dir).expanduser()
    import fiftyone as fo

    return Path(fo.config.plugins_dir).expanduser()


def installed_at(plugins_dir: str | Path | None = None) -> Path | None:
    """The link to this plugin in the plugins directory, or None when it is not installed."""
    link = _plugins_dir(plugins_dir) / LINK_NAME
    return link if link.is_symlink() and link.resolve() == plugin_dir() else None


def install_plugin(plugins_dir: str | Path | None = None) -> Path:
    """Link this plugin into ``plugins_dir`` (default: FiftyOne's); returns the link (idempotent).

    Raises:
        PluginInstallError: ``<plugins_dir>/alldata`` is a folder or file alldata did not
            make, or the directory cannot be written.
    """
    root = _plugins_dir(plugins_dir)
    link = root / LINK_NAME
    if installed_at(root) is not None:
        return link
    if link.exists() and not link.is_symlink():
        raise PluginInstallError(f"{link} exists and is not alldata's link; move it away, or set FIFTYONE_PLUGINS_DIR "
                                 "to another folder, then run `alldata plugin` again")
    try:
        root.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():  # a link left by another checkout or virtual environment
            link.unlink()
        os.symlink(plugin_dir(), link, target_is_directory=True)
    except OSError as e:
        raise PluginInstallError(f"cannot link the alldata plugin into {root}: {e}; set FIFTYONE_PLUGINS_DIR to a "
                                 "writable folder and run `alldata plugin` again") from None
    return link


def uninstall_plugin(plugins_dir: str | Path | None = None) -> Path | None:
    """Remove the link (only alldata's); returns what was removed, or None."""
    link = installed_at(plugins_dir)
    if link is not None:
        link.unlink()
    return link
