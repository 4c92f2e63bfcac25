"""`expc compile --emit plan` names exactly what a run writes: every key, shape and dtype.

Each spec here is planned (`plan_results`, no torch, no weights) and then run on a built-in
model; the plan must equal the run manifest's tensors key for key, its total the bytes of
the tensors in `results.safetensors`, and the file is those bytes plus the safetensors
header (8 bytes of length, then JSON of about 100 bytes plus the key per tensor). The
coverage spec is generated from the language's own lists — every site in every mode, every
metric, every effect — so a new word without a plan rule fails here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from expc.runtime.execute import RunRequest, run
from expc.runtime.result_plan import human_bytes, plan_results
from expc.spec import load
from expc.spec.run_format import MANIFEST, RESULTS
from expc.spec.vocabulary import (AGGREGATE_MODES, EFFECT_METRICS, LAYER_SITES, METRICS,
                                  MODEL_SITES)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
MINILM = REPO / ".cache" / "models" / "all-MiniLM-L6-v2"
# Examples in the order their companions must run (each consumer after the run it reads).
BUILTIN_EXAMPLES = ("quickstart", "quickstart_variant", "logit_lens", "scoring",
                    "ablation_means", "ablation", "steering_source", "steering",
                    "patching_clean", "patching")
MODES = tuple(m for m in AGGREGATE_MODES if m != "none")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the examples (their run folders land in the copy), as the working dir."""
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    for shared in (".cache", "bench"):  # the fetched MiniLM, the scoring sentences
        if (REPO / shared).exists():
            (tmp_path / shared).symlink_to(REPO / shared)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_plan_is_the_run(spec: Path, overrides: tuple[str, ...] = ()) -> None:
    """Plan `spec`, run it, and hold the plan to what the run wrote."""
    experiment = load(str(spec), overrides=overrides)
    plan = plan_results(experiment)
    results = run(RunRequest(spec_path=spec, overrides=overrides, quiet=True, force=True))
    folder = Path(results.metadata["run_dir"])
    written = json.loads((folder / MANIFEST).read_text())["tensors"]
    assert [t.key for t in plan.tensors] == list(written)  # the writer's order too
    assert {t.key: (list(t.shape), t.dtype) for t in plan.tensors} == {
        key: (entry["shape"], entry["dtype"]) for key, entry in written.items()}
    tensors = load_file(str(folder / RESULTS))
    tensor_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    assert plan.total_bytes == tensor_bytes  # the issue asks for 1%; it is exact
    header = (folder / RESULTS).stat().st_size - tensor_bytes
    assert 8 < header <= 8 + sum(len(key) + 100 for key in tensors)
    assert all(t.shape[0] == plan.data.samples for t in plan.tensors if t.per_sample)


@pytest.mark.slow
def test_every_builtin_example_writes_its_plan(project):
    for name in BUILTIN_EXAMPLES:
        assert_plan_is_the_run(Path("examples") / f"{name}.exp")


@pytest.mark.slow
@pytest.mark.skipif(not MINILM.exists(), reason="MiniLM not fetched (scripts/fetch_minilm.py)")
def test_a_trained_checkpoint_and_its_tokenizer(project):
    """MiniLM's importance example, on 12 samples, with a `full` capture: its own WordPiece
    tokenizer (specials kept when `max_length` cuts) sizes the sequence axis."""
    spec = project / "minilm.exp"
    spec.write_text("""
include "examples/minilm_importance.exp"

experiment minilm extends minilm_importance {
    data {
        max_length = 16
        limit      = 12
    }
    capture resid_out[1] as tokens { aggregate = full }
}
""", encoding="utf-8")
    assert_plan_is_the_run(spec)
    assert plan_results(load(str(spec))).data.longest == 16


def every_site_spec(folder: Path, *, model: str, sites: tuple[str, ...], data: str,
                    extra: str = "", hydra: str = "", max_length: int = 24) -> Path:
    """A spec capturing each of `sites` in every mode (as `{site}_{mode}`), plus `extra`,
    over the first 6 samples of `data`."""
    lines = []
    for site in sites:
        where = "" if site in MODEL_SITES else "[1]"
        for mode in MODES:
            lines.append(f"capture {site}{where} as {site}_{mode} {{ aggregate = {mode} }}")
    body = "\n    ".join(lines)
    path = folder / "every_site.exp"
    path.write_text(f"""
experiment every_site {{
    model = "{model}"
    {hydra}
    data {{
        source     = {data}
        batch_size = 2
        max_length = {max_length}
        limit      = 6
    }}
    {body}
    {extra}
    output {{ dir = "runs/every_site" }}
}}
""", encoding="utf-8")
    return path


HYDRA_EXTRAS = """
    capture resid_out[3] of heads[*] as late { aggregate = mean(mask = last) }
    importance l2_norm at mlp.down_proj[*]
    importance l2_norm at input_layernorm[1]
    importance channel_contribution at mlp.up_proj[2]
    importance kv_head_contribution at self_attn.o_proj[*]
    importance layernorm_contribution at post_attention_layernorm[3]
    importance iterative_channel at mlp.down_proj[0] { iterations = 2 }
    importance block_influence at layers[*]
    intervene mlp_out[2] of heads[1] { set = zero }
    intervene mlp.down_proj[3] of heads[2] { set = zero, channels = random(fraction = 0.25, seed = 0) }
    intervene self_attn.o_proj[2] of heads[3] { scale = 0.5, channels = [0, 5, 7] }
    intervene post_attention_layernorm[3] of heads[3] { set = zero, channels = random(count = 3) }
    effect kl of heads[1:] vs heads[0]
    effect top1 of heads[1:] vs heads[0]
    effect loss
    effect logit_diff { correct = field("correct"), wrong = field("wrong") }
    effect cosine of heads[1:] vs heads[0] { at = resid_out[3], aggregate = mean(mask = attention) }
"""


# `router` exists only in a mixture of experts: test_a_mixture_of_experts_router plans it.
DENSE_LAYER_SITES = tuple(site for site in LAYER_SITES if site != "router")


def test_the_coverage_spec_names_every_word():
    """The spec below covers the language: a site, metric or effect added to the vocabulary
    lands in it (and so needs a plan rule), or is listed here as left out, with why."""
    text = HYDRA_EXTRAS
    assert all(f"importance {metric} at" in text for metric in METRICS)
    assert all(f"effect {metric}" in text for metric in EFFECT_METRICS)
    assert MODES == ("full", "mean", "sum", "max", "dataset_mean")


@pytest.mark.slow
def test_every_site_mode_metric_effect_and_intervention(project):
    spec = every_site_spec(
        project, model="builtin:tiny-llama", sites=DENSE_LAYER_SITES + MODEL_SITES,
        data='jsonl("examples/data/patching_clean.jsonl", field = "text")',
        hydra="hydra { trunk = 1\n heads = 4 }", extra=HYDRA_EXTRAS)
    assert_plan_is_the_run(spec)


@pytest.mark.slow
def test_half_precision_keeps_its_dtype_where_the_run_does(project):
    """`full` and `max` keep bfloat16; sums, means and `dataset_mean` are float32."""
    spec = every_site_spec(project, model="builtin:tiny-llama",
                           sites=("resid_out", "attn_pattern", "logits"),
                           data='jsonl("examples/data/prompts.jsonl", field = "text")')
    assert_plan_is_the_run(spec, overrides=("dtype=bfloat16",))
    dtypes = {t.key: t.dtype for t in plan_results(load(str(spec), overrides=(
        "dtype=bfloat16",))).tensors}
    assert (dtypes["capture/resid_out_full_1"], dtypes["capture/resid_out_max_1"],
            dtypes["capture/resid_out_mean_1"]) == ("bfloat16", "bfloat16", "float32")


@pytest.mark.slow
def test_an_encoder(project):
    """BERT: no LM head (no `logits`, `lens`), query, key and value heads all `n_heads`."""
    spec = every_site_spec(
        project, model="builtin:tiny-bert",
        sites=tuple(s for s in DENSE_LAYER_SITES if s != "lens") + ("embed", "final_norm"),
        data='jsonl("examples/data/prompts.jsonl", field = "text")')
    assert_plan_is_the_run(spec)


@pytest.mark.slow
def test_a_mask_field_cut_by_max_length(project):
    """A mask field makes the loader tokenise the whole text and cut it at `max_length`;
    the plan's longest sample must be cut the same way."""
    spec = every_site_spec(
        project, model="builtin:tiny-llama", sites=("resid_out",),
        data='jsonl("examples/data/sentiment.jsonl", field = "text", mask_field = "positive")',
        extra='capture resid_out[2] as pos { aggregate = max(mask = field("positive")) }',
        max_length=50)  # every sample is longer; each keeps some positive tokens
    assert_plan_is_the_run(spec)
    assert plan_results(load(str(spec))).data.longest == 50


@pytest.mark.slow
def test_pre_tokenised_data_and_equal_lengths(project):
    """`tokens` data is sized without a tokenizer; with equal lengths, `dataset_mean` of an
    attention pattern is `[heads, S]`."""
    rows = [list(range(1, 1 + n)) for n in (30, 30, 30)]  # cut to max_length 24
    (project / "ids.jsonl").write_text("".join(json.dumps({"input_ids": r}) + "\n"
                                               for r in rows))
    spec = every_site_spec(project, model="builtin:tiny-olmo2", sites=("resid_out",),
                           data='tokens("ids.jsonl")',
                           extra="capture attn_pattern[2] as ap { aggregate = dataset_mean }")
    assert_plan_is_the_run(spec)
    assert plan_results(load(str(spec))).data.longest == 24


def test_plan_reads_only_the_lines_when_no_tensor_has_a_sequence_axis(project):
    plan = plan_results(load("examples/scoring.exp"))
    assert (plan.data.samples, plan.data.longest, plan.data.tokenised) == (24, None, False)


def test_bad_data_is_the_run_s_own_diagnostic(project):
    lines = ['{"text": "ok"}\n'] * 40
    lines[1] = "{oops\n"
    (project / "examples" / "data" / "prompts.jsonl").write_text("".join(lines))
    from expc.spec.diagnostics import DiagnosticError

    with pytest.raises(DiagnosticError) as info:
        plan_results(load("examples/quickstart.exp"))
    (found,) = info.value.diagnostics
    assert found.span.path.endswith("prompts.jsonl") and found.span.line == 2


@pytest.mark.parametrize("count, words", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                          (3 << 30, "3.0 GiB")])
def test_human_bytes(count, words):
    assert human_bytes(count) == words


@pytest.mark.slow
def test_units_scored_by_kv_head_contribution_are_kv_heads(project):
    """`lowest(metric = kv_head_contribution)` at `self_attn.o_proj` stores KV-head indices
    (`[K]` of n_kv_heads), not channels; a fraction rounds as the run rounds it."""
    run(RunRequest(spec_path=Path("examples/scoring.exp"), quiet=True, force=True))
    spec = project / "kv.exp"
    spec.write_text("""
experiment kv {
    model = "builtin:tiny-llama"
    hydra { trunk = 2
            heads = 3 }
    data { source = jsonl("examples/data/prompts.jsonl", field = "text")
           limit  = 4 }
    intervene self_attn.o_proj[2] of heads[1] { set = zero, channels = lowest(run = "runs/scoring", metric = kv_head_contribution, count = 1) }
    intervene mlp.down_proj[3] of heads[2] { set = zero, channels = highest(run = "runs/scoring", metric = channel_contribution, fraction = 0.3) }
    effect loss
    output { dir = "runs/kv" }
}
""", encoding="utf-8")
    assert_plan_is_the_run(spec)


@pytest.mark.slow
def test_a_mixture_of_experts_router(project):
    """Mixtral's `router` site holds one logit per expert: `[.., n_experts]`."""
    import transformers
    config = transformers.MixtralConfig(
        vocab_size=61, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=3,
        num_experts_per_tok=2, max_position_embeddings=64, pad_token_id=0)
    transformers.MixtralForCausalLM(config).save_pretrained(project / "mixtral")
    (project / "ids.jsonl").write_text("".join(json.dumps({"input_ids": list(range(1, n))}) + "\n"
                                               for n in (9, 13, 7)))
    spec = every_site_spec(project, model="mixtral", sites=("router", "mlp_out"),
                           data='tokens("ids.jsonl")')
    assert_plan_is_the_run(spec)
    router = next(t for t in plan_results(load(str(spec))).tensors if "router_full" in t.key)
    assert router.shape[-1] == 3


@pytest.mark.slow
def test_a_parquet_source(project):
    """A table source is counted and tokenised through the run's own reader."""
    import pyarrow
    import pyarrow.parquet as pq
    texts = [line for line in (project / "examples/data/prompts.jsonl").read_text().splitlines()]
    table = pyarrow.table({"text": [json.loads(line)["text"] for line in texts]})
    pq.write_table(table, project / "prompts.parquet", row_group_size=3)
    spec = every_site_spec(project, model="builtin:tiny-llama", sites=("resid_out",),
                           data='parquet("prompts.parquet", field = "text")')
    assert_plan_is_the_run(spec)
    assert plan_results(load(str(spec))).data.samples == 6
