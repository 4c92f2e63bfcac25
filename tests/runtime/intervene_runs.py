"""Earlier run folders for the intervention tests, written by hand (manifest + results), and
the specs of the end-to-end runs on a saved checkpoint."""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

import expc

from expc.compiler.plan import InterventionEntry
from expc.spec import ir
from expc.spec.diagnostics import Span
from expc.spec.run_format import FORMAT, MANIFEST, RESULTS

SPAN = Span(path="exp.exp", line=4, col=5, end_col=20)


def write_run(folder: Path, tensors: dict[str, torch.Tensor], *, status: str = "complete",
              aggregates: dict[str, str] | None = None) -> str:
    """A run folder holding `tensors`; `aggregates` gives capture keys' manifest modes."""
    folder.mkdir(parents=True, exist_ok=True)
    described = {key: {"kind": "capture", "aggregate": mode}
                 for key, mode in (aggregates or {}).items()}
    manifest = {"format": FORMAT, "status": status, "tensors": described}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    if tensors:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / RESULTS))
    return str(folder)


def entry(*, operation: ir.Operation, kind: str = "site", target: str = "resid_out",
          layer: int = 1, head: int | None = 1, channels: ir.Units | None = None,
          positions: ir.Positions | None = None) -> InterventionEntry:
    """One plan entry as the compiler's plan builds it."""
    module_path = None
    if kind != "site":
        prefix = "" if head is None else f"heads.{head}."
        module_path = f"{prefix}layers.{layer}.{target}"
    intervention = ir.Intervention(
        target=target, target_kind=kind, layers=ir.IndexSelector(items=(layer,)),
        operation=operation, channels=channels,
        positions=positions or ir.Positions(kind="all"), span=SPAN)
    head_part = "" if head is None else f"head{head}/"
    return InterventionEntry(key=f"intervention/{head_part}{target}_{layer}", kind=kind,
                             target=target, site=target if kind == "site" else None,
                             module_path=module_path, layer=layer, head=head,
                             intervention=intervention, span=SPAN)


def spec(folder: Path, name: str, *, data: str, body: str, hydra: str = "") -> ir.Experiment:
    """The checked spec `name` on `folder/ckpt` with pre-tokenised `folder/data`, batches of
    2 (padded), writing to `folder/name`."""
    path = folder / f"{name}.exp"
    path.write_text(f"""
experiment {name} {{
    model = "{folder / 'ckpt'}"
    {hydra}
    data {{
        source     = tokens("{folder / data}")
        batch_size = 2
    }}
    {body}
    output {{ dir = "{folder / name}" }}
}}
""")
    return expc.load(path)
