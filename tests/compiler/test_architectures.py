"""The passes on the other built-in architectures, unsplit (one head, every layer in the trunk)."""

from __future__ import annotations

import pytest
import torch

from compiler_support import Recorder, capture, plan_of
from expc.compiler.pipeline import compile_plan
from expc.models.loading import load_model


@pytest.mark.parametrize("name", ["tiny-olmo2", "tiny-bert"])
def test_unsplit_models_compile_and_keep_their_outputs(name):
    model = load_model(f"builtin:{name}")
    entries = [capture("resid_out", L) for L in range(4)]
    entries += [capture("attn_pattern", 2), capture("final_norm")]
    plan = plan_of(*entries)
    recorder = Recorder(plan)
    compiled = compile_plan(plan, model, recorder.sinks, keep_output=True)
    ids = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    with torch.no_grad():
        expected = model(ids, mask)
        torch.testing.assert_close(compiled.graph_module(ids, mask), expected,
                                   atol=1e-5, rtol=1e-5)
    assert set(recorder.calls) == set(plan.keys)
    (pattern,) = recorder.one("capture/attn_pattern_2")  # [B, S_q, n_heads, S_k]
    assert pattern.shape == (2, 6, 4, 6)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 6, 4))
    if name == "tiny-bert":  # encoders end in the final norm itself
        torch.testing.assert_close(recorder.one("capture/final_norm")[0], expected[0])
