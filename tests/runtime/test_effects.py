"""Every effect state against its formula written out in float64, on random logits with
padding; merge and state_dict round trips equal one uninterrupted state exactly."""

import copy
import math

import pytest
import torch

from expc.compiler.plan import EffectEntry
from expc.runtime.effects.create import create_effect
from expc.runtime.sinks import BatchContext, effect_sink
from expc.runtime.effects.results import effect_results
from expc.runtime.sample_error import SampleError
from expc.spec import ir

V, H = 11, 4
GEN = torch.Generator().manual_seed(13)
# three right-padded batches; each row's sample in data order
BATCHES = [
    dict(counts=[6, 3, 2], samples=[4, 0, 6]),
    dict(counts=[5, 5], samples=[2, 1]),
    dict(counts=[4, 2, 3], samples=[3, 7, 5]),
]
N = 8
CORRECT = torch.randint(0, V, (N,), generator=GEN)
WRONG = torch.randint(0, V, (N,), generator=GEN)


def make_batch(spec):
    seq = max(spec["counts"])
    attention = torch.tensor([[1] * n + [0] * (seq - n) for n in spec["counts"]])
    field = torch.randint(0, 2, attention.shape, generator=GEN) * attention
    field[:, 0] = 1  # every row selects at least one field token
    batch = dict(attention=attention, field=field, samples=torch.tensor(spec["samples"]),
                 ids=torch.randint(0, V, attention.shape, generator=GEN),
                 head=torch.randn(*attention.shape, V, generator=GEN) * 3,
                 ref=torch.randn(*attention.shape, V, generator=GEN) * 3,
                 head_h=torch.randn(*attention.shape, H, generator=GEN),
                 ref_h=torch.randn(*attention.shape, H, generator=GEN))
    # padding holds garbage that must never count
    batch["head"][attention == 0] = float("nan")
    return batch


DATA = [make_batch(spec) for spec in BATCHES]


def entry(metric, *, mask=None, aggregate=None):
    effect = ir.Effect(metric=metric, reference=None if metric in ("loss", "logit_diff") else 0,
                       mask=mask, aggregate=aggregate, at_site="resid_out", at_layer=1,
                       correct="good", wrong="bad")
    return EffectEntry(key=f"effect/{metric}/head1", metric=metric, head=1,
                       reference=effect.reference, effect=effect)


def feed(state, batches):
    context = BatchContext()
    sink = effect_sink(state, context)
    for batch in batches:
        context.set(attention_mask=batch["attention"], field_mask=batch["field"],
                    input_ids=batch["ids"], sample_index=batch["samples"],
                    token_fields={"good": CORRECT[batch["samples"]],
                                  "bad": WRONG[batch["samples"]]})
        if state.metric in ("loss", "logit_diff"):
            sink(batch["head"])
        elif state.metric == "cosine":
            sink(batch["head_h"], batch["ref_h"])
        else:
            sink(batch["head"], batch["ref"])
    return state


def new_state(metric, **kwargs):
    return create_effect(entry(metric, **kwargs))


def log_softmax(row):  # [V] float64, by the definition
    top = max(row.tolist())
    total = math.log(sum(math.exp(v - top) for v in row.tolist())) + top
    return [v - total for v in row.tolist()]


def tokens(batch, b, mask):
    real = batch["attention"][b].bool()
    if mask == "field":
        real = real & batch["field"][b].bool()
    return real.nonzero().flatten().tolist()


def hand(metric, mask=None):
    """Per-sample values in run order, token by token, in float64 Python arithmetic."""
    values = []
    for batch in DATA:
        for b in range(len(batch["samples"])):
            n = int(batch["attention"][b].sum())
            head, ref = batch["head"][b].double(), batch["ref"][b].double()
            if metric == "kl":
                per = []
                for t in tokens(batch, b, mask):
                    lp, lq = log_softmax(ref[t]), log_softmax(head[t])
                    per.append(sum(math.exp(p) * (p - q) for p, q in zip(lp, lq)))
                values.append(sum(per) / len(per))
            elif metric == "top1":
                chosen = tokens(batch, b, mask)
                agree = [int(head[t].argmax() == ref[t].argmax()) for t in chosen]
                values.append(sum(agree) / len(agree))
            elif metric == "loss":
                ids = batch["ids"][b]
                per = [-log_softmax(head[t])[int(ids[t + 1])] for t in range(n - 1)]
                values.append(sum(per) / len(per))
            elif metric == "logit_diff":
                sample = int(batch["samples"][b])
                values.append(float(head[n - 1, int(CORRECT[sample])]
                                    - head[n - 1, int(WRONG[sample])]))
            else:  # cosine of the masked means
                chosen = tokens(batch, b, mask)
                a = [sum(float(batch["head_h"][b, t, i]) for t in chosen) / len(chosen)
                     for i in range(H)]
                c = [sum(float(batch["ref_h"][b, t, i]) for t in chosen) / len(chosen)
                     for i in range(H)]
                dot = sum(x * y for x, y in zip(a, c))
                values.append(dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in c)))
    return torch.tensor(values, dtype=torch.float64)


CASES = [("kl", {}, None), ("kl", {"mask": ir.Mask(kind="field", field="m")}, "field"),
         ("top1", {}, None), ("top1", {"mask": ir.Mask(kind="field", field="m")}, "field"),
         ("loss", {}, None), ("logit_diff", {}, None), ("cosine", {}, None),
         ("cosine", {"aggregate": ir.Aggregate(mode="mean", mask=ir.Mask(kind="field",
                                                                           field="m"))},
          "field")]


@pytest.mark.parametrize(("metric", "kwargs", "mask"), CASES)
def test_state_against_its_formula(metric, kwargs, mask):
    state = feed(new_state(metric, **kwargs), DATA)
    values = state.state_dict()["values"]
    assert values.dtype == torch.float64 and values.shape == (8,)
    assert torch.allclose(values, hand(metric, mask), rtol=1e-12, atol=1e-12)
    result = state.result()[""]
    assert result.dtype == torch.float32 and torch.equal(result, values.float())


@pytest.mark.parametrize(("metric", "kwargs", "mask"), CASES)
def test_merge_and_resume_equal_one_uninterrupted_state(metric, kwargs, mask):
    whole = feed(new_state(metric, **kwargs), DATA).state_dict()["values"]
    first = feed(new_state(metric, **kwargs), DATA[:1])
    second = feed(new_state(metric, **kwargs), DATA[1:])
    first.merge(copy.deepcopy(second))
    assert torch.equal(first.state_dict()["values"], whole)
    resumed = new_state(metric, **kwargs)
    resumed.load_state_dict(feed(new_state(metric, **kwargs), DATA[:2]).state_dict())
    assert torch.equal(feed(resumed, DATA[2:]).state_dict()["values"], whole)
    twin = new_state(metric, **kwargs)
    twin.load_state_dict(second.state_dict())
    merged = feed(new_state(metric, **kwargs), DATA[:1])
    merged.merge(twin)
    assert torch.equal(merged.state_dict()["values"], whole)


def test_empty_state_round_trips():
    state = new_state("kl")
    empty = state.state_dict()
    other = new_state("kl")
    other.load_state_dict(empty)
    other.merge(feed(new_state("kl"), DATA))
    assert torch.equal(other.state_dict()["values"], feed(new_state("kl"), DATA)
                       .state_dict()["values"])


def test_merge_refuses_another_metric():
    with pytest.raises(ValueError, match="cannot merge"):
        new_state("kl").merge(new_state("top1"))


def test_a_mask_that_selects_nothing_names_the_sample():
    batch = dict(DATA[0])
    batch["field"] = batch["field"].clone()
    batch["field"][1] = 0  # row 1 is sample 0
    with pytest.raises(SampleError) as excinfo:
        feed(new_state("kl", mask=ir.Mask(kind="field", field="m")), [batch])
    assert excinfo.value.sample == 0 and 'field("m")' in excinfo.value.message


def test_loss_of_a_one_token_sample_names_the_sample():
    batch = dict(DATA[1])
    batch["attention"] = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    with pytest.raises(SampleError) as excinfo:
        feed(new_state("loss"), [batch])
    assert excinfo.value.sample == 1 and "one real token" in excinfo.value.message


def test_results_in_data_order_with_mean_and_interval():
    e = entry("loss")
    state = feed(create_effect(e), DATA)
    run_order = torch.tensor([s for spec in BATCHES for s in spec["samples"]])
    tensors, descriptions = effect_results((e,), {e.key: state}, sample_index=run_order)
    values = hand("loss")
    data_order = torch.empty_like(values)
    data_order[run_order] = values
    assert torch.allclose(tensors[e.key].double(), data_order, atol=1e-6)
    described = descriptions[e.key]
    mean = sum(values.tolist()) / N
    s = math.sqrt(sum((v - mean) ** 2 for v in values.tolist()) / (N - 1))
    assert described["mean"] == pytest.approx(mean, rel=1e-6)
    assert described["ci95"] == pytest.approx([mean - 1.96 * s / math.sqrt(N),
                                               mean + 1.96 * s / math.sqrt(N)], rel=1e-6)
    assert {k: described[k] for k in ("kind", "metric", "name", "head", "reference")} == {
        "kind": "effect", "metric": "loss", "name": "loss", "head": 1, "reference": None}
    assert "cross-entropy" in described["meaning"] and "head 1" in described["meaning"]
