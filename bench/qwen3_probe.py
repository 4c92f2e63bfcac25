"""One method of the `qwen3` study in this fresh process: seconds and peak RSS.

    python -m bench.qwen3_probe METHOD CHECKPOINT DATA BATCH OUT

METHOD `hf`: `transformers.AutoModel` (the trunk, no LM head: nothing downstream of the
residual stream is asked for) in bf16, `output_hidden_states=True`, each layer's output
reduced to a per-sample masked mean, batches right-padded as `expc run` forms them.
METHOD `expc`: `expc.run` of a spec capturing `resid_out[*]` with `aggregate = mean` over
the same token file and batch size. Both import torch, transformers and expc first; the RSS
then is the starting point (`bench.rss_probe`). Prints one JSON line: load and batch-loop
seconds, wall seconds of the whole method, peak RSS above the start and in total (MiB).
METHOD `tl`: TransformerLens 4's `TransformerBridge` over the same HF model (its causal LM,
the way its docs show), `run_with_cache` of every `blocks.L.hook_resid_post`, the same
masked means; run by an interpreter that has `transformer_lens` (the study finds one).
Each method's per-layer means go to OUT/means.pt for the study's cross-check.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

import expc  # imported by every method, so each starts from the same RSS
from bench.rss_probe import reset_peak, status_mib


def _batches(data: Path, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rows = [json.loads(line)["ids"] for line in data.read_text().splitlines() if line]
    out = []
    for start in range(0, len(rows), batch):
        group = rows[start:start + batch]
        width = max(map(len, group))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in group])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in group])
        out.append((ids, mask))
    return out


def _masked_means(hidden, mask: torch.Tensor) -> torch.Tensor:
    """[layers, B, H]: each layer's per-sample mean over the real tokens, in float32."""
    weights = mask[..., None].to(torch.float32)
    return torch.stack([(h.float() * weights).sum(1) / weights.sum(1) for h in hidden])


def _loop(data: Path, batch: int, out: Path, forward) -> float:
    """Seconds of the batch loop; `forward(ids, mask)` returns each layer's output."""
    started = time.perf_counter()
    with torch.inference_mode():
        means = [_masked_means(forward(ids, mask), mask) for ids, mask in _batches(data, batch)]
    seconds = time.perf_counter() - started
    torch.save(torch.cat(means, dim=1), out / "means.pt")
    return seconds


def run_hf(checkpoint: Path, data: Path, batch: int, out: Path) -> dict:
    started = time.perf_counter()
    model = transformers.AutoModel.from_pretrained(checkpoint, dtype=torch.bfloat16).eval()
    load = time.perf_counter() - started
    loop = _loop(data, batch, out, lambda ids, mask: model(
        input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1:])
    return {"load_s": load, "loop_s": loop}


def run_tl(checkpoint: Path, data: Path, batch: int, out: Path) -> dict:
    from transformer_lens.model_bridge import TransformerBridge

    started = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.bfloat16)
    bridge = TransformerBridge.boot_transformers(str(checkpoint), hf_model=model.eval(),
                                                 dtype=torch.bfloat16)
    load = time.perf_counter() - started
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(bridge.cfg.n_layers)]

    def forward(ids, mask):
        _, cache = bridge.run_with_cache(ids, attention_mask=mask,
                                         names_filter=lambda name: name in names)
        return [cache[name] for name in names]

    return {"load_s": load, "loop_s": _loop(data, batch, out, forward)}


def run_expc(checkpoint: Path, data: Path, batch: int, out: Path) -> dict:
    spec = out / "qwen3.exp"
    spec.write_text(f"""experiment qwen3_resid {{
    model = "{checkpoint}"
    dtype = bfloat16
    device = cpu
    data {{ source = tokens("{data}", field = "ids")  batch_size = {batch} }}
    capture resid_out[*] {{ aggregate = mean }}
    output {{ dir = "{out / 'run'}" }}
}}
""")
    expc.run(spec, force=True, quiet=True)
    results = load_file(str(out / "run" / "results.safetensors"))
    layers = sum(key.startswith("capture/resid_out_") for key in results)
    torch.save(torch.stack([results[f"capture/resid_out_{layer}"] for layer in range(layers)]),
               out / "means.pt")
    seconds = json.loads((out / "run" / "manifest.json").read_text())["timings"]["seconds"]
    return {"load_s": seconds["load"] + seconds.get("compile", 0.0), "loop_s": seconds["run"]}


def main() -> None:
    method, checkpoint, data, batch, out = sys.argv[1:6]
    reset_peak()
    start = status_mib("VmRSS")
    started = time.perf_counter()
    runner = {"hf": run_hf, "expc": run_expc, "tl": run_tl}[method]
    result = runner(Path(checkpoint), Path(data), int(batch), Path(out))
    result.update(wall_s=time.perf_counter() - started,
                  peak_mib=status_mib("VmHWM") - start, peak_total_mib=status_mib("VmHWM"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
