"""torch.fx tracing of trunk and heads: markers, leaf modules, and strip == eager."""

import pytest
import torch

from expc.compiler.nodes import is_marker
from expc.compiler.strip import strip
from expc.models import markers
from expc.models.loading import load_model
from expc.models.tracing import trace
from expc.spec import ir
from expc.spec.model_shape import ARCHITECTURES
from expc.spec.vocabulary import PLANNED_SITES


@pytest.fixture(scope="module", params=["builtin:tiny-llama", "builtin:tiny-olmo2"])
def model(request):
    return load_model(request.param, hydra=ir.Hydra(trunk=2, heads=2))


def _batch():
    ids = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    return ids, mask


def _marks(gm):
    return [tuple(node.args[1:]) for node in gm.graph.nodes if is_marker(node)]


def test_every_capture_site_is_one_marker_node(model):
    gm = trace(model)
    marks = _marks(gm)
    assert len(marks) == len(set(marks)), "a site is marked twice"
    per_layer = set(ARCHITECTURES["llama"].layer_sites) - set(PLANNED_SITES)
    expected = {("embed", None, None)}
    expected |= {(site, layer, None) for site in per_layer for layer in (0, 1)}
    expected |= {(site, layer, head) for site in per_layer for layer in (2, 3) for head in (0, 1)}
    expected |= {(site, None, head) for site in ("final_norm", "logits") for head in (0, 1)}
    assert set(marks) == expected
    attention = [n.args[-2:] for n in gm.graph.nodes if n.target is markers.attention]
    assert attention == [(0, None), (1, None), (2, 0), (3, 0), (2, 1), (3, 1)]


def test_linear_and_norm_modules_stay_leaves(model):
    gm = trace(model)
    modules = {node.target for node in gm.graph.nodes if node.op == "call_module"}
    assert "heads.1.layers.3.mlp.down_proj" in modules
    assert "layers.0.self_attn.o_proj" in modules
    assert "norm" in modules and "lm_head" in modules and "embed_tokens" in modules
    assert any(name.endswith("post_attention_layernorm") for name in modules)


def test_traced_and_stripped_graphs_equal_eager(model):
    ids, mask = _batch()
    expected = model(ids, mask)
    gm = trace(model)
    torch.testing.assert_close(gm(ids, mask), expected, atol=0, rtol=0)
    stripped = strip(gm)
    assert not _marks(stripped)
    torch.testing.assert_close(stripped(ids, mask), expected, atol=0, rtol=0)


def test_trace_with_fixed_heads_and_last_token(model):
    ids, mask = _batch()
    gm = trace(model, head_indices=[1], last_token_only=True)
    torch.testing.assert_close(gm(ids, mask), model(ids, mask, [1], True), atol=0, rtol=0)
    assert {head for site, _, head in _marks(gm) if site == "logits"} == {1}


def test_no_split_marks_without_heads():
    gm = trace(load_model("builtin:tiny-llama"))
    assert {head for _, _, head in _marks(gm)} == {None}
    assert ("logits", None, None) in _marks(gm)
