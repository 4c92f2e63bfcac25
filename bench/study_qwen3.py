"""Study `qwen3`: `expc run` capturing every layer's `resid_out` on a ~0.5B Qwen3-like model
in bf16, against the plain Hugging Face forward with `output_hidden_states=True`.

A random Qwen3 checkpoint (QK-norm, tied embeddings, Qwen3-0.6B's widths with 24 layers:
0.53B parameters) is built once under `.cache/bench`. Per repetition each method runs once
in a fresh process (`bench.qwen3_probe`; order alternating), so one run gives both its time
and its peak memory: the batch loop (expc: the manifest's `run` seconds; HF: the forward
loop with a per-sample masked mean of each hidden state, what a user does with them), load
time and peak RSS above the imports. The HF side is `AutoModel` (no LM head), since nothing
past the residual stream is asked for; expc's compiled graph drops the head likewise. The
issue's targets: expc's loop <= 1.1x HF's, its peak memory <= HF's.

TransformerLens (4.x's `TransformerBridge`, which supports Qwen3) joins as a third method
when an interpreter with `transformer_lens` is found: `$EXPC_BENCH_TL_PYTHON`, else
`.venv-bench/bin/python` (`bench/setup_env.sh`); it is not one of expc's requirements. A
throwaway one that shares .venv's torch and transformers (installs in ~2 minutes):
`python3 -m venv /tmp/tlvenv`, a `.pth` file in its site-packages naming .venv's
site-packages, then `/tmp/tlvenv/bin/python -m pip install transformer-lens==4.3.0`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.results import StudyResult, StudyVerdict
from bench.workloads import CACHE_DIR

log = logging.getLogger("bench.study_qwen3")

NAME = "qwen3"
DESCRIPTION = ("`expc run` with `resid_out[*]` (mean) on a ~0.5B random Qwen3 in bf16 against "
               "Hugging Face's forward with `output_hidden_states=True`")
TIME_RATIO, MEMORY_RATIO = 1.1, 1.0
SHAPES = {  # hidden, intermediate, layers, heads, KV heads, head_dim, vocabulary
    "full": (1024, 3072, 24, 16, 8, 128, 151936),
    "quick": (128, 256, 2, 4, 2, 32, 1000),
}
DATA = {"full": (16, 4, 32), "quick": (4, 2, 8)}  # samples, batch size, longest sample
REPEATS = {"full": 3, "quick": 1}


def parameters(shape: tuple[int, ...]) -> int:
    hidden, inter, layers, heads, kv, head_dim, vocab = shape
    attention = hidden * head_dim * (2 * heads + 2 * kv) + 2 * head_dim
    return vocab * hidden + layers * (attention + 3 * hidden * inter + 2 * hidden) + hidden


def build_checkpoint(shape: tuple[int, ...], folder: Path) -> Path:
    """A random Qwen3 checkpoint in bf16 (built once)."""
    import torch
    import transformers

    if (folder / "config.json").exists():
        return folder
    hidden, inter, layers, heads, kv, head_dim, vocab = shape
    config = transformers.Qwen3Config(
        hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim,
        vocab_size=vocab, tie_word_embeddings=True, max_position_embeddings=512)
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(config).to(torch.bfloat16)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    model.save_pretrained(staging)
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


def write_data(path: Path, *, samples: int, longest: int, vocab: int) -> int:
    """Random token ids of mixed lengths (longest/2 .. longest); returns the real tokens."""
    rng = random.Random(0)
    lengths = [longest] + [rng.randint(longest // 2, longest) for _ in range(samples - 1)]
    path.write_text("".join(json.dumps({"ids": [rng.randrange(1, vocab) for _ in range(n)]})
                            + "\n" for n in lengths))
    return sum(lengths)


def tl_python() -> str | None:
    """An interpreter that can import transformer_lens, or None."""
    for python in (os.environ.get("EXPC_BENCH_TL_PYTHON"), ".venv-bench/bin/python"):
        if python and Path(python).exists() and subprocess.run(
                [python, "-c", "import transformer_lens"], capture_output=True).returncode == 0:
            return python
    return None


def probe(method: str, checkpoint: Path, data: Path, batch: int, out: Path,
          python: str = sys.executable) -> dict:
    out.mkdir()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([python, "-m", "bench.qwen3_probe", method, str(checkpoint),
                           str(data), str(batch), str(out)],
                          capture_output=True, text=True, check=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _agreement(folder: Path, method: str) -> float:
    """Largest |method - HF| of the per-sample means over layers 0..L-2 (HF's last hidden
    state has the final norm applied, the others' last resid_out does not)."""
    import torch

    hf = torch.load(folder / "hf" / "means.pt")
    ours = torch.load(folder / method / "means.pt")
    return float((ours[:-1].float() - hf[:-1]).abs().max())


def measure(*, quick: bool) -> StudyResult:
    mode = "quick" if quick else "full"
    shape, (samples, batch, longest) = SHAPES[mode], DATA[mode]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    checkpoint = build_checkpoint(shape, CACHE_DIR / f"qwen3-{mode}")
    pythons = {"hf": sys.executable, "expc": sys.executable}
    tl = tl_python()
    if tl is not None:
        pythons["tl"] = tl
    runs: dict[str, list[dict]] = {method: [] for method in pythons}
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as folder:
        work = Path(folder)
        tokens = write_data(work / "ids.jsonl", samples=samples, longest=longest,
                            vocab=shape[-1])
        for rep in range(REPEATS[mode]):
            order = list(pythons) if rep % 2 == 0 else list(pythons)[::-1]
            for method in order:
                shutil.rmtree(work / method, ignore_errors=True)
                runs[method].append(probe(method, checkpoint, work / "ids.jsonl", batch,
                                          work / method, pythons[method]))
            log.info("rep %d: %s", rep, ", ".join(
                f"{m} loop {r[-1]['loop_s']:.2f} s peak +{r[-1]['peak_mib']:.0f} MiB"
                for m, r in runs.items()))
        diffs = {m: _agreement(work, m) for m in runs if m != "hf"}
    paired = {m: sorted(r["loop_s"] / h["loop_s"] for r, h in zip(rs, runs["hf"]))
              for m, rs in runs.items()}
    ratios = paired["expc"]
    ratio = ratios[len(ratios) // 2]
    best = {m: min(r["loop_s"] for r in rs) for m, rs in runs.items()}
    peak = {m: max(r["peak_mib"] for r in rs) for m, rs in runs.items()}
    total = {m: max(r["peak_total_mib"] for r in rs) for m, rs in runs.items()}
    load = {m: min(r["load_s"] for r in rs) for m, rs in runs.items()}
    hidden, inter, layers, heads, kv, head_dim, vocab = shape
    n_batches = -(-samples // batch)
    labels = {"hf": "HF `AutoModel`, `output_hidden_states=True` + masked mean",
              "expc": "`expc run`, `resid_out[*]` mean",
              "tl": "TransformerLens `TransformerBridge.run_with_cache` + masked mean"}
    rows = tuple(
        (labels[m], f"{best[m]:.2f} s", f"{tokens / best[m]:,.0f}",
         f"{paired[m][len(paired[m]) // 2]:.2f}× ({paired[m][0]:.2f}–{paired[m][-1]:.2f})",
         f"{load[m]:.2f} s", f"+{peak[m]:,.0f} MiB", f"{total[m]:,.0f} MiB",
         f"{peak[m] / peak['hf']:.2f}×", "—" if m == "hf" else f"{diffs[m]:.1e}")
        for m in runs)
    missing = "" if "tl" in runs else ("; TransformerLens not measured: no interpreter with "
                                       "`transformer_lens` (set EXPC_BENCH_TL_PYTHON)")
    return StudyResult(
        name=NAME, description=DESCRIPTION, status="ok",
        settings=(f"random Qwen3, {parameters(shape) / 1e9:.2f}B parameters in bf16 (hidden "
                  f"{hidden}, intermediate {inter}, {layers} layers, {heads} heads, {kv} KV "
                  f"heads, head_dim {head_dim}, vocabulary {vocab}, tied embeddings); "
                  f"{samples} samples of {longest // 2}–{longest} random tokens ({tokens} "
                  f"tokens), batch {batch} ({n_batches} batches); {REPEATS[mode]} repetitions, "
                  "a fresh process per method and repetition (order alternating); CPU, "
                  "OMP_WAIT_POLICY=PASSIVE"),
        columns=("method", "batch loop (best)", "tokens/s", "loop vs HF, median (min–max)",
                 "load (+ compile)", "peak RSS Δ", "peak RSS total", "peak vs HF",
                 "max abs diff vs HF"),
        rows=rows,
        note=("max abs diff: each method's per-sample means against HF's masked means of the "
              f"same hidden states, layers 0–{layers - 2} (HF's last hidden state is after "
              "the final norm); bf16 activations, means in float32" + missing),
        raw={"runs": runs, "ratios": ratios, "paired": paired, "tokens": tokens,
             "max_abs_diff": diffs, "parameters": parameters(shape)},
        verdicts=(
            StudyVerdict(target=f"`expc run` with every `resid_out` ≤ {TIME_RATIO}× HF's "
                                "forward with `output_hidden_states=True`",
                         measured=f"{ratio:.2f}× (batch loop, median of paired ratios)",
                         met=ratio <= TIME_RATIO),
            StudyVerdict(target="`expc run`'s peak memory ≤ HF's",
                         measured=f"+{peak['expc']:,.0f} vs +{peak['hf']:,.0f} MiB above the "
                                  f"imports ({peak['expc'] / peak['hf']:.2f}×)",
                         met=peak["expc"] <= MEMORY_RATIO * peak["hf"])))
