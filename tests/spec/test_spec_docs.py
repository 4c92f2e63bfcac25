"""docs/language.md keeps up with the language: every word the checker knows is documented,
and every example statement in it is valid syntax."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from expc.spec import vocabulary as vocab
from expc.spec.model_shape import ALL_ROLES, SUPPORTED_MODEL_TYPES
from expc.spec.parser import parse

DOC = (Path(__file__).parents[2] / "docs" / "language.md").read_text()

WORDS = sorted({
    *vocab.TOP_KEYS, *vocab.BLOCKS, *(k for keys in vocab.BLOCK_KEYS.values() for k in keys),
    *vocab.DTYPES, *vocab.DEVICES, *vocab.SITES, *vocab.AGGREGATE_MODES, *vocab.MASKS,
    *vocab.SOURCES, *vocab.METRICS, *(p.name for m in vocab.METRICS.values() for p in m.params),
    *(c for m in vocab.METRICS.values() for p in m.params for c in p.choices),
    *ALL_ROLES, *SUPPORTED_MODEL_TYPES, "intervene", "effect", vocab.AUTO_TRUNK,
    *vocab.INTERVENE_KEYS, *vocab.SET_VALUES, "vector", *vocab.UNIT_KINDS, *vocab.POSITION_WORDS,
    "fraction", "count", *vocab.EFFECT_METRICS, vocab.LAYER_TARGET,
    *(p for spec in vocab.EFFECT_METRICS.values() for p in spec[2]),
})


@pytest.mark.parametrize("word", WORDS)
def test_every_word_is_documented(word):
    assert f"`{word}" in DOC


def _exp_blocks() -> list[str]:
    return [b for b in re.findall(r"^```exp\n(.*?)^```", DOC, flags=re.S | re.M)
            if re.match(r"\s*(#|experiment|include|capture|importance|intervene|effect|hydra)", b)]


@pytest.mark.parametrize("block", _exp_blocks())
def test_documented_examples_parse(block):
    text = block if re.search(r"^\s*(experiment|include)\b", block, flags=re.M) else (
        "experiment doc {\n" + block + "\n}\n")
    parse(text, "docs/language.md")
