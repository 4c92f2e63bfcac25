"""`expc compile FILE --emit graph|code|dot`."""

from __future__ import annotations

import re

import attrs
import pytest
from click.testing import CliRunner

from expc import spec
from expc.cli.compile import command
from expc.compiler.emit import emit, emit_dot, plan_graph
from expc.compiler.plan import build_plan
from expc.spec import ir

QUICKSTART = "examples/quickstart.exp"


def _emit(what: str, *extra: str) -> str:
    result = CliRunner().invoke(command, [QUICKSTART, "--emit", what, *extra])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def plan():
    return build_plan(spec.load(QUICKSTART), n_layers=4)


def test_graph_shows_one_tap_per_key_and_no_markers(plan):
    text = _emit("graph")
    assert text.startswith("graph():")
    taps = re.findall(r"call_module\[target=expc_taps\.(\w+)\]", text)
    assert len(taps) == len(plan.keys)
    assert "target=expc.models.markers.mark]" not in text


def test_code_is_the_python_that_runs(plan):
    code = _emit("code")
    assert "def forward(self, input_ids" in code
    assert len(re.findall(r"= self\.expc_taps\.\w+\(", code)) == len(plan.keys)
    compile(code, "<emitted>", "exec")  # valid Python
    assert "lm_head" not in code  # no logits captured: pruned


def _dot_edges(dot: str) -> set[tuple[str, str]]:
    return set(re.findall(r'^  "([^"]+)" -> "([^"]+)"', dot, flags=re.M))


def _dot_nodes(dot: str) -> dict[str, str]:
    return dict(re.findall(r'^  "([^"]+)" \[(.*)\];$', dot, flags=re.M))


def test_dot_draws_the_trunk_fanning_out_into_heads_with_taps(plan):
    dot = _emit("dot")
    assert dot.startswith('digraph "quickstart" {') and dot.rstrip().endswith("}")
    edges = _dot_edges(dot)
    assert {("layers.1", f"head{h}/layers.2") for h in range(3)} <= edges
    assert ("embed", "layers.0") in edges
    assert ("head1/layers.3", "capture/head1/resid_last_3") in edges
    assert ("layers.0", "importance/l2_norm/layers.0.mlp.down_proj") in edges
    nodes = _dot_nodes(dot)
    assert set(plan.keys) <= set(nodes)
    assert 'label="capture/attn_out_1\\nfull"' in nodes["capture/attn_out_1"]
    assert "dashed" in nodes["head0/final_norm"] and "dashed" in nodes["head2/logits"]
    assert "dashed" not in nodes["head2/layers.3"]
    assert edges == set(plan_graph(plan).edges)


def test_dot_keeps_what_a_logits_capture_needs(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hi"}\n')
    path = tmp_path / "l.exp"
    path.write_text(f"""experiment l {{
        model = "builtin:tiny-llama"
        hydra {{ trunk = 1
            heads = 2 }}
        data {{ source = jsonl("{data}", field = "text") }}
        capture logits of heads[1] {{ aggregate = mean(mask = last) }}
        output {{ dir = "runs/l" }}
    }}
    """)
    nodes = _dot_nodes(emit_dot(build_plan(spec.load(path), n_layers=4)))
    assert "dashed" not in nodes["head1/final_norm"] and "dashed" not in nodes["head1/layers.3"]
    assert "dashed" in nodes["head0/layers.1"]


def test_graph_views_need_the_model():
    result = CliRunner().invoke(command, [QUICKSTART, "--emit", "graph", "--no-model"])
    assert result.exit_code == 2
    assert "needs the model" in result.output


@pytest.fixture(scope="module")
def edited():
    """The quickstart with an intervention per kind of target and two effects (IR built
    directly: the language's parser for them lives elsewhere)."""
    def at(target, kind, layer, head, operation):
        return ir.Intervention(target=target, target_kind=kind, operation=operation,
                               layers=ir.IndexSelector(items=(layer,)),
                               heads=ir.IndexSelector(items=(head,)))
    interventions = (
        at("mlp_out", "site", 3, 1, ir.Operation(kind="zero")),
        at("mlp.down_proj", "linear", 2, 2, ir.Operation(kind="scale", scale=0.5)),
        at("post_attention_layernorm", "norm", 3, 2, ir.Operation(kind="mean", run="runs/a")),
    )
    effects = (ir.Effect(metric="kl", reference=0),
               ir.Effect(metric="loss", heads=ir.IndexSelector(items=(2,))),
               ir.Effect(metric="cosine", reference=0, at_site="resid_out", at_layer=3))
    return attrs.evolve(spec.load(QUICKSTART), interventions=interventions, effects=effects)


def test_graph_shows_each_edit_by_name_and_each_effect_tap(edited):
    text = emit(edited, "graph")
    edits = re.findall(r"call_module\[target=expc_edits\.(\w+)\]", text)
    assert edits == ["e0_intervention_head1_mlp_out_3", "e1_intervention_head2_mlp_down_proj_2",
                     "e2_intervention_head2_post_attention_layernorm_3"]
    taps = re.findall(r"call_module\[target=expc_taps\.\w+?_(effect_\w+)\]", text)
    assert sorted(taps) == sorted(["effect_kl_head1", "effect_kl_head2", "effect_loss_head2",
                                   "effect_cosine_head1", "effect_cosine_head2"])


def test_dot_draws_interventions_and_effects(edited):
    dot = emit(edited, "dot")
    edges, nodes = _dot_edges(dot), _dot_nodes(dot)
    assert ("intervention/head1/mlp_out_3", "head1/layers.3") in edges
    assert ("intervention/head2/mlp.down_proj_2", "head2/layers.2") in edges
    norm = nodes["intervention/head2/post_attention_layernorm_3"]
    assert 'set = mean(run = \\"runs/a\\")' in norm
    assert "scale = 0.5" in nodes["intervention/head2/mlp.down_proj_2"]
    assert {("head1/logits", "effect/kl/head1"), ("head0/logits", "effect/kl/head1"),
            ("head2/logits", "effect/loss/head2"), ("head2/layers.3", "effect/cosine/head2"),
            ("head0/layers.3", "effect/cosine/head2")} <= edges
    assert "kl vs head0" in nodes["effect/kl/head2"]
    assert "dashed" not in nodes["head0/logits"]  # the reference head is needed
