"""Study `compile_time`: what compiling a spec costs as the model gets deeper.

Trace + every pass (`compile_plan`) of a Llama-shaped model built on the meta device (no
weights: this is the compiler alone), for `resid_out[*]` into a masked mean, and for the same
plus `l2_norm` at every layer's `mlp.down_proj` (`bench_compiler`'s `compile_seconds`). Wall
and CPU seconds, medians over repetitions; the growth exponent says whether the cost stays
linear in the number of layers (1.0) or worse.
"""

from __future__ import annotations

import math

from bench.bench_compiler import compile_seconds_by_layers, config
from bench.results import StudyResult, StudyVerdict

NAME = "compile_time"
DESCRIPTION = ("Compile time (trace + passes, meta device) against the number of layers, for "
               "`resid_out[*]` and for `resid_out[*]` plus a metric at every `mlp.down_proj`")
LAYERS = {"full": (4, 8, 16, 32, 64), "quick": (4, 16)}
REPEATS = {"full": 3, "quick": 2}
TARGET_LAYERS, TARGET_SECONDS = 32, 2.0


def shape() -> str:
    """The compiled model's shape, as `bench_compiler` builds it."""
    built = config(1)
    return (f"hidden {built.hidden_size}, intermediate {built.intermediate_size}, "
            f"{built.n_attention_heads} heads, {built.n_kv_heads} KV heads")


def growth_exponent(seconds_by_layers: dict[int, float]) -> float | None:
    """Slope of log(seconds) against log(layers) between the fewest and the most layers:
    1.0 is linear growth, 2.0 quadratic; None with fewer than two layer counts."""
    if len(seconds_by_layers) < 2:
        return None
    low, high = min(seconds_by_layers), max(seconds_by_layers)
    return math.log(seconds_by_layers[high] / seconds_by_layers[low]) / math.log(high / low)


def row_cells(n_layers: int, found: dict) -> tuple[str, ...]:
    resid, metrics = found["resid"], found["resid_metrics"]
    return (str(n_layers), f"{resid['wall_s']:.2f} s", f"{resid['cpu_s']:.2f} s",
            f"{1000 * resid['wall_s'] / n_layers:.0f} ms", f"{metrics['wall_s']:.2f} s",
            f"{metrics['cpu_s']:.2f} s")


def verdicts(found: dict[int, dict]) -> tuple[StudyVerdict, ...]:
    """The compiler's target: a 32-layer spec (`resid_out[*]`) compiles in under 2 s."""
    if TARGET_LAYERS not in found:
        return ()
    wall = found[TARGET_LAYERS]["resid"]["wall_s"]
    return (StudyVerdict(target=f"compile a {TARGET_LAYERS}-layer `resid_out[*]` spec in "
                                f"< {TARGET_SECONDS:.0f} s",
                         measured=f"{wall:.2f} s wall", met=wall < TARGET_SECONDS),)


def measure(*, quick: bool) -> StudyResult:
    mode = "quick" if quick else "full"
    found = compile_seconds_by_layers(LAYERS[mode], REPEATS[mode])
    exponents = {kind: growth_exponent({n: f[kind]["wall_s"] for n, f in found.items()})
                 for kind in ("resid", "resid_metrics")}
    note = ""
    if exponents["resid"] is not None:
        note = (f"growth exponent of wall time in layers {exponents['resid']:.2f} "
                f"(with metrics {exponents['resid_metrics']:.2f}; 1.0 = linear)")
    return StudyResult(
        name=NAME, description=DESCRIPTION, status="ok", note=note,
        settings=(f"layers {', '.join(map(str, LAYERS[mode]))}; {shape()}; "
                  f"{REPEATS[mode]} repetitions, medians"),
        columns=("layers", "`resid_out[*]` wall", "CPU", "wall per layer",
                 "+ metric per layer: wall", "CPU"),
        rows=tuple(row_cells(n, f) for n, f in found.items()),
        raw={"by_layers": found, "growth_exponent": exponents},
        verdicts=verdicts(found))
