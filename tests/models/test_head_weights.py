"""Head weights: heads share the model's tensors (one copy for N heads), or load their own.

Sharing is checked by tensor identity, by the bytes of unique storages and by the peak RSS
of a fresh process; `head_models` against a Hugging Face model assembled by hand from the
base model (embeddings, trunk layers, final norm, lm_head) and head h's checkpoint (the
layers after the trunk).
"""

import json
import subprocess
import sys

import pytest
import torch
from hf_reference import VOCAB, hf_model, save

from expc.models.loading import load_model
from expc.models.tracing import trace
from expc.spec import ir
from expc.spec.diagnostics import DiagnosticError

N_LAYERS = 4


@pytest.fixture(scope="module")
def base_hf():
    return hf_model("llama", num_hidden_layers=N_LAYERS)


@pytest.fixture(scope="module")
def folder(base_hf, tmp_path_factory):
    return save(base_hf, tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def other_hf():
    return hf_model("llama", num_hidden_layers=N_LAYERS, seed=7)


@pytest.fixture(scope="module")
def other(other_hf, tmp_path_factory):
    return save(other_hf, tmp_path_factory.mktemp("other"))


def _ids(seed=3):
    return torch.randint(1, VOCAB, (2, 9), generator=torch.Generator().manual_seed(seed))


def unique_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer, each distinct `data_ptr` counted once."""
    tensors = {t.data_ptr(): t.nbytes for t in model.state_dict(keep_vars=True).values()}
    return sum(tensors.values())


# ---- sharing ---------------------------------------------------------------------------

def test_heads_have_their_own_modules_but_one_copy_of_each_tensor(folder):
    hydra = load_model(folder, hydra=ir.Hydra(trunk=1, heads=4))
    for layer in ("1", "2", "3"):
        blocks = [head.layers[layer] for head in hydra.heads]
        assert len({id(block) for block in blocks}) == 4  # distinct modules: distinct fx paths
        for name, param in blocks[0].named_parameters():
            assert all(block.get_parameter(name) is param for block in blocks[1:])


def test_four_heads_hold_the_bytes_of_one(folder):
    one = load_model(folder, hydra=ir.Hydra(trunk=1, heads=1))
    four = load_model(folder, hydra=ir.Hydra(trunk=1, heads=4))
    assert unique_bytes(four) == unique_bytes(one) == unique_bytes(load_model(folder))
    # `parameters()` users (counts, checksums) see each shared tensor once
    assert sum(p.numel() for p in four.parameters()) == sum(p.numel() for p in one.parameters())


_RSS_PROBE = """
import json, re, sys
import torch
from expc.models.loading import load_model
from expc.spec import ir
def rss_kib():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
folder, heads = sys.argv[1], int(sys.argv[2])
ids = torch.randint(1, 100, (1, 4))
with torch.no_grad():
    load_model("builtin:tiny-llama")(ids)  # warm torch's own allocations first
    before = rss_kib()
    model = load_model(folder, hydra=ir.Hydra(trunk=1, heads=heads))
    model(ids)  # the forward touches every weight
print(json.dumps({"kib": rss_kib() - before}))
"""


def rss_kib(folder, heads: int) -> int:
    """RSS growth (KiB) of a fresh process that loads the model and runs one forward."""
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(folder), str(heads)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])["kib"]


def test_peak_memory_of_four_heads_is_that_of_one(tmp_path):
    # ~40 MB of head layers: a copy per head would add ~120 MB, far above the RSS noise
    wide = hf_model("llama", num_hidden_layers=N_LAYERS, hidden_size=512, intermediate_size=2048,
                    num_attention_heads=8, num_key_value_heads=8, vocab_size=128)
    folder = save(wide, tmp_path)
    one, four = rss_kib(folder, 1), rss_kib(folder, 4)
    weights_kib = sum(p.numel() * p.element_size() for p in wide.parameters()) // 1024
    assert one > weights_kib // 2  # the probe does see the weights
    assert four <= 1.2 * one, (one, four)


def test_fx_trace_and_torch_compile_keep_per_head_paths(folder):
    hydra = load_model(folder, hydra=ir.Hydra(trunk=2, heads=3))
    graph = trace(hydra)
    called = {node.target for node in graph.graph.nodes if node.op == "call_module"}
    assert {f"heads.{h}.layers.3.mlp.down_proj" for h in range(3)} <= called
    assert graph.get_submodule("heads.2.layers.3.mlp.down_proj").weight is \
        hydra.heads[0].layers["3"].mlp.down_proj.weight
    ids, mask = _ids(), torch.ones(2, 9, dtype=torch.long)
    expected = hydra(ids, mask)
    torch.testing.assert_close(graph(ids, mask), expected, atol=0, rtol=0)
    compiled = torch.compile(graph, backend="eager")
    torch.testing.assert_close(compiled(ids, mask), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("trunk", "heads"), [(0, 1), (0, 3), (1, 2), (2, 4), (3, 2)])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_head_equals_the_unsplit_model_bitwise(folder, trunk, heads, seed):
    """Property: a Hydra head without intervention computes exactly the unsplit model."""
    generator = torch.Generator().manual_seed(seed)
    length = int(torch.randint(2, 12, (1,), generator=generator))
    ids = torch.randint(1, VOCAB, (3, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, length // 2:] = 0  # a right-padded row
    with torch.no_grad():
        unsplit = load_model(folder)(ids, mask)[0]
        split = load_model(folder, hydra=ir.Hydra(trunk=trunk, heads=heads))(ids, mask)
    assert split.shape == (heads, *unsplit.shape)
    for head in range(heads):
        assert torch.equal(split[head], unsplit), (trunk, heads, head)


# ---- head_models -----------------------------------------------------------------------

def _hf_reference(base_hf, head_hf, trunk: int):
    """The HF model of head h: `head_hf` with embeddings, trunk layers, norm, lm_head of `base_hf`."""
    reference = hf_model("llama", num_hidden_layers=N_LAYERS)
    reference.load_state_dict(head_hf.state_dict())
    body, base = reference.model, base_hf.model
    body.embed_tokens.load_state_dict(base.embed_tokens.state_dict())
    for layer in range(trunk):
        body.layers[layer].load_state_dict(base.layers[layer].state_dict())
    body.norm.load_state_dict(base.norm.state_dict())
    reference.lm_head.load_state_dict(base_hf.lm_head.state_dict())
    return reference.eval()


def test_each_head_runs_the_layers_of_its_own_checkpoint(base_hf, folder, other_hf, other):
    trunk = 2
    hydra = load_model(folder, hydra=ir.Hydra(trunk=trunk, heads=3,
                                              head_models=(str(other), str(folder), str(other))))
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    with torch.no_grad():
        logits = hydra(ids, mask)
        for head, head_hf in enumerate((other_hf, base_hf, other_hf)):
            expected = _hf_reference(base_hf, head_hf, trunk)(input_ids=ids, attention_mask=mask).logits
            real = mask.bool()
            torch.testing.assert_close(logits[head][real], expected[real], atol=1e-5, rtol=0)
    # heads reading the same folder share; heads with different weights do not
    weight = [h.layers["3"].mlp.down_proj.weight for h in hydra.heads]
    assert weight[0] is weight[2] and weight[0] is not weight[1]
    assert not torch.equal(weight[0], weight[1])


def test_a_head_checkpoint_of_other_shapes_names_the_first_tensor_and_file(folder, tmp_path):
    narrow = save(hf_model("llama", num_hidden_layers=N_LAYERS, intermediate_size=40), tmp_path)
    with pytest.raises(DiagnosticError) as excinfo:
        load_model(folder, hydra=ir.Hydra(trunk=2, heads=2, head_models=(str(folder), str(narrow))))
    (diagnostic,) = excinfo.value.diagnostics
    assert diagnostic.span.path == str(narrow / "model.safetensors")
    assert "model.layers.2.mlp.gate_proj.weight" in diagnostic.message
    assert "[40, 32]" in diagnostic.message


def test_a_head_checkpoint_of_another_architecture_is_a_diagnostic(folder, tmp_path):
    olmo = save(hf_model("olmo2", num_hidden_layers=N_LAYERS), tmp_path)
    with pytest.raises(DiagnosticError, match="olmo2 model") as excinfo:
        load_model(folder, hydra=ir.Hydra(trunk=1, heads=2, head_models=(str(olmo), str(folder))))
    assert excinfo.value.diagnostics[0].span.path == str(olmo / "config.json")


def test_head_models_must_name_one_folder_per_head(folder):
    with pytest.raises(DiagnosticError, match="2 checkpoints for 3 heads"):
        load_model(folder, hydra=ir.Hydra(trunk=1, heads=3, head_models=(str(folder),) * 2))
