"""Effect taps: feed each effect's sink the head's value and the reference head's, and each
metric of whole layers its layer's markers.

Per `EffectEntry`, one `Tap` (compiler/taps.py) is called with:
- `kl`, `top1`: (head logits, reference logits), the `logits` markers of the two heads;
- `cosine`: (head value, reference value), the markers of `at = SITE[L]` in the two heads
  (one trunk marker for both when L is a trunk layer);
- `loss`, `logit_diff`: (head logits,).
Per `MetricEntry` of whole layers (`importance block_influence at layers[...]`), one tap is
called with the markers of its `sites` at its layer and head — (resid_in, resid_out), which
the metric's sink takes as a module's (input, output).
The tap is fed the marker nodes themselves, so it sees what a capture there sees — the
edited value where an intervention sits at that site — and keeps seeing it once instrument
and strip replace the markers by their inputs. Taps are impure, so prune keeps every head an
effect reads, the reference included. Runs after `intervene` and before `instrument`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch.fx as fx

from expc.compiler.manager import graph_pass
from expc.compiler.plan import EffectEntry, MetricEntry, Plan
from expc.compiler.resolve import locate, site_key, unresolved
from expc.compiler.taps import add_tap, callback_for, ignore
from expc.models.hydra_split import HydraSplit
from expc.spec.diagnostics import DiagnosticError

PAIRED = ("kl", "top1", "cosine")  # compared with the `vs` reference head


def _places(layout: HydraSplit, entry: EffectEntry | MetricEntry) -> tuple[tuple, ...]:
    """The markers feeding `entry`: the head's, then the reference's for paired metrics; a
    layer metric's sites at its layer and head, in order."""
    if isinstance(entry, MetricEntry):
        return tuple(site_key(site, entry.layer, entry.head) for site in entry.sites)
    heads = (entry.head, entry.reference) if entry.metric in PAIRED else (entry.head,)
    if entry.metric == "cosine":
        site, layer = entry.effect.at_site, entry.effect.at_layer
        return tuple(site_key(site, layer, None if layer < layout.trunk else h) for h in heads)
    return tuple(site_key("logits", None, h if layout.is_split else None) for h in heads)


@graph_pass
def effect_taps(gm: fx.GraphModule, *, plan: Plan,
                sinks: Mapping[str, Callable] | None) -> fx.GraphModule:
    """Add one tap per effect entry and per metric of whole layers; `sinks=None` taps into
    no-op sinks."""
    graph = gm.graph
    places = [(entry, _places(plan.layout, entry))
              for entry in (*plan.layer_metrics, *plan.effects)]
    found = locate(graph, (key for _, keys in places for key in keys))
    missing = [(entry, key) for entry, keys in places for key in keys if key not in found]
    if missing:
        raise DiagnosticError(unresolved(e.span, key, e.key) for e, key in missing)
    order = {node: i for i, node in enumerate(graph.nodes)}
    for entry, keys in places:
        fed = tuple(found[key] for key in keys)
        target = add_tap(gm, key=entry.key, sink=callback_for(
            sinks, entry.key, default=ignore, what="sink"))
        with graph.inserting_after(max(fed, key=order.__getitem__)):
            graph.call_module(target, fed)
    return gm
