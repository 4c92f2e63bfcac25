"""`expc compile FILE --emit ir`: show what a spec resolves to.

`ir` is the checked IR after `extends`, `include` and `--set`, as indented text or JSON.
The graph views (`graph`, `code`, `dot`) come from `expc.compiler.emit`. `plan` lists every
result tensor the run will write with its shape, dtype and bytes, and the total, as text or
JSON (`expc.runtime.result_plan`, laid out by `_plan_view`); it reads the model's
config.json and the data, never the weights, and imports no torch.
"""

from __future__ import annotations

import json

import click

from expc.cli._errors import Command
from expc.cli._options import set_option
from expc.spec.ir_json import to_json, to_text
from expc.spec.loader import load

EMITS = ("ir", "graph", "code", "dot", "plan")


@click.command("compile", cls=Command)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--emit", type=click.Choice(EMITS), default="ir", show_default=True,
              help="What to print.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="The IR or the plan as indented text or JSON.")
@click.option("--no-model", is_flag=True, help="Skip the model-shape and file checks.")
@set_option
def command(file: str, emit: str, fmt: str, no_model: bool, overrides: tuple[str, ...]) -> None:
    """Print the resolved IR of FILE, its instrumented fx graph, that graph's code, a DOT
    plan, or the result tensors the run will write (`plan`)."""
    if emit != "ir" and no_model:
        raise click.UsageError(f"--emit {emit} needs the model's config; drop --no-model")
    experiment = load(file, overrides=overrides, check_model=not no_model)
    if emit == "plan":
        from expc.cli._plan_view import plan_json, plan_text
        from expc.runtime.result_plan import plan_results

        plan = plan_results(experiment)
        click.echo((plan_json if fmt == "json" else plan_text)(plan, experiment), nl=False)
        return
    if emit != "ir":
        from expc.compiler.emit import emit as emit_view  # imports torch

        click.echo(emit_view(experiment, emit), nl=False)
        return
    data = to_json(experiment)
    click.echo(json.dumps(data, indent=2) if fmt == "json" else to_text(data))
