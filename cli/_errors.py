"""User errors for the command line, as click exceptions (after flask's cli).

`Command` is the one place a `DiagnosticError` raised inside a command becomes the click
exception that prints the diagnostics and exits 1; no command catches it itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import click

from expc.spec.diagnostics import RENDERERS, Diagnostic, DiagnosticError


class DiagnosticsFailed(click.ClickException):
    """Exit 1 after printing diagnostics (a bad spec, bad data, a bad checkpoint)."""

    exit_code = 1

    def __init__(self, diagnostics: Iterable[Diagnostic], fmt: str = "text"):
        super().__init__(RENDERERS[fmt](tuple(diagnostics)))
        self.fmt = fmt

    def show(self, file=None) -> None:
        click.echo(self.message, err=self.fmt == "text", file=file)


class Command(click.Command):
    """A command whose `DiagnosticError`s exit 1, rendered in the format its `format_param`
    chose (one of `RENDERERS`; plain text for a command without one)."""

    def __init__(self, *args, format_param: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.format_param = format_param

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DiagnosticError as exc:
            fmt = "text" if self.format_param is None else ctx.params[self.format_param]
            raise DiagnosticsFailed(exc.diagnostics, fmt) from None
