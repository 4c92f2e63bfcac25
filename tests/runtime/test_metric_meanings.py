"""The manifest's `meaning` of each importance tensor says in words what it holds (formula,
direction), from one home: `MetricSpec.meaning` in `spec/vocabulary.py` (issue 16: it used to
read "l2_norm score of mlp.down_proj_3")."""

from __future__ import annotations

import re
from pathlib import Path

import expc
from expc.spec.vocabulary import METRICS

SPEC = """
experiment meanings {
    model = "builtin:tiny-llama"
    data { source = jsonl("%s", field = "text")  batch_size = 4  limit = 16 }
    importance l2_norm                at mlp.down_proj[3]
    importance channel_contribution   at mlp.down_proj[3]
    importance kv_head_contribution   at self_attn.o_proj[3]
    importance layernorm_contribution at post_attention_layernorm[3]
    importance iterative_channel      at mlp.down_proj[3] { iterations = 4 }
    importance block_influence        at layers[3]
    output { dir = "%s" }
}
"""


def test_every_importance_field_has_its_meaning_in_words(tmp_path):
    prompts = Path(__file__).resolve().parents[2] / "examples/data/prompts.jsonl"
    spec = tmp_path / "meanings.exp"
    spec.write_text(SPEC % (prompts, tmp_path / "run"), encoding="utf-8")
    expc.run(spec)
    tensors = expc.open_run(tmp_path / "run").manifest["tensors"]
    seen = set()
    for key, entry in tensors.items():
        if entry["kind"] != "importance":
            continue
        seen.add(entry["metric"])
        meaning = entry["meaning"]
        assert meaning.startswith(f"{entry['metric']} {entry['field']} of "), meaning
        words = meaning.split(": ", 1)[1]
        assert words == METRICS[entry["metric"]].field_meaning(entry["field"]), key
        assert re.search(r"important|factor", words), (key, words)
    assert seen == set(METRICS)


def test_each_score_says_its_direction():
    for metric in METRICS.values():
        assert "higher = more important" in metric.field_meaning("score"), metric.name
