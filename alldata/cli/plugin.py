"""``alldata plugin``: make alldata's operators and panel available in the FiftyOne App."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors

__all__ = ["app"]

app = typer.Typer()


@app.command()
@handle_errors
def plugin(
    plugins_dir: Annotated[
        Path | None, typer.Option(help="FiftyOne plugins directory (default: FIFTYONE_PLUGINS_DIR or ~/fiftyone/__plugins__)")
    ] = None,
    uninstall: Annotated[bool, typer.Option("--uninstall", help="remove the link instead")] = False,
    check: Annotated[bool, typer.Option("--check", help="only say whether it is installed")] = False,
) -> None:
    """Link alldata's App plugin (operators + the 'alldata sample' panel) into FiftyOne's plugins directory.

    `alldata app` does this itself; run it when you serve the App another way, then restart the App.
    """
    from alldata.app_plugin.install import PLUGIN_NAME, install_plugin, installed_at, plugin_dir, uninstall_plugin

    if check:
        at = installed_at(plugins_dir)
        console.print(f"{PLUGIN_NAME}: {'installed at ' + str(at) if at else 'not installed'} (plugin folder {plugin_dir()})",
                      highlight=False, soft_wrap=True)
        if at is None:
            raise typer.Exit(code=1)
        return
    if uninstall:
        gone = uninstall_plugin(plugins_dir)
        console.print(f"removed {gone}" if gone else "nothing to remove: the plugin was not installed", highlight=False)
        return
    link = install_plugin(plugins_dir)
    console.print(f"{PLUGIN_NAME} installed: {link} -> {plugin_dir()}", highlight=False, soft_wrap=True)
    console.print("restart the App (`alldata app NAME`), then press ` (backtick) for the operators, "
                  "or + > 'alldata sample' for the panel", highlight=False)
