"""`Plan.layers_needed`: how many leading layers a run builds, loads and traces (issue 17:
a `resid_out[1]` capture of a 32-layer model built, traced and recompiled all 32)."""

from __future__ import annotations

import pytest
import torch
from test_plan import _experiment

from expc.compiler.pipeline import compile_plan
from expc.compiler.plan import build_plan
from expc.models.loading import load_model

HYDRA = "hydra { trunk = 1\n heads = 3 }"


def _plan(tmp_path, statements: str, *, hydra: str = ""):
    return build_plan(_experiment(tmp_path, statements, hydra=hydra), n_layers=4)


@pytest.mark.parametrize("statements, hydra, needed", [
    ("capture resid_out[1]", "", 2),
    ("capture embed", "", 0),
    ("capture attn_pattern[0]\ncapture mlp_out[2]", "", 3),
    ("capture resid_out[1] of heads[2]", HYDRA, 2),
    ("capture final_norm", "", 4),
    ("capture logits", "", 4),
    ("capture lens[0]", "", 4),  # the lens calls the final norm and the LM head
    ("importance l2_norm at mlp.down_proj[2]", "", 3),
    ("importance block_influence at layers[0]", "", 1),
    ("capture resid_out[0]\nintervene mlp_out[2] of heads[1] { set = zero }", HYDRA, 3),
    ("effect cosine vs heads[0] { at = resid_out[1] }", HYDRA, 2),
    ("effect kl vs heads[0]", HYDRA, 4),
    ("effect loss", "", 4),
])
def test_layers_needed_is_the_deepest_layer_read(tmp_path, statements, hydra, needed):
    assert _plan(tmp_path, statements, hydra=hydra).layers_needed == needed


def test_a_truncated_model_compiles_only_for_a_plan_within_its_layers(tmp_path):
    plan = _plan(tmp_path, "capture resid_out[1]")
    model = load_model("builtin:tiny-llama", n_layers_built=plan.layers_needed)
    assert model.truncated and list(model.layers) == ["0", "1"] and model.norm is None
    found = []
    graph = compile_plan(plan, model, {"capture/resid_out_1": found.append}).graph_module
    with torch.no_grad():
        assert graph(torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.long)) is None
    assert found[0].shape == (1, 3, 64)
    with pytest.raises(ValueError, match="built with 2 of its 4 layers, the plan needs 4"):
        compile_plan(plan, model, keep_output=True)
    deeper = _plan(tmp_path, "capture resid_out[2]")
    with pytest.raises(ValueError, match="the plan needs 3"):
        compile_plan(deeper, model)
