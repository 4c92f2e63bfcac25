"""`expc prune --metric block_influence` on scores the real metric wrote (not hand-made keys):
the layer it removes is the lowest-scored one, and the pruned folder loads with expc."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import expc
from expc.cli import main
from expc.models.loading import load_model

REPO = Path(__file__).resolve().parents[2]
SPEC = """
experiment bi {{
    model = "builtin:tiny-llama"
    data {{ source = jsonl("{data}", field = "text")  batch_size = 8  limit = 16 }}
    importance block_influence at layers[*]
    output {{ dir = "{out}" }}
}}
"""


def test_prune_removes_the_lowest_block_influence_layer(tmp_path, capsys):
    spec = tmp_path / "bi.exp"
    spec.write_text(SPEC.format(data=REPO / "examples/data/prompts.jsonl", out=tmp_path / "run"))
    expc.run(spec)
    scores = expc.open_run(tmp_path / "run").tensors
    by_layer = torch.stack([scores[f"importance/block_influence/layers.{L}/score"]
                            for L in range(4)])
    try:
        main(["prune", str(tmp_path / "run"), "--metric", "block_influence", "--keep", "3",
              "-o", str(tmp_path / "pruned")])
    except SystemExit as exited:
        assert exited.code in (0, None)
    record = json.loads((tmp_path / "pruned" / "expc_prune.json").read_text())
    assert record["removed_layers"] == [int(by_layer.argmin())]
    model = load_model(str(tmp_path / "pruned"))
    assert model.config.n_layers == 3
