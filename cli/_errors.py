"""User errors for the command line, as click exceptions (after flask's cli)."""

from __future__ import annotations

import click

from expc.spec.diagnostics import Diagnostic, render_github, render_json, render_text


def render(diagnostics: tuple[Diagnostic, ...], fmt: str = "text") -> str:
    """Render diagnostics in one of the contract's formats: text, json or github."""
    if fmt == "json":
        return render_json(diagnostics)
    if fmt == "github":
        return render_github(diagnostics)
    return render_text(diagnostics)


class DiagnosticsFailed(click.ClickException):
    """Exit 1 after printing diagnostics (a bad spec, bad data, a bad checkpoint)."""

    exit_code = 1

    def __init__(self, diagnostics: tuple[Diagnostic, ...], fmt: str = "text"):
        super().__init__(render(diagnostics, fmt))
        self.fmt = fmt

    def show(self, file=None) -> None:
        click.echo(self.message, err=self.fmt == "text", file=file)
