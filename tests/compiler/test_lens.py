"""The logit lens pass: built only where captured, after any edit of `resid_out`, and a
diagnostic on a model without an LM head."""

from __future__ import annotations

import pytest
import torch

from compiler_support import EditRecorder, Recorder, capture, inputs, intervention, plan_of
from expc.compiler.pipeline import compile_plan
from expc.models.hydra_split import HydraSplit
from expc.models.loading import load_model
from expc.spec.diagnostics import DiagnosticError


def test_lens_reads_the_edited_resid_out(model):
    plan = plan_of(intervention("resid_out", 3, 1), capture("lens", 3, 1),
                   capture("resid_out", 3, 1))
    recorder, edits = Recorder(plan), EditRecorder(plan)
    with torch.no_grad():
        compile_plan(plan, model, recorder.sinks, edits.edits).graph_module(*inputs())
        resid = recorder.one(capture("resid_out", 3, 1).key)[0]
        (before, after), = edits.seen[plan.interventions[0].key]
        assert torch.equal(resid, after) and not torch.equal(after, before)
        lens = recorder.one(capture("lens", 3, 1).key)[0]
        assert torch.equal(lens, model.lm_head(model.norm(after)))


def test_lens_on_an_encoder_is_a_diagnostic():
    bert = load_model("builtin:tiny-bert")
    plan = plan_of(capture("lens", 1), layout=HydraSplit.single(bert.config.n_layers))
    with pytest.raises(DiagnosticError) as info:
        compile_plan(plan, bert)
    (diag,) = info.value.diagnostics
    assert diag.code == "compile-unresolved" and "`lens` in layer 1" in diag.message
