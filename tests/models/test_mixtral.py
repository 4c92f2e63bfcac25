"""Mixtral (sparse mixture of experts) against `transformers`: every capture site, the
router logits, the logits, a Hydra split, fp32 and bf16 (the finer sites in both dtypes are
in `test_finer_sites.py`); what `expc check` says about the MoE's sites and roles; the
loader's diagnostics on a Mixtral checkpoint."""

import json

import pytest
import torch
import transformers
from arch_parity import PRE_NORM_MODULES, _ids, assert_sites_match, eager, hf_sites, our_sites
from dtype_parity import assert_site_close

from expc.models.loading import load_model
from expc.compiler.nodes import is_marker
from expc.models.tracing import trace
from expc.spec import ir
from expc.spec.diagnostics import DiagnosticError, Span
from expc.spec.loader import check_file
from expc.spec.model_shape import ARCHITECTURES, read_model_shape
from expc.spec.vocabulary import PLANNED_SITES

# 4 experts, 2 per token, a window of 4 < 10 tokens: routing and the window both matter.
MIXTRAL = dict(vocab_size=61, hidden_size=32, intermediate_size=24, num_hidden_layers=4,
               num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
               num_experts_per_tok=2, max_position_embeddings=128, rms_norm_eps=1e-6,
               tie_word_embeddings=False, pad_token_id=0, sliding_window=4)
BATCH = 2  # arch_parity's inputs are [2, 10]; HF's router flattens them to [20, n_experts]
MODULES = {**PRE_NORM_MODULES,  # mlp_out = HF's MixtralSparseMoeBlock output
           "router": ("mlp.gate", lambda _in, out: out[0].unflatten(0, (BATCH, -1)))}


def _hf(**overrides):
    return transformers.MixtralForCausalLM(transformers.MixtralConfig(**{**MIXTRAL, **overrides}))


@pytest.mark.parametrize("trunk", [None, 2])
def test_every_site_the_router_and_the_logits_match_hugging_face(tmp_path, trunk):
    assert_sites_match(_hf(), tmp_path, trunk=trunk, modules=MODULES)


def test_one_expert_per_token_and_full_attention(tmp_path):
    assert_sites_match(_hf(num_experts_per_tok=1, sliding_window=None, tie_word_embeddings=True),
                       tmp_path, trunk=1, modules=MODULES)


def test_bfloat16_every_site_the_router_and_the_logits_match_hugging_face(tmp_path):
    """Like for like, both in bfloat16, within what bfloat16 does to Hugging Face itself
    (`dtype_parity`). The float32-relative bound of the dense families (`bf16_logits_close`)
    does not fit an MoE: rounding flips some tokens' choice of expert, and Hugging Face's
    own bfloat16 logits stray by 12% of their largest value here."""
    hf = eager(_hf())
    ids = _ids()
    exact = hf_sites(hf, ids, MODULES)
    hf = hf.to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    theirs = hf_sites(hf, ids, MODULES)
    ours = load_model(tmp_path, hydra=ir.Hydra(trunk=2, heads=2), dtype="bfloat16")
    mine = our_sites(ours, ids, ("router",))
    assert {(site, layer) for site, layer, _ in mine} == set(theirs)
    for (site, layer, head), value in mine.items():
        assert_site_close(value, theirs[site, layer], exact[site, layer].float(),
                          f"{site}[{layer}] head {head}")


def test_experts_load_as_llama_mlps_and_trace_as_modules(tmp_path):
    hf = _hf()
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    moe = model.layers["1"].mlp
    assert (model.config.n_experts, model.config.top_k) == (4, 2)
    assert model.config.sliding_windows == (4,) * 4
    gate_up = hf.model.layers[1].mlp.experts.gate_up_proj[3]  # HF fuses [gate | up] in memory
    assert torch.equal(moe.experts[3].gate_proj.weight, gate_up[:24])
    assert torch.equal(moe.experts[3].up_proj.weight, gate_up[24:])
    assert torch.equal(moe.experts[3].down_proj.weight, hf.model.layers[1].mlp.experts.down_proj[3])
    graph = trace(model).graph
    called = {n.target for n in graph.nodes if n.op == "call_module"}
    assert {"layers.1.mlp.gate", "layers.1.mlp.experts.3.down_proj"} <= called
    marked = {n.args[1] for n in graph.nodes if is_marker(n) and n.args[2] == 1}
    assert marked == set(ARCHITECTURES["mixtral"].layer_sites) - set(PLANNED_SITES)
    assert "router" in marked and "mlp_post" not in marked


def test_check_knows_the_moe_sites_and_roles(tmp_path, monkeypatch):
    _hf().save_pretrained(tmp_path / "mixtral")
    shape = read_model_shape(str(tmp_path / "mixtral"), span=Span(path="spec.exp"))
    assert shape.n_experts == 4 and "mlp.gate" in shape.linear_modules
    assert "router" in shape.facts.sites and "mlp_post" not in shape.facts.sites
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text('{"text": "hi"}\n')

    def diagnose(body: str, model: str = "mixtral") -> dict:
        (tmp_path / "spec.exp").write_text(
            f'experiment t {{\n    model = "{model}"\n    data {{ source = jsonl("data.jsonl") '
            f'}}\n    {body}\n}}\n')
        return {d.code: d for d in check_file("spec.exp", check_model=True)}

    assert diagnose("capture router[*]\n    importance l2_norm at mlp.gate[0]") == {}
    found = diagnose("importance l2_norm at mlp.down_proj[0]")["module"]
    assert "mixtral models have no `mlp.down_proj`" in found.message
    assert "`mlp.experts.E.down_proj`" in found.message and "not supported yet" in found.message
    found = diagnose("capture mlp_post[0]")["site"]
    assert "mixtral models have no `mlp_post`" in found.message and "`mlp_out`" in found.message
    found = diagnose("intervene mlp_post[1] { set = zero }")["site"]
    assert "mixtral models have no `mlp_post`" in found.message and found.span.line == 4
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "no_such_moe"}')
    assert "mixtral" in " ".join(diagnose("capture router[0]", model="other")["model"].help)
    found = diagnose("capture router[0]", model="builtin:tiny-llama")["site"]
    assert "llama models have no `router`" in found.message and "mixture-of-experts" in found.message


def test_too_many_experts_per_token_is_a_diagnostic_at_its_line(tmp_path):
    _hf().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["num_experts_per_tok"] = 5
    path.write_text(json.dumps(config, indent=2))
    with pytest.raises(DiagnosticError) as caught:
        load_model(tmp_path)
    (diagnostic,) = caught.value.diagnostics
    assert "num_experts_per_tok" in diagnostic.message and diagnostic.span.line > 1


def test_a_missing_expert_is_named_in_mixtral_s_own_words(tmp_path):
    from safetensors.torch import load_file, save_file

    _hf().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["model.layers.2.block_sparse_moe.experts.1.w2.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(DiagnosticError) as caught:
        load_model(tmp_path)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "checkpoint-missing-tensor"
    assert "model.layers.2.block_sparse_moe.experts.1.w2.weight" in diagnostic.message


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_moe_block_computes_hugging_face_s_numbers_on_the_same_input(tmp_path, dtype):
    """On one input, free of the attention's rounding upstream, our `SparseMoE` routes every
    token as Hugging Face does (the router logits bit for bit) and its output is theirs to
    two rounding steps of the largest value (fused against split gate/up matmuls); a token
    sent to another expert would be off by the size of the output itself."""
    hf = eager(_hf()).to(dtype)
    hf.save_pretrained(tmp_path)
    theirs = hf.model.layers[1].mlp
    mine = load_model(tmp_path, dtype=dtype).layers["1"].mlp
    x = torch.randn(2, 10, 32, generator=torch.Generator().manual_seed(5)).to(dtype)
    with torch.no_grad():
        logits = theirs.gate(x.reshape(-1, 32))[0]
        want, got = theirs(x.clone()), mine(x)
        torch.testing.assert_close(mine.gate(x).reshape(-1, 4), logits, atol=0, rtol=0)
    step = torch.finfo(dtype).eps * want.abs().max().item()  # one step at the top
    torch.testing.assert_close(got, want, atol=2 * step, rtol=0)
