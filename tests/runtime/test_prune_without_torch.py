"""`expc prune` of a checkpoint folder moves bytes and never imports torch (whose import
alone takes about as long as copying a 1B-parameter model's shards): the sizes come from the
config fields every family reads alike, the checkpoint's names from the torch-free
`expc.models.checkpoint_names`, which must reach every parameter each family's block has;
and the scores are read from either results layout."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import expc
from expc.models.checkpoint import INDEX_FILE, open_checkpoint
from expc.models.checkpoint_names import CHECKPOINT_NAMES
from expc.models.config import parse_common
from expc.models.hydra import HydraTransformer
from expc.models.registry import read_config, supported
from expc.runtime.prune.export import PruneRequest, prune
from expc.runtime.prune.rules import layer_parameter_keys
from expc.runtime.prune.writer import tensor_source
from expc.spec.model_shape import ARCHITECTURES
from expc.spec.run_format import RESULTS, RESULTS_INDEX
from prune_support import CONFIGS, FAMILIES, build, layer_run, scoring_run, write_data

pytestmark = pytest.mark.slow

# Runs the command line, then says whether torch was imported on the way.
PROBE = """
import sys
from expc.cli import main
try:
    main(sys.argv[1:])
finally:
    print("torch imported:", "torch" in sys.modules)
"""


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notorch")
    hf = build("llama", folder / "ckpt", max_shard_size="20KB")  # a sharded checkpoint
    return folder, hf, scoring_run(folder, folder / "ckpt", hf.config.vocab_size)


@pytest.mark.parametrize("metric", ["channel_contribution", "kv_head_contribution",
                                    "block_influence"])
def test_pruning_a_checkpoint_folder_never_imports_torch(tmp_path, scored, metric):
    folder, _, run = scored
    if metric == "block_influence":  # windows per layer are read too (Qwen2's, say)
        run = layer_run(tmp_path / "layers", folder / "ckpt", [0.3, 0.1, 0.2])
    out = tmp_path / "pruned"
    done = subprocess.run([sys.executable, "-c", PROBE, "prune", str(run), "--metric", metric,
                           "--fraction", "0.5", "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout
    assert (out / INDEX_FILE).is_file()


def test_names_and_ownership_cover_the_checkpoint_families_alike():
    assert set(CHECKPOINT_NAMES) == set(ARCHITECTURES) == set(supported())


@pytest.mark.parametrize("family", [*FAMILIES, *CONFIGS])
def test_checkpoint_names_reach_every_parameter_of_the_built_block(tmp_path, family):
    """The parameters `expc prune` finds from a real checkpoint's keys (the spec's module
    roles through `checkpoint_names`) are exactly the built model's layer parameters, but
    Mixtral's experts, which it keeps whole or drops with their layer."""
    build(family, tmp_path)
    checkpoint = open_checkpoint(tmp_path)
    cfg = parse_common(checkpoint.config, "config.json")
    owners = layer_parameter_keys(cfg.model_type, cfg, tensor_source(checkpoint).shapes())
    found = {f"layers.{o.layer}.{o.name}" for group in owners.values() for o in group}
    model = HydraTransformer.build(read_config(checkpoint.config), init_device="meta")
    built = {name for name, _ in model.named_parameters()
             if name.startswith("layers.") and ".mlp.experts." not in name}
    assert found == built
    assert cfg.intermediate_size == model.config.intermediate_size  # sizes read alike
    assert (cfg.n_kv_heads, cfg.head_dim) == (model.config.n_kv_heads, model.config.head_dim)


def test_scores_of_a_sharded_run_are_read_through_its_index(tmp_path, scored):
    """A scoring run whose per-sample captures went to shards prunes exactly as the
    one-file run of the same scores."""
    folder, hf, one_file = scored
    write_data(tmp_path / "data.jsonl", hf.config.vocab_size)
    spec = tmp_path / "sharded.exp"
    spec.write_text(f"""
experiment sharded {{
    model = "{folder / 'ckpt'}"
    data {{ source = tokens("{tmp_path / 'data.jsonl'}")  batch_size = 2 }}
    capture resid_out[*] {{ aggregate = full }}
    importance channel_contribution at mlp.down_proj[*]
    output {{ dir = "{tmp_path / 'run'}"  shard_size = "1KB" }}
}}
""")
    expc.run(spec)
    assert (tmp_path / "run" / RESULTS_INDEX).is_file() and not (tmp_path / "run" / RESULTS).exists()
    outs = []
    for name, run in (("sharded", tmp_path / "run"), ("one-file", one_file)):
        result = prune(PruneRequest(run=run, metric="channel_contribution", fraction=0.25,
                                    out=tmp_path / name))
        outs.append(result.provenance["removed"])
    assert outs[0] == outs[1]
    index = json.loads((tmp_path / "sharded" / INDEX_FILE).read_text())
    for shard in set(index["weight_map"].values()):
        tensors = load_file(str(tmp_path / "sharded" / shard))
        again = load_file(str(tmp_path / "one-file" / shard))
        assert all(torch.equal(tensors[k], again[k]) for k in tensors)
