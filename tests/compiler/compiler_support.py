"""Shared pieces of the compiler tests: the model under test, inputs, plans and sinks."""
# `trace` is re-exported for the tests: the tracer the compiler itself uses.

from __future__ import annotations

from collections import defaultdict

import torch
import transformers

from expc.compiler.plan import CaptureEntry, EffectEntry, InterventionEntry, MetricEntry, Plan
from expc.models.hydra_split import HydraSplit
from expc.models.loading import load_model
from expc.models.tracing import trace
from expc.spec import ir
from expc.spec.run_format import capture_key, effect_key, importance_key, intervention_key

N_LAYERS, TRUNK, HEADS = 4, 2, 3
LAYOUT = HydraSplit(n_layers=N_LAYERS, trunk=TRUNK, n_heads=HEADS)


def make_model() -> torch.nn.Module:
    """The built-in tiny Llama (4 layers, hidden 64) split into a 2-layer trunk and 3 heads."""
    return load_model("builtin:tiny-llama", hydra=ir.Hydra(trunk=TRUNK, heads=HEADS))


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids `[3, 7]`; the mask pads the second row on the right, the third on the left."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (3, 7), generator=generator)
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [0] * 3 + [1] * 4])
    return ids, mask


def capture(site: str, layer: int | None = None, head: int | None = None, *,
            mode: str = "full") -> CaptureEntry:
    """An entry keyed like the plan keys it (contracts §3)."""
    return CaptureEntry(key=capture_key(site, layer, head), site=site, name=site,
                        layer=layer, head=head, mode=mode)


def metric(name: str, module: str, layer: int, head: int | None = None) -> MetricEntry:
    path = LAYOUT.module_path(module, layer, head)
    return MetricEntry(key=importance_key(name, path), metric=name, module=module,
                       module_path=path, layer=layer, head=head)


def intervention(target: str, layer: int, head: int | None, *, kind: str = "site",
                 layout: HydraSplit = LAYOUT) -> InterventionEntry:
    """An entry as `build_plan` makes it (`scale = 2` as the IR's operation; the edit
    function the test passes is what actually runs)."""
    ir_node = ir.Intervention(target=target, target_kind=kind,
                              layers=ir.IndexSelector(items=(layer,)),
                              operation=ir.Operation(kind="scale", scale=2.0))
    key = intervention_key(target, layer, head, "channels").removesuffix("/channels")
    return InterventionEntry(
        key=key, kind=kind, target=target, site=target if kind == "site" else None,
        module_path=None if kind == "site" else layout.module_path(target, layer, head),
        layer=layer, head=head, intervention=ir_node)


def effect(metric_name: str, head: int | None, reference: int | None = None, *,
           at: tuple[str, int] | None = None) -> EffectEntry:
    site, layer = at or (None, None)
    ir_node = ir.Effect(metric=metric_name, reference=reference, at_site=site, at_layer=layer)
    return EffectEntry(key=effect_key(metric_name, head), metric=metric_name, head=head,
                       reference=reference, effect=ir_node)


def plan_of(*entries, layout: HydraSplit = LAYOUT) -> Plan:
    def of(kind):
        return tuple(e for e in entries if isinstance(e, kind))
    return Plan(layout=layout, captures=of(CaptureEntry), metrics=of(MetricEntry),
                interventions=of(InterventionEntry), effects=of(EffectEntry))


def doubling(x: torch.Tensor) -> torch.Tensor:
    """The edit the intervention tests apply: easy to write out again in a forward hook."""
    return 2 * x


class EditRecorder:
    """Edits that apply `edit` and keep what each key's edit was given and gave back."""

    def __init__(self, plan: Plan, edit=doubling):
        self.seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)
        self.edits = {e.key: self._edit(e.key, edit) for e in plan.interventions}

    def _edit(self, key: str, edit):
        def run(x: torch.Tensor) -> torch.Tensor:
            y = edit(x)
            self.seen[key].append((x.detach().clone(), y.detach().clone()))
            return y
        return run


class Recorder:
    """Sinks that keep every call's tensors, per key."""

    def __init__(self, plan: Plan):
        self.calls: dict[str, list[tuple[torch.Tensor, ...]]] = defaultdict(list)
        self.sinks = {key: self._sink(key) for key in plan.keys}

    def _sink(self, key: str):
        def sink(*tensors: torch.Tensor) -> None:
            self.calls[key].append(tuple(t.detach().clone() for t in tensors))
        return sink

    def one(self, key: str) -> tuple[torch.Tensor, ...]:
        """The tensors of the single call a key received."""
        assert len(self.calls[key]) == 1, (key, len(self.calls[key]))
        return self.calls[key][0]


def tiny_hf_bert() -> transformers.BertModel:
    """A 3-layer random Hugging Face BERT (97 tokens, hidden 32, 4 heads) to compare with."""
    config = transformers.BertConfig(vocab_size=97, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=3, num_attention_heads=4,
                                     max_position_embeddings=40, type_vocab_size=2)
    hf = transformers.BertModel(config, add_pooling_layer=False).eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            base = 1.0 if name.endswith("LayerNorm.weight") else 0.0
            param.copy_(base + 0.05 * torch.randn(param.shape, generator=generator))
    return hf
