"""Options shared by several commands, declared once so their spelling and help agree."""

from __future__ import annotations

import click

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a setting of the spec, e.g. --set data.limit=8 (repeatable).")
