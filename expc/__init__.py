"""expc: a declarative language and compiler for activation experiments on transformers.

The repository keeps the design card's folders at its root (`grammar/`, `spec/`, `models/`,
`compiler/`, `runtime/`, `report/`, `cli/`); installed, each is a subpackage of `expc`.
The notebook API below imports its machinery on first use, so `import expc` stays cheap and
`expc check` never imports torch:

    spec = expc.load("examples/quickstart.exp", overrides=["data.limit=16"])
    results = expc.run(spec, out="runs/nb")          # an ActivationCache-like `Results`
    compiled = expc.compile(spec)                    # instrumented fx graph + plan
    run = expc.open_run("runs/nb")                   # read a run folder back
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the real types, without importing torch at `import expc`
    from expc.compiler.pipeline import Compiled
    from expc.models.hydra import HydraTransformer
    from expc.runtime.cache import Results
    from expc.runtime.store import Run
    from expc.spec.ir import Experiment

__version__ = importlib.metadata.version("expc")  # pyproject.toml is the one home of the version


def load(path: str | Path, *, overrides: Sequence[str] = (),
         check_model: bool = True) -> Experiment:
    """Parse and check a spec file into its IR (`expc.spec.ir.Experiment`)."""
    from expc.spec import load as load_spec

    return load_spec(path, overrides=tuple(overrides), check_model=check_model)


def compile(experiment: Experiment, *, model: HydraTransformer | None = None,  # noqa: A001
            sinks: Mapping[str, Callable] | None = None) -> Compiled:
    """Compile a checked experiment into an instrumented graph (`Compiled`).

    Without `model`, the spec's model is loaded; without `sinks`, taps do nothing.
    """
    from expc.compiler.pipeline import compile_experiment
    from expc.models.loading import load_model
    from expc.runtime.device import resolve_device

    if model is None:
        device = resolve_device(experiment.device, span=experiment.device_span)
        model = load_model(experiment.model.path, hydra=experiment.hydra,
                           interventions=experiment.interventions,
                           dtype=experiment.dtype, device=device)
    return compile_experiment(experiment, model, sinks)


def run(spec: str | Path | Experiment, *, out: str | Path | None = None,
        overrides: Sequence[str] = (), resume: bool = False, force: bool = False,
        quiet: bool = True) -> Results:
    """Run a spec (a path, or an IR from `expc.load`) and return its `Results`.

    Applies the same process settings as `expc run` (`expc.runtime.process`); they take full
    effect only when torch has not been imported yet.
    """
    from expc.runtime.process import apply_run_settings

    apply_run_settings()
    from expc.runtime.execute import RunRequest, run_experiment
    from expc.runtime.execute import run as run_file

    out_dir = None if out is None else Path(out)
    if isinstance(spec, (str, Path)):
        return run_file(RunRequest(spec_path=Path(spec), overrides=tuple(overrides),
                                   out_dir=out_dir, resume=resume, force=force, quiet=quiet))
    spec_path, text = _recorded_spec(spec)
    return run_experiment(spec, spec_path=spec_path, spec_text=text, out_dir=out_dir,
                          resume=resume, force=force, quiet=quiet)


# Appended to a loaded file's text: `expc.load` may have applied overrides the file lacks.
IR_NOTE = ("\n# run from Python on the experiment `expc.load` returned: the manifest's `ir` "
           "is the experiment as run, overrides included\n")


def _recorded_spec(experiment: Experiment) -> tuple[str, str]:
    """The spec path and text a run of a loaded IR records: its file when it has one.

    An IR built in code has no file; its JSON stands in for the text, under `<ir>`.
    """
    source = Path(experiment.path) if experiment.path else None
    if source is not None and source.is_file():
        return str(source), source.read_text(encoding="utf-8") + IR_NOTE
    import json

    from expc.spec import to_json

    return "<ir>", json.dumps(to_json(experiment), sort_keys=True)


def open_run(run_dir: str | Path) -> Run:
    """Read a run folder back: manifest plus lazily loaded tensors."""
    from expc.runtime.store import open_run as open_run_folder

    return open_run_folder(run_dir)
