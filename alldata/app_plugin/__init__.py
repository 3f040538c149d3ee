"""alldata as a FiftyOne App plugin: operators and a panel that drive alldata from the App.

This folder is the plugin (``fiftyone.yml`` + this ``__init__.py``, FiftyOne's entry point);
``alldata plugin install`` links it into FiftyOne's plugins directory and ``alldata app``
does so before serving. The operators' work is in :mod:`alldata.app_plugin.actions`, the
panel's in :mod:`alldata.app_plugin.sample_panel`, the FiftyOne classes in
:mod:`alldata.app_plugin.operators` (imported only when FiftyOne registers the plugin).
"""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(p: Any) -> None:
    """FiftyOne's plugin hook (FiftyOne runs this file under its own module name)."""
    from alldata.app_plugin.operators import register as _register

    _register(p)
