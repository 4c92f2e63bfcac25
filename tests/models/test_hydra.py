"""The Hydra split: module layout, weight-sharing heads, head selection, per-head checkpoints."""

import pytest
import torch
from hf_reference import VOCAB, hf_layer_outputs, hf_model, our_layer_outputs, save

from expc.models.loading import load_model
from expc.spec import ir

ATOL = 1e-5


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save(hf_model("llama", num_hidden_layers=4), tmp_path_factory.mktemp("llama"))


def _ids(seed=3):
    return torch.randint(1, VOCAB, (2, 9), generator=torch.Generator().manual_seed(seed))


def test_module_paths_use_global_layer_numbers(folder):
    model = load_model(folder, hydra=ir.Hydra(trunk=1, heads=3))
    names = dict(model.named_modules())
    assert "layers.0.mlp.down_proj" in names and "layers.1" not in names
    assert {f"heads.{h}.layers.{layer}.self_attn.o_proj" for h in range(3) for layer in (1, 2, 3)} <= set(names)
    assert "norm" in names and "lm_head" in names and "embed_tokens" in names


def test_sharing_heads_each_equal_the_base_model(folder):
    base = load_model(folder)
    hydra = load_model(folder, hydra=ir.Hydra(trunk=2, heads=3))
    ids = _ids()
    expected = base(ids)[0]  # [B, S, V]
    logits = hydra(ids)
    assert logits.shape == (3, *expected.shape)
    for head in range(3):
        torch.testing.assert_close(logits[head], expected, atol=ATOL, rtol=0)
    first, second = hydra.heads[0].layers["2"].mlp.up_proj, hydra.heads[1].layers["2"].mlp.up_proj
    assert first is not second and first.weight is second.weight  # own modules, one weight


def test_head_selection_and_last_token_only(folder):
    hydra = load_model(folder, hydra=ir.Hydra(trunk=2, heads=3))
    down_proj = hydra.heads[2].layers["3"].mlp.down_proj  # make head 2 differ, visibly
    down_proj.weight = torch.nn.Parameter(2.0 * down_proj.weight, requires_grad=False)
    ids = _ids()
    full = hydra(ids)
    picked = hydra(ids, head_indices=[2, 0])
    torch.testing.assert_close(picked, full[[2, 0]])
    assert not torch.allclose(full[2], full[0])
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding: the last real token of sample 1 is position 5
    last = hydra(ids, mask, last_token_only=True)
    assert last.shape == (3, 2, 1, VOCAB)
    torch.testing.assert_close(last[:, 0, 0], hydra(ids, mask)[:, 0, -1])
    torch.testing.assert_close(last[:, 1, 0], hydra(ids[1:, :6])[:, 0, -1], atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="head indices"):
        hydra(ids, head_indices=[3])


def test_trunk_then_heads(folder):
    hydra = load_model(folder, hydra=ir.Hydra(trunk=2, heads=2))
    ids = _ids()
    state = hydra.forward_trunk(ids)
    assert state.hidden.shape == (2, 9, 32)
    torch.testing.assert_close(hydra.forward_heads(state, [1]), hydra(ids, head_indices=[1]))
    _, hidden = our_layer_outputs(hydra, ids, head=1)  # embeddings, then each layer's output
    _, hf_hidden = hf_layer_outputs(hf_model("llama", num_hidden_layers=4), ids)
    torch.testing.assert_close(hidden[-1], hf_hidden[-1], atol=ATOL, rtol=0)


def test_hydra_split_errors_are_diagnostics(folder):
    from expc.spec.diagnostics import DiagnosticError

    with pytest.raises(DiagnosticError, match="between 0 and 3"):
        load_model(folder, hydra=ir.Hydra(trunk=4, heads=2))
    with pytest.raises(DiagnosticError, match="at least one head"):
        load_model(folder, hydra=ir.Hydra(trunk=2, heads=0))


def test_build_on_meta_holds_no_weights():
    from expc.models.builtin import builtin_config
    from expc.models.hydra import HydraTransformer
    from expc.models.hydra_split import HydraSplit
    from expc.models.registry import read_config

    config = read_config(builtin_config("builtin:tiny-llama"))
    model = HydraTransformer.build(config, HydraSplit.of(ir.Hydra(trunk=3, heads=2), n_layers=4))
    assert all(p.is_meta for p in model.parameters())
    assert sorted(model.heads[1].layers) == ["3"]
