"""`HydraSplit`: the spec's `hydra` block resolved against a model with `n_layers` layers.

`expc.spec.ir.Hydra` is what the user wrote (`trunk`, `heads`); `HydraSplit` is what it
means for one model: layers `0..trunk-1` shared, every one of `n_heads` heads holding its
own modules for the rest (`trunk = 0` shares only the embeddings; `trunk = auto` is the
deepest trunk that keeps every intervention inside the heads). It is the one type for that
fact — the model builds its layers from it, the compiler's plan reads which heads a layer has
and the module path in each head, the runtime records it in the manifest — and
`HydraSplit.of` is the one place the IR becomes it, with the diagnostics for a split the
model cannot take.

It lives in models/ because what it answers is the `HydraTransformer`'s module layout
(`layers.{L}` in the trunk, `heads.{h}.layers.{L}` in a head, global `L`) and it needs the
layer count of a loaded config; the compiler and the runtime sit above models and may
import it. It imports no torch, so a plan can be built without a model. (`expc check`
checks the `hydra` block against the model's shape itself, with spans, before any of this.)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import attrs

from expc.spec import ir
from expc.spec.diagnostics import fail
from expc.spec.intervention_checks import deepest_trunk


@attrs.frozen(kw_only=True)
class HydraSplit:
    """Layers `0..trunk-1` are shared; each of `n_heads` heads owns layers `trunk..n_layers-1`."""

    n_layers: int
    trunk: int
    n_heads: int = 1

    @classmethod
    def single(cls, n_layers: int) -> HydraSplit:
        """No `hydra` block: one head, every layer in the trunk."""
        return cls(n_layers=n_layers, trunk=n_layers)

    @classmethod
    def of(cls, hydra: ir.Hydra | None, *, n_layers: int, interventions: Iterable[ir.Intervention] = (),
           source: str | Path | None = None) -> HydraSplit:
        """The split `hydra` asks of an `n_layers`-layer model.

        `trunk = auto` (`hydra.trunk is None`) resolves against `interventions` with
        `auto_trunk`. Errors point at `source` (the model's config, say) or else at the
        spec's `hydra` block.
        """
        if hydra is None:
            return cls.single(n_layers)
        trunk = auto_trunk(interventions, n_layers=n_layers) if hydra.trunk is None else hydra.trunk
        if not 0 <= trunk < n_layers:
            raise fail(hydra.trunk_span if source is None else source,
                       f"hydra trunk must be between 0 and {n_layers - 1} for a "
                       f"{n_layers}-layer model, got {trunk}", code="hydra-trunk")
        if hydra.heads < 1:
            raise fail(hydra.span if source is None else source,
                       f"hydra needs at least one head, got {hydra.heads}", code="hydra-heads")
        if hydra.head_models and len(hydra.head_models) != hydra.heads:
            raise fail(hydra.span if source is None else source,
                       f"hydra head_models names {len(hydra.head_models)} checkpoints for "
                       f"{hydra.heads} heads", code="hydra-heads",
                       help=("give one checkpoint folder per head",))
        return cls(n_layers=n_layers, trunk=trunk, n_heads=hydra.heads)

    @property
    def is_split(self) -> bool:
        """Whether layers sit in heads (then their keys and markers carry `head{h}`)."""
        return self.trunk < self.n_layers

    @property
    def head_layers(self) -> range:
        """The global layers every head holds its own modules for (empty without a split)."""
        return range(self.trunk, self.n_layers)

    def heads_of_layer(self, layer: int, selector: ir.IndexSelector | None) -> tuple[int | None, ...]:
        """`(None,)` for a trunk layer; the selected heads for a layer inside the heads."""
        if layer < self.trunk:
            return (None,)
        return self.selected_heads(selector)

    def selected_heads(self, selector: ir.IndexSelector | None) -> tuple[int, ...]:
        """The heads an `of heads[...]` selector picks; every head without one."""
        return tuple(range(self.n_heads)) if selector is None else selector.resolve(self.n_heads)

    def layer_path(self, layer: int, head: int | None) -> str:
        """The layer's qualified name in the Hydra model, e.g. `heads.1.layers.3`."""
        prefix = "" if head is None else f"heads.{head}."
        return f"{prefix}layers.{layer}"

    def module_path(self, module: str, layer: int, head: int | None) -> str:
        """The module's qualified name in the Hydra model, e.g. `heads.1.layers.3.mlp.down_proj`."""
        return f"{self.layer_path(layer, head)}.{module}"


def auto_trunk(interventions: Iterable[ir.Intervention], *, n_layers: int) -> int:
    """`trunk = auto` (`spec.intervention_checks.deepest_trunk`), with a layer out of range
    a diagnostic (`expc check` reports it first; this keeps an unchecked spec one too)."""
    interventions = tuple(interventions)
    for intervention in interventions:
        selector = intervention.layers
        bad = selector.out_of_range(n_layers)
        if bad:
            raise fail(selector.span_of(bad[0]), f"layer {bad[0]} is out of range for a "
                       f"{n_layers}-layer model", code="range")
    return deepest_trunk(interventions, n_layers)
