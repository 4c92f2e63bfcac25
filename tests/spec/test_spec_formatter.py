"""The formatter: canonical, idempotent, comment-preserving, and meaning-preserving.

The property test generates syntax trees, writes each in a random layout (odd spacing,
line breaks between any tokens, optional commas, comments between statements) and checks
`fmt(fmt(x)) == fmt(x)`, `parse(fmt(x)) == parse(x)` and that every comment survives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expc.spec.formatter import format_text
from expc.spec.parser import parse

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.exp"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_already_canonical(path):
    text = path.read_text()
    assert format_text(text) == text


def test_messy_layout_becomes_the_canonical_one():
    messy = (
        "# top\n\n\n"
        'experiment   a{seed=1 # s\n'
        '  data{ source=jsonl( "x.jsonl",field="t" ) limit = none,\n batch_size=2 }\n'
        "\n\n\n"
        "  capture resid_out[ 1 : 3 , 5 ] of heads [*] as r { aggregate = mean( mask=last ) }\n"
        "  capture logits\n"
        "  importance l2_norm at input_layernorm[:2]\n"
        "  importance channel_contribution at mlp.down_proj[*] {}\n"
        "  # dangling\n"
        "}\n"
    )
    assert format_text(messy) == (
        "# top\n"
        "\n"
        "experiment a {\n"
        "    seed = 1                             # s\n"
        "    data {\n"
        '        source     = jsonl("x.jsonl", field = "t")\n'
        "        limit      = none\n"
        "        batch_size = 2\n"
        "    }\n"
        "\n"
        "    capture resid_out[1:3, 5] of heads[*] as r { aggregate = mean(mask = last) }\n"
        "    capture logits\n"
        "    importance l2_norm              at input_layernorm[:2]\n"
        "    importance channel_contribution at mlp.down_proj[*]\n"
        "    # dangling\n"
        "}\n"
    )


def test_interventions_and_effects_take_the_canonical_layout():
    messy = (
        "experiment a {\n"
        "  hydra { trunk = auto  heads = 3 head_models = [ \"x\" ,\"y\", \"z\" ] }\n"
        "  intervene mlp_out[ 3 ] of heads [1] {set=zero}\n"
        "  intervene mlp.down_proj[*] of heads[2] { set = zero,channels = lowest( run=\"r\","
        " metric = channel_contribution, fraction=0.25 ) }\n"
        "  effect kl of heads[1:]  vs heads[ 0 ]\n"
        "  effect cosine vs heads[0] as cos {at=resid_out[ 3 ] aggregate=mean(mask=last)}\n"
        "}\n"
    )
    assert format_text(messy) == (
        "experiment a {\n"
        "    hydra {\n"
        "        trunk       = auto\n"
        "        heads       = 3\n"
        '        head_models = ["x", "y", "z"]\n'
        "    }\n"
        "    intervene mlp_out[3] of heads[1]       { set = zero }\n"
        "    intervene mlp.down_proj[*] of heads[2] { set = zero, channels = lowest(run = \"r\", "
        "metric = channel_contribution, fraction = 0.25) }\n"
        "    effect kl of heads[1:] vs heads[0]\n"
        "    effect cosine vs heads[0] as cos { at = resid_out[3], aggregate = mean(mask = last) }\n"
        "}\n"
    )


def test_multiline_bodies_stay_multiline_with_their_comments():
    text = ("experiment a {\n"
            "    capture embed {\n"
            "        # why full\n"
            "        aggregate = full                 # keep all\n"
            "    }\n"
            "}\n")
    assert format_text(text) == text


# generated specs -------------------------------------------------------------------------
NAMES = st.sampled_from(["seed", "model", "limit", "x1", "data_k", "heads", "trunk", "field"])
WS = st.sampled_from([" ", "  ", "\n", " \n   ", "\t"])


def _string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


scalars = st.one_of(
    st.text(alphabet='ab#"\\é\n', max_size=6).map(_string),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["1.5", "0.50", "1e3", "-2.0e-1"]),
    st.sampled_from(["none", "true", "float32", "cuda:1", "attention"]),
)


def _call(children):
    return st.tuples(NAMES, st.lists(children, max_size=2),
                     st.lists(st.tuples(NAMES, children), max_size=2)).map(
        lambda t: f"{t[0]}({', '.join([*t[1], *(f'{k}={v}' for k, v in t[2])])})")


values = st.recursive(scalars, lambda ch: st.one_of(
    st.lists(ch, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"), _call(ch)), max_leaves=6)
assigns = st.tuples(NAMES, values).map(lambda kv: f"{kv[0]} = {kv[1]}")
selectors = st.one_of(
    st.just("*"),
    st.lists(st.one_of(st.integers(-5, 5).map(str),
                       st.tuples(st.one_of(st.none(), st.integers(-5, 5)),
                                 st.one_of(st.none(), st.integers(-5, 5))).map(
                           lambda ab: f"{'' if ab[0] is None else ab[0]}:{'' if ab[1] is None else ab[1]}")),
             min_size=1, max_size=3).map(", ".join))
bodies = st.one_of(st.just(""), st.lists(assigns, max_size=2).map(lambda xs: "{ " + " ".join(xs) + " }"))
captures = st.tuples(st.sampled_from(["resid_out", "attn_pattern", "logits"]), st.one_of(st.none(), selectors),
                     st.one_of(st.none(), selectors), st.one_of(st.none(), NAMES), bodies).map(
    lambda t: "capture " + t[0] + (f"[{t[1]}]" if t[1] else "") + (f" of heads[{t[2]}]" if t[2] else "")
    + (f" as {t[3]}" if t[3] else "") + " " + t[4])
importances = st.tuples(st.sampled_from(["l2_norm", "iterative_channel"]),
                        st.sampled_from(["mlp.down_proj", "post_attention_layernorm", "self_attn.o_proj"]),
                        selectors, bodies).map(lambda t: f"importance {t[0]} at {t[1]}[{t[2]}] {t[3]}")
interventions = st.tuples(st.sampled_from(["resid_out", "mlp.down_proj", "self_attn.o_proj"]),
                          st.one_of(st.none(), selectors), st.one_of(st.none(), selectors), bodies).map(
    lambda t: "intervene " + t[0] + (f"[{t[1]}]" if t[1] else "") + (f" of heads[{t[2]}]" if t[2] else "")
    + " " + t[3])
site_values = st.tuples(st.sampled_from(["resid_out", "mlp_out"]), selectors).map(lambda t: f"{t[0]}[{t[1]}]")
effect_bodies = st.one_of(st.just(""), st.lists(st.one_of(
    assigns, site_values.map(lambda v: f"at = {v}")), max_size=2).map(lambda xs: "{ " + " ".join(xs) + " }"))
effects = st.tuples(st.sampled_from(["kl", "loss", "cosine"]), st.one_of(st.none(), selectors),
                    st.one_of(st.none(), selectors), st.one_of(st.none(), NAMES), effect_bodies).map(
    lambda t: "effect " + t[0] + (f" of heads[{t[1]}]" if t[1] else "") + (f" vs heads[{t[2]}]" if t[2] else "")
    + (f" as {t[3]}" if t[3] else "") + " " + t[4])
blocks = st.tuples(st.sampled_from(["data", "hydra", "output"]), st.lists(assigns, max_size=3)).map(
    lambda t: t[0] + " { " + "\n".join(t[1]) + " }")
statements = st.one_of(assigns, blocks, captures, importances, interventions, effects)
experiments = st.tuples(st.sampled_from(["a", "b2", "long_name"]), st.one_of(st.none(), NAMES),
                        st.lists(statements, max_size=6)).map(
    lambda t: (f"experiment {t[0]}" + (f" extends {t[1]}" if t[1] else "") + " {", t[2], "}"))


@st.composite
def layouts(draw):
    """A generated spec in a random layout, and the comments it carries."""
    parts, comments = [], []

    def sep():
        ws = draw(WS)
        if draw(st.integers(0, 4)) == 0:
            comment = f"# c{len(comments)}"
            comments.append(comment)
            ws = f"{draw(st.sampled_from(['', ' ', '    ']))}{comment}\n{draw(WS)}"
        return ws

    if draw(st.booleans()):
        parts.append('include "other.exp"')
    for header, stmts, close in draw(st.lists(experiments, min_size=1, max_size=2)):
        parts.append(header)
        for s in stmts:
            tokens = s.split(" ")
            parts.append("".join(t + (draw(st.sampled_from([" ", "  ", "\n"])) if i < len(tokens) - 1 else "")
                                 for i, t in enumerate(tokens)))
        parts.append(close)
    text = sep().join(parts) + sep()
    return text, comments


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts())
def test_fmt_is_idempotent_and_keeps_meaning_and_comments(case):
    text, comments = case
    once = format_text(text)
    assert format_text(once) == once
    assert parse(once) == parse(text)
    for c in comments:
        assert c in once
