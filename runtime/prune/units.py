"""What `expc prune` removes for a metric and module: MLP neurons, KV-head groups or layers.

A unit kind is decided by where the scores sit, never guessed from their values: a metric
that scores `mlp.down_proj`'s input channels scores the MLP's neurons, `kv_head_contribution`
at `self_attn.o_proj` scores whole KV-head groups, and `block_influence` (keys
`importance/block_influence/layers.{L}/score`) scores whole layers. Every other pairing is a
diagnostic listing these. How many units go is the rule interventions count by
(`expc.runtime.intervene.units`): `round(fraction * D)` with Python's `round`, or `D - keep`,
and it must remove at least one unit and keep at least one.
"""

from __future__ import annotations

import attrs

from expc.spec.diagnostics import fail

CODE = "prune-units"
LAYERS_MODULE = "layers"  # the module of a per-layer score: `layers.{L}`


@attrs.frozen(kw_only=True)
class UnitKind:
    """One kind of unit a checkpoint can lose, with the scores that choose it."""

    name: str  # "neurons" | "kv_heads" | "layers"
    module: str  # the scored module role (`layers` for a per-layer score)
    metrics: tuple[str, ...]  # the metrics whose scores at `module` rank these units
    config_field: str  # what shrinks in config.json


KINDS = (
    UnitKind(name="neurons", module="mlp.down_proj", config_field="intermediate_size",
             metrics=("channel_contribution", "l2_norm", "iterative_channel")),
    UnitKind(name="kv_heads", module="self_attn.o_proj", config_field="num_key_value_heads",
             metrics=("kv_head_contribution",)),
    UnitKind(name="layers", module=LAYERS_MODULE, config_field="num_hidden_layers",
             metrics=("block_influence",)),
)


def _choices() -> str:
    return "; ".join(f"{' / '.join(k.metrics)} at {k.module} ({k.name.replace('_', ' ')})"
                     for k in KINDS)


def unit_kind(metric: str, module: str | None, *, where: str) -> UnitKind:
    """The unit kind of `metric` at `module` (default: the module that metric scores)."""
    for kind in KINDS:
        if metric in kind.metrics and module in (None, kind.module):
            return kind
    at = "" if module is None else f" at `{module}`"
    raise fail(where, f"`expc prune` cannot remove units by `{metric}`{at}", code=CODE,
               help=(f"prunable scores: {_choices()}",))


def removed_count(total: int, *, fraction: float | None, keep: int | None, what: str,
                  where: str) -> int:
    """How many of `total` units go: `round(fraction * total)` or `total - keep`."""
    removed = round(fraction * total) if fraction is not None else total - keep
    asked = (f"--fraction {fraction} of {total} {what} (rounds to {removed})"
             if fraction is not None else f"--keep {keep} of {total} {what}")
    if removed >= total:
        raise fail(where, f"{asked} removes every unit", code=CODE,
                   help=(f"keep at least one: remove 1 to {total - 1} of the {total}",))
    if removed < 1:
        raise fail(where, f"{asked} removes nothing", code=CODE,
                   help=(f"remove 1 to {total - 1} of the {total}",))
    return removed
