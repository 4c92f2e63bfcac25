"""`expc run` with interventions and effects, end to end, against Hugging Face.

One Hydra run per model holds one intervention per head (head 0 untouched). Each head's
logits (Llama) or `resid_out` (BERT) must equal the Hugging Face model run one sample at a
time with forward hooks that make the same edit, written out here by hand; head 0 must
equal the untouched model. Effects are checked against float64 formulas over those Hugging
Face logits and hidden states. Then resume after a failure and a 2-process run must give the
single uninterrupted run's tensors. The IR is built directly (`attrs.evolve`), so these
tests do not depend on the parser's `intervene`/`effect` statements.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import torch
import transformers

import expc
from expc.spec import ir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from hf_reference import hf_model, save  # noqa: E402
from intervene_runs import spec  # noqa: E402
from test_bert import randomize, tiny_config  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LENGTHS = [6, 3, 9, 4, 7, 2, 5]
HEAD_DIM, N_HEADS, N_KV = 8, 4, 2
ATOL, RTOL = 1e-5, 1e-4


def layers(*items: int) -> ir.IndexSelector:
    return ir.IndexSelector(items=items)


def write_data(path: Path, *, seed: int, vocab: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    samples = [torch.randint(1, vocab, (n,), generator=gen).tolist() for n in LENGTHS]
    rows = [dict(input_ids=s, good=int(torch.randint(1, vocab, (), generator=gen)),
                 bad=int(torch.randint(1, vocab, (), generator=gen))) for s in samples]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


# ---- what each head of the Llama run does, in IR and by hand ----------------------------

def tokens_of(positions: ir.Positions, n: int) -> list[int]:
    if positions.kind == "all":
        return list(range(n))
    if positions.kind == "first":
        return [0]
    if positions.kind == "last":
        return [n - 1]
    return sorted({i if i >= 0 else n + i for i in positions.indices})  # a token once


def randperm(total: int, *, seed: int, layer: int, k: int) -> list[int]:
    return sorted(torch.randperm(total, generator=torch.Generator().manual_seed(seed + layer))
                  [:k].tolist())


def ranked(scores: torch.Tensor, k: int, *, highest: bool) -> list[int]:
    values = scores.tolist()
    order = sorted(range(len(values)), key=lambda c: (-values[c] if highest else values[c], c))
    return sorted(order[:k])


@attrs.frozen(kw_only=True)
class Case:
    """One head's intervention: the IR, and the same edit for a Hugging Face hook."""

    target: str
    kind: str  # site | linear | norm
    layer: int
    operation: ir.Operation
    units: ir.Units | None = None
    positions: ir.Positions = ir.Positions(kind="all")

    def intervention(self, head: int) -> ir.Intervention:
        return ir.Intervention(target=self.target, target_kind=self.kind,
                               layers=layers(self.layer), heads=layers(head),
                               operation=self.operation, channels=self.units,
                               positions=self.positions)


def llama_cases(source: str) -> dict[int, Case]:
    return {
        1: Case(target="mlp_out", kind="site", layer=2, operation=ir.Operation(kind="zero")),
        2: Case(target="mlp_out", kind="site", layer=2,
                operation=ir.Operation(kind="mean", run=source),
                units=ir.Units(kind="list", indices=(0, 3, 5, 31)),
                positions=ir.Positions(kind="last")),
        3: Case(target="resid_out", kind="site", layer=1,
                operation=ir.Operation(kind="patch", run=source),
                positions=ir.Positions(kind="list", indices=(0, -1))),
        4: Case(target="resid_out", kind="site", layer=1,
                operation=ir.Operation(kind="add", run=source, key="capture/mlp_out_2",
                                       scale=2.5),
                units=ir.Units(kind="random", count=10, seed=3)),
        5: Case(target="mlp.down_proj", kind="linear", layer=2,
                operation=ir.Operation(kind="scale", scale=0.5),
                units=ir.Units(kind="lowest", run=source, metric="channel_contribution",
                               fraction=0.25)),
        6: Case(target="self_attn.o_proj", kind="linear", layer=2,
                operation=ir.Operation(kind="zero"),
                units=ir.Units(kind="highest", run=source, metric="kv_head_contribution",
                               count=1)),
        7: Case(target="post_attention_layernorm", kind="norm", layer=1,
                operation=ir.Operation(kind="zero"),
                units=ir.Units(kind="random", fraction=0.5, seed=1),
                positions=ir.Positions(kind="first")),
        8: Case(target="mlp_out", kind="site", layer=1, operation=ir.Operation(kind="scale",
                                                                                scale=3.0),
                positions=ir.Positions(kind="list", indices=(1, -2))),
    }


def hand_channels(case: Case, width: int, source: dict[str, torch.Tensor]) -> list[int]:
    """The channels the case changes, worked out here from the design's rules."""
    units = case.units
    if units is None:
        return list(range(width))
    if units.kind == "list":
        return list(units.indices)
    if units.kind == "random":
        k = units.count if units.count is not None else round(units.fraction * width)
        return randperm(width, seed=units.seed, layer=case.layer, k=k)
    prefix = f"importance/{units.metric}/layers.{case.layer}.{case.target}"
    scores = source[f"{prefix}/score"]
    k = units.count if units.count is not None else round(units.fraction * len(scores))
    chosen = ranked(scores, k, highest=units.kind == "highest")
    if units.metric != "kv_head_contribution":
        return chosen
    block = N_HEADS // N_KV * HEAD_DIM  # KV group g: query heads g*r .. g*r + r - 1
    return [g * block + c for g in chosen for c in range(block)]


def hand_edit(case: Case, x: torch.Tensor, *, sample: int, channels: list[int],
              source: dict[str, torch.Tensor]) -> torch.Tensor:
    """`x` `[1, n, C...]` with the case's operation at its tokens x channels, by hand."""
    flat = x.reshape(1, x.shape[1], -1).clone()
    n = flat.shape[1]
    op = case.operation
    site_key = f"capture/{case.target}_{case.layer}"
    for t in tokens_of(case.positions, n):
        for c in channels:
            if op.kind == "zero":
                flat[0, t, c] = 0.0
            elif op.kind == "mean":
                flat[0, t, c] = source[site_key][c]
            elif op.kind == "patch":
                flat[0, t, c] = source[site_key][sample, t, c]
            elif op.kind == "add":
                flat[0, t, c] = flat[0, t, c] + op.scale * source[op.key][c]
            else:
                flat[0, t, c] = flat[0, t, c] * op.scale
    return flat.reshape(x.shape)


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output, value):
    return (value, *output[1:]) if isinstance(output, tuple) else value


def hooked(model, layer_modules, case: Case | None, *, sample: int, width: int,
           source: dict[str, torch.Tensor], module_of) -> list:
    """Register the Hugging Face hooks that make `case`'s edit; returns their handles."""
    if case is None:
        return []
    channels = hand_channels(case, width, source)

    def edit(x):
        return hand_edit(case, x, sample=sample, channels=channels, source=source)

    module = module_of(layer_modules[case.layer], case)
    if case.kind == "linear":  # the module's input
        return [module.register_forward_pre_hook(lambda m, args: (edit(args[0]), *args[1:]))]
    return [module.register_forward_hook(
        lambda m, args, out: _replace_first(out, edit(_first(out))))]


def hf_forward(model, layer_modules, ids: list[int], case: Case | None, *, sample: int,
               width: int, source, module_of, keep_layer: int):
    """(logits or last hidden state `[n, ...]`, the output of layer `keep_layer` `[n, H]`)."""
    kept = []
    handles = hooked(model, layer_modules, case, sample=sample, width=width, source=source,
                     module_of=module_of)
    handles.append(layer_modules[keep_layer].register_forward_hook(
        lambda m, args, out: kept.append(_first(out)[0])))
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    main = out.logits if hasattr(out, "logits") else out.last_hidden_state
    return main[0], kept[-1]


def llama_module(layer, case: Case):
    return {"mlp_out": layer.mlp, "resid_out": layer}.get(case.target) or \
        layer.get_submodule(case.target)


def llama_width(case: Case) -> int:
    if case.kind == "linear":
        return {"mlp.down_proj": 48, "self_attn.o_proj": N_HEADS * HEAD_DIM}[case.target]
    return 32


# ---- the runs ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """The source run (other data, no split), the intervened Hydra run, and their models."""
    folder = tmp_path_factory.mktemp("iv-llama")
    model = hf_model("llama")
    save(model, folder / "ckpt")
    rows = write_data(folder / "clean.jsonl", seed=1, vocab=61)
    write_data(folder / "corrupt.jsonl", seed=2, vocab=61)  # same lengths, other tokens
    source_spec = spec(folder, "source", data="corrupt.jsonl", body="""
    capture mlp_out[2] { aggregate = dataset_mean }
    capture resid_out[1] { aggregate = full }
    importance channel_contribution at mlp.down_proj[2]
    importance kv_head_contribution at self_attn.o_proj[2]""")
    source = dict(expc.run(source_spec, out=folder / "source"))
    cases = llama_cases(str(folder / "source"))
    experiment = spec(folder, "hydra", data="clean.jsonl", hydra="hydra { trunk = 1  heads = 9 }",
                      body="capture logits { aggregate = full }")
    experiment = attrs.evolve(
        experiment,
        interventions=tuple(case.intervention(head) for head, case in cases.items()),
        effects=(ir.Effect(metric="kl", reference=0), ir.Effect(metric="top1", reference=0),
                 ir.Effect(metric="loss"),
                 ir.Effect(metric="logit_diff", correct="good", wrong="bad"),
                 ir.Effect(metric="cosine", reference=0, at_site="resid_out", at_layer=2)))
    results = dict(expc.run(experiment, out=folder / "hydra"))
    return dict(folder=folder, model=model, rows=rows, source=source, cases=cases,
                experiment=experiment, results=results)


def llama_reference(llama, head: int, sample: int):
    model, ids = llama["model"], llama["rows"][sample]["input_ids"]
    case = llama["cases"].get(head)
    return hf_forward(model, model.model.layers, ids, case, sample=sample,
                      width=0 if case is None else llama_width(case), source=llama["source"],
                      module_of=llama_module, keep_layer=2)


@pytest.mark.parametrize("head", range(9))
def test_each_llama_head_equals_transformers_with_the_same_hooks(llama, head):
    logits = llama["results"][f"capture/head{head}/logits"]
    changed = False
    for sample, n in enumerate(LENGTHS):
        expected, _ = llama_reference(llama, head, sample)
        torch.testing.assert_close(logits[sample, :n], expected, atol=ATOL, rtol=RTOL)
        untouched, _ = llama_reference(llama, 0, sample)
        changed |= not torch.allclose(expected, untouched, atol=1e-4)
    assert changed == (head != 0), "the intervention changed nothing: the test would be blind"


def test_llama_run_stores_the_units_it_changed(llama):
    results, source = llama["results"], llama["source"]
    for head, case in llama["cases"].items():
        key = f"intervention/head{head}/{case.target}_{case.layer}/channels"
        stored = results[key]
        assert stored.dtype == torch.int64
        channels = hand_channels(case, llama_width(case), source)
        if case.units is not None and case.units.metric == "kv_head_contribution":
            block = N_HEADS // N_KV * HEAD_DIM
            assert stored.tolist() == sorted({c // block for c in channels})
        else:
            assert stored.tolist() == channels
    manifest = json.loads((llama["folder"] / "hydra" / "manifest.json").read_text())
    entry = manifest["tensors"]["intervention/head6/self_attn.o_proj_2/channels"]
    assert entry["units"] == "kv_heads" and "zero-ablation" in entry["meaning"]


def _log_softmax(x: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.float64)
    return x - torch.logsumexp(x, dim=-1, keepdim=True)


def hand_effect(metric: str, *, head_logits, ref_logits, head_hidden, ref_hidden, row) -> float:
    """One sample's effect in float64, written out from the formulas of the design."""
    n = len(row["input_ids"])
    if metric == "kl":
        lp, lq = _log_softmax(ref_logits), _log_softmax(head_logits)
        return sum(float((lp[t].exp() * (lp[t] - lq[t])).sum()) for t in range(n)) / n
    if metric == "top1":
        return sum(int(head_logits[t].argmax() == ref_logits[t].argmax()) for t in range(n)) / n
    if metric == "loss":
        lq = _log_softmax(head_logits)
        return -sum(float(lq[t, row["input_ids"][t + 1]]) for t in range(n - 1)) / (n - 1)
    if metric == "logit_diff":
        last = head_logits[n - 1].to(torch.float64)
        return float(last[row["good"]] - last[row["bad"]])
    a, b = head_hidden.to(torch.float64).mean(0), ref_hidden.to(torch.float64).mean(0)
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("metric", ["kl", "top1", "loss", "logit_diff", "cosine"])
def test_llama_effects_equal_float64_formulas(llama, metric):
    results = llama["results"]
    manifest = json.loads((llama["folder"] / "hydra" / "manifest.json").read_text())
    heads = range(9) if metric in ("loss", "logit_diff") else range(1, 9)
    assert {k for k in results if k.startswith(f"effect/{metric}/")} == \
        {f"effect/{metric}/head{h}" for h in heads}
    for head in heads:
        expected = []
        for sample, row in enumerate(llama["rows"]):
            head_logits, head_hidden = llama_reference(llama, head, sample)
            ref_logits, ref_hidden = llama_reference(llama, 0, sample)
            expected.append(hand_effect(metric, head_logits=head_logits, ref_logits=ref_logits,
                                        head_hidden=head_hidden, ref_hidden=ref_hidden, row=row))
        key = f"effect/{metric}/head{head}"
        got = results[key]
        assert got.dtype == torch.float32 and got.shape == (len(LENGTHS),)
        torch.testing.assert_close(got.double(), torch.tensor(expected, dtype=torch.float64),
                                   atol=ATOL, rtol=RTOL)
        entry = manifest["tensors"][key]
        values = torch.tensor(expected, dtype=torch.float64)
        half = 1.96 * float(values.std()) / math.sqrt(len(values))
        assert entry["metric"] == metric and entry["head"] == head
        assert entry["reference"] == (None if metric in ("loss", "logit_diff") else 0)
        assert entry["mean"] == pytest.approx(float(values.mean()), abs=1e-5)
        assert entry["ci95"] == pytest.approx([entry["mean"] - half, entry["mean"] + half],
                                              abs=1e-5)


# ---- resume and two processes give the uninterrupted run's numbers ----------------------

class _Killed(Exception):
    pass


def test_resume_after_a_failure_equals_the_uninterrupted_run(llama, monkeypatch):
    from expc.runtime import execute

    experiment = attrs.evolve(llama["experiment"],
                              output=attrs.evolve(llama["experiment"].output, checkpoint_every=1))
    out = llama["folder"] / "resumed"

    class DiesAfterTwoBatches(execute.Progress):
        def advance(self, **kwargs):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 3:  # batches 1 and 2 are checkpointed, the third is lost
                raise _Killed
            super().advance(**kwargs)

    monkeypatch.setattr(execute, "Progress", DiesAfterTwoBatches)
    with pytest.raises(_Killed):
        expc.run(experiment, out=out)
    cursor = json.loads((out / "checkpoint" / "rank0-cursor.json").read_text())
    assert cursor["batches_done"] == 2
    monkeypatch.undo()
    resumed = dict(expc.run(experiment, out=out, resume=True))
    whole = llama["results"]
    assert set(resumed) == set(whole)
    for key in whole:
        if key.startswith(("effect/", "intervention/", "meta/")):
            assert torch.equal(resumed[key], whole[key]), key
        else:
            torch.testing.assert_close(resumed[key], whole[key], atol=1e-6, rtol=1e-5)


RANK_SCRIPT = """
import pickle, sys
import expc
with open(sys.argv[1], "rb") as handle:
    experiment = pickle.load(handle)
expc.run(experiment, out=sys.argv[2])
"""


def test_two_processes_equal_one(llama, tmp_path):
    (tmp_path / "exp.pkl").write_bytes(pickle.dumps(llama["experiment"]))
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    out = tmp_path / "two"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(tmp_path / "rank.py"), str(tmp_path / "exp.pkl"), str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = expc.open_run(out)
    assert two.status == "complete"
    whole = llama["results"]
    assert set(two.tensors) == set(whole)
    for key in whole:
        torch.testing.assert_close(two.tensors[key], whole[key], atol=1e-5, rtol=1e-4)


# ---- BERT -------------------------------------------------------------------------------

BERT_MODULES = {"mlp_out": "output.dense", "post_feedforward_layernorm": "output.LayerNorm",
                "self_attn.o_proj": "attention.output.dense"}


def bert_cases() -> dict[int, Case]:
    return {
        1: Case(target="mlp_out", kind="site", layer=2, operation=ir.Operation(kind="zero"),
                units=ir.Units(kind="list", indices=(1, 4, 9)),
                positions=ir.Positions(kind="list", indices=(0, -1))),
        2: Case(target="post_feedforward_layernorm", kind="norm", layer=1,
                operation=ir.Operation(kind="scale", scale=0.5),
                units=ir.Units(kind="random", count=8, seed=5)),
        3: Case(target="self_attn.o_proj", kind="linear", layer=2,
                operation=ir.Operation(kind="zero"),
                units=ir.Units(kind="list", indices=tuple(range(8))),
                positions=ir.Positions(kind="last")),
    }


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("iv-bert")
    model = randomize(transformers.BertModel(tiny_config(), add_pooling_layer=False))
    model.save_pretrained(folder / "ckpt")
    rows = write_data(folder / "data.jsonl", seed=3, vocab=97)
    cases = bert_cases()
    experiment = spec(folder, "hydra", data="data.jsonl", hydra="hydra { trunk = 1  heads = 4 }",
                      body="capture resid_out[2] { aggregate = full }")
    experiment = attrs.evolve(
        experiment, interventions=tuple(case.intervention(h) for h, case in cases.items()),
        effects=(ir.Effect(metric="cosine", reference=0, at_site="resid_out", at_layer=2,
                           aggregate=ir.Aggregate(mode="mean", mask=ir.Mask(kind="last"))),))
    results = dict(expc.run(experiment, out=folder / "hydra"))
    return dict(model=model, rows=rows, cases=cases, results=results)


def bert_reference(bert, head: int, sample: int):
    model = bert["model"]
    case = bert["cases"].get(head)
    return hf_forward(model, model.encoder.layer, bert["rows"][sample]["input_ids"], case,
                      sample=sample, width=32, source={},
                      module_of=lambda layer, c: layer.get_submodule(BERT_MODULES[c.target]),
                      keep_layer=2)


@pytest.mark.parametrize("head", range(4))
def test_each_bert_head_equals_transformers_with_the_same_hooks(bert, head):
    hidden = bert["results"][f"capture/head{head}/resid_out_2"]
    for sample, n in enumerate(LENGTHS):
        expected, _ = bert_reference(bert, head, sample)
        torch.testing.assert_close(hidden[sample, :n], expected, atol=ATOL, rtol=RTOL)
        if head:
            assert not torch.allclose(expected, bert_reference(bert, 0, sample)[0], atol=1e-4)


def test_bert_cosine_effect_equals_its_formula(bert):
    for head in (1, 2, 3):
        expected = []
        for sample, n in enumerate(LENGTHS):
            _, mine = bert_reference(bert, head, sample)
            _, ref = bert_reference(bert, 0, sample)
            a, b = mine[n - 1].double(), ref[n - 1].double()  # mean over the `last` mask
            expected.append(float(a @ b / (a.norm() * b.norm())))
        torch.testing.assert_close(bert["results"][f"effect/cosine/head{head}"].double(),
                                   torch.tensor(expected, dtype=torch.float64), atol=ATOL,
                                   rtol=RTOL)


# ---- a sample the run cannot use fails the run at its data line -------------------------

def _failing_run(llama, name: str, **changes) -> str:
    from expc.spec.diagnostics import DiagnosticError

    experiment = attrs.evolve(llama["experiment"], **changes)
    with pytest.raises(DiagnosticError) as caught:
        expc.run(experiment, out=llama["folder"] / name)
    manifest = json.loads((llama["folder"] / name / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.span.path == str(llama["folder"] / "clean.jsonl")
    return diagnostic


def _named_sample(diagnostic) -> int:
    """The sample a diagnostic names (`sample K: ...`): the first in run order that fails."""
    return int(diagnostic.message.split(":")[0].removeprefix("sample "))


def test_a_position_a_sample_lacks_names_the_sample_and_line(llama):
    case = Case(target="mlp_out", kind="site", layer=2, operation=ir.Operation(kind="zero"),
                positions=ir.Positions(kind="list", indices=(4,)))
    diagnostic = _failing_run(llama, "no-position", interventions=(case.intervention(1),),
                              effects=())
    sample = _named_sample(diagnostic)
    assert LENGTHS[sample] <= 4 and diagnostic.span.line == sample + 1
    assert "it has no token at positions = [4]" in diagnostic.message


def test_a_nan_effect_fails_the_run_at_the_sample(llama):
    case = Case(target="resid_out", kind="site", layer=2, operation=ir.Operation(kind="zero"))
    cosine = ir.Effect(metric="cosine", reference=0, at_site="resid_out", at_layer=2)
    diagnostic = _failing_run(llama, "nan-effect", interventions=(case.intervention(1),),
                              effects=(cosine,))
    assert diagnostic.code == "nonfinite"
    assert diagnostic.span.line == _named_sample(diagnostic) + 1
    assert "effect/cosine/head1" in diagnostic.message
