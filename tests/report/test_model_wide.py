"""The model-wide section on real runs: `expc run` of a tiny built-in model capturing `embed`,
`final_norm` and `logits` (per-sample, `full` and `dataset_mean` aggregations, in Hydra
heads), then reported. Norms, entropies and top token ids are checked against formulas
written out here on the stored tensors; full logits go through the chunked reader without
ever being read whole."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from matplotlib.colors import to_hex

from expc.cli import main
from expc.report import run_folder
from expc.report.build import build_report
from expc.report.figures import head_color
from expc.report.model_wide_stats import most_frequent, model_wide_families, per_sample
from expc.report.run_folder import RunFolder, open_run_folder

PROMPTS = Path(__file__).resolve().parents[2] / "examples" / "data" / "prompts.jsonl"
SAMPLES = 7
HYDRA_SPEC = """\
experiment model_wide {{
    model = "builtin:tiny-llama"
    hydra {{ trunk = 2  heads = 2 }}
    data {{
        source     = jsonl("{prompts}", field = "text")
        batch_size = 4
        max_length = 64
        limit      = {samples}
    }}
    capture embed                    {{ aggregate = mean(mask = attention) }}
    capture final_norm               {{ aggregate = full }}
    capture final_norm as final_last {{ aggregate = max(mask = last) }}
    capture logits                   {{ aggregate = mean(mask = last) }}
    capture logits as logits_full    {{ aggregate = full }}
    capture logits as logits_mean    {{ aggregate = dataset_mean }}
}}
"""
PLAIN_SPEC = """\
experiment per_layer_only {{
    model = "builtin:tiny-llama"
    data {{
        source     = jsonl("{prompts}", field = "text")
        batch_size = 4
        max_length = 16
        limit      = {samples}
    }}
    capture resid_out[*] {{ aggregate = mean }}
    capture logits       {{ aggregate = none }}
}}
"""
LABELS = ("embed (mean, mask attention)", "final_norm (full)", "final_last (max, mask last)",
          "logits (mean, mask last)", "logits_full (full)",
          "logits_mean (dataset_mean, mask attention)")


def _run(spec: str, folder: Path) -> Path:
    (folder / "spec.exp").write_text(spec.format(prompts=PROMPTS, samples=SAMPLES))
    out = folder / "run"
    with pytest.raises(SystemExit) as exited:
        main(["run", str(folder / "spec.exp"), "--out", str(out), "--quiet"])
    assert exited.value.code == 0
    return out


@pytest.fixture(scope="module")
def hydra_run(tmp_path_factory):
    """A 4-layer tiny-llama split after layer 1 into 2 heads, with every model-wide capture."""
    return _run(HYDRA_SPEC, tmp_path_factory.mktemp("hydra"))


@pytest.fixture(scope="module")
def hydra_report(hydra_run):
    return build_report(hydra_run)


def _section(html: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', html, flags=re.DOTALL)
    assert match, f"no section {anchor}"
    return match.group(1)


def _entropy_nats(logits: torch.Tensor) -> torch.Tensor:
    """-sum p ln p of softmax(logits), written out, per row of `[M, V]` -> `[M]`."""
    shifted = logits.double() - logits.double().max(dim=-1, keepdim=True).values
    p = shifted.exp() / shifted.exp().sum(dim=-1, keepdim=True)
    return -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(dim=-1)


def _l2(vectors: torch.Tensor) -> torch.Tensor:
    """sqrt(sum x^2) per row of `[M, F]` -> `[M]`."""
    return (vectors.double() ** 2).sum(dim=-1).sqrt()


def _expected(folder: RunFolder, key: str, formula) -> list[float]:
    """The formula per sample: of the stored vector, or (`full`) averaged over the sample's
    masked tokens, or of the one `dataset_mean` vector."""
    value = folder.tensor(key)
    if value.dim() == 1:
        return formula(value[None]).tolist()
    if value.dim() == 2:
        return formula(value).tolist()
    mask = folder.tensor(key + ".mask")
    return [float(formula(sample[keep]).mean()) for sample, keep in zip(value, mask)]


def _by_label(folder: RunFolder) -> dict:
    return {f.label: f for f in model_wide_families(folder)}


def test_section_has_a_figure_per_model_wide_capture(hydra_report, page_parser):
    html, summary, titles = hydra_report
    assert "Model-wide captures" in titles and "Model-wide captures" in summary
    page = page_parser(html)
    assert page.sections["model-wide"] == len(LABELS)
    section = _section(html, "model-wide")
    for label in LABELS:
        assert f"<figcaption>{label}:" in section


def test_section_is_absent_without_model_wide_captures(tmp_path, page_parser):
    run = _run(PLAIN_SPEC, tmp_path)
    folder = open_run_folder(run)
    assert not [k for k in folder.keys if "logits" in k]  # `none` keeps nothing
    html, _, titles = build_report(run)
    assert "Model-wide captures" not in titles and "Captures" in titles
    assert "model-wide" not in page_parser(html).sections
    assert model_wide_families(folder) == []


def test_norms_equal_the_formula_on_the_stored_tensors(hydra_run):
    folder = open_run_folder(hydra_run)
    found = _by_label(folder)
    assert bool((~folder.tensor("capture/head0/final_norm.mask")).any())  # padding to mask
    checked = 0
    for label in ("embed (mean, mask attention)", "final_norm (full)",
                  "final_last (max, mask last)"):
        for member in found[label].members:
            expected = _expected(folder, member.key, _l2)
            assert len(expected) == SAMPLES
            assert member.values.tolist() == pytest.approx(expected, rel=1e-9)
            checked += 1
    assert checked == 5  # embed in the trunk, final_norm and final_last in each head


def test_entropies_equal_the_formula_on_the_stored_tensors(hydra_run):
    folder = open_run_folder(hydra_run)
    found = _by_label(folder)
    for label, samples in (("logits (mean, mask last)", SAMPLES),
                           ("logits_full (full)", SAMPLES),
                           ("logits_mean (dataset_mean, mask attention)", 1)):
        family = found[label]
        assert [m.head for m in family.members] == [0, 1]
        for member in family.members:
            expected = _expected(folder, member.key, _entropy_nats)
            assert len(expected) == samples and member.whole_run == (samples == 1)
            assert member.values.tolist() == pytest.approx(expected, rel=1e-9)
            assert all(0 <= h <= math.log(member.vocab) + 1e-9 for h in expected)


def test_top_tokens_are_the_most_frequent_argmax_ids(hydra_run):
    folder = open_run_folder(hydra_run)
    found = _by_label(folder)
    for label in ("logits (mean, mask last)", "logits_full (full)"):
        for member in found[label].members:
            value = folder.tensor(member.key)  # [N, V] or [N, S, V]
            if value.dim() == 3:
                mask = folder.tensor(member.key + ".mask")  # [N, S]
                rows = [tok for sample, keep in zip(value, mask)
                        for tok, real in zip(sample, keep) if real]
                assert len(rows) == int(folder.tensor("meta/token_count").sum())
            else:
                rows = list(value)
            counts = Counter(int(row.argmax()) for row in rows)
            expected = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:10]
            assert list(member.top_tokens) == expected and member.top_by == "count"
    for member in found["logits_mean (dataset_mean, mask attention)"].members:
        averaged = folder.tensor(member.key).tolist()  # [V]
        expected = sorted(enumerate(averaged), key=lambda item: (-item[1], item[0]))[:10]
        assert list(member.top_tokens) == expected
        assert member.top_by == "mean logit"


def test_hydra_heads_each_get_their_line_in_their_color(hydra_run, hydra_report):
    found = _by_label(open_run_folder(hydra_run))
    assert [m.head for m in found["embed (mean, mask attention)"].members] == [None]
    for label in LABELS[1:]:
        assert [m.head for m in found[label].members] == [0, 1]
    figures = re.findall(r"<figure>(.*?)</figure>", _section(hydra_report[0], "model-wide"),
                         flags=re.DOTALL)
    by_label = {re.search(r"<figcaption>(.*?):", f).group(1): f for f in figures}
    for label in ("final_norm (full)", "logits (mean, mask last)", "logits_full (full)"):
        svg = by_label[label]
        for head in (0, 1):
            assert f"head {head} (mean" in svg  # its legend entry
            assert f"stroke: {to_hex(head_color(head))}" in svg  # its line
    assert "uniform: ln 259" in by_label["logits (mean, mask last)"]
    section = _section(hydra_report[0], "model-wide")
    assert ("<th>head 0 id</th><th>head 0 token</th><th>head 0 count</th><th>head 1 id</th>"
            in section)


def test_full_logits_go_through_the_chunked_reader(hydra_run, monkeypatch):
    folder = open_run_folder(hydra_run)
    whole = {m.key: m for f in model_wide_families(folder) for m in f.members}
    full_keys = {"capture/head0/logits_full", "capture/head1/logits_full"}
    slices: Counter = Counter()
    read_slices, read_whole = RunFolder.chunks, RunFolder.tensor

    def counting_chunks(self, key, rows):
        for part in read_slices(self, key, rows):
            slices[key] += 1
            yield part

    def refusing_tensor(self, key):
        assert key not in full_keys, f"{key} was read whole"
        return read_whole(self, key)

    monkeypatch.setattr(run_folder, "CHUNK_ELEMENTS", 1)  # one sample per slice
    monkeypatch.setattr(RunFolder, "chunks", counting_chunks)
    monkeypatch.setattr(RunFolder, "tensor", refusing_tensor)
    sliced = {m.key: m for f in model_wide_families(folder) for m in f.members}
    for key in full_keys:
        assert slices[key] == SAMPLES and slices[key + ".mask"] == SAMPLES
        assert sliced[key].per_token
        assert torch.allclose(sliced[key].values, whole[key].values, rtol=1e-12, atol=0)
        assert sliced[key].top_tokens == whole[key].top_tokens


def test_padding_never_reaches_a_full_capture_value():
    statistic = torch.tensor([[1.0, 3.0, float("nan")], [2.0, float("inf"), 0.0]])  # [N, S]
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)  # [N, S]
    assert per_sample(statistic, mask).tolist() == [2.0, 2.0]
    assert per_sample(torch.tensor(4.0), None).tolist() == [4.0]  # dataset_mean: one value


def test_most_frequent_breaks_ties_by_id_and_drops_zero_counts():
    counts = torch.tensor([0, 2, 5, 2, 0, 1])
    assert most_frequent(counts, k=3) == ((2, 5), (1, 2), (3, 2))
    assert most_frequent(counts) == ((2, 5), (1, 2), (3, 2), (5, 1))
