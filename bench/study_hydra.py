"""Study `hydra`: does sharing the trunk buy the speed-up it should?

One forward of a Hydra model with N heads (trunk = half the layers) against N forwards of the
unsplit model, on the same checkpoint and batch, paired per repetition (`bench_model`'s
`hydra_versus_full`). The ideal counts layers: N*L / (trunk + N*(L - trunk)); every head also
runs the shared `lm_head`, so the ideal with `lm_head` counted is shown beside it. The
checkpoint's vocabulary is small (4096: `lm_head` costs about 0.6 of a layer) so the study
measures the layer-bound case; the target is judged against the layers-only ideal, the
stricter of the two.
"""

from __future__ import annotations

import logging

import attrs
import torch

from bench.bench_model import (HEADS, REPO, SHAPE, TRUNK, ensure_checkpoint, hydra_versus_full,
                               random_inputs)
from bench.results import StudyResult, StudyVerdict

log = logging.getLogger("bench.study_hydra")

NAME = "hydra"
DESCRIPTION = (f"Hydra with N heads ({TRUNK} of {SHAPE['num_hidden_layers']} layers shared) in one "
               "forward against N forwards of the unsplit model, and against the ideal speed-up")
HEAD_COUNTS = (1, 2, HEADS)
TARGET_FRACTION = 0.9
COLUMNS = ("heads N", "N unsplit forwards", "one Hydra forward", "speed-up (min–max)",
           "ideal (layers)", "of ideal", "ideal incl. lm_head", "of that ideal")


@attrs.frozen(kw_only=True)
class Settings:
    vocab: int
    batch: int
    seq: int
    repeats: int


FULL = Settings(vocab=4096, batch=4, seq=128, repeats=5)
QUICK = Settings(vocab=4096, batch=2, seq=128, repeats=3)


def row_cells(found: dict) -> tuple[str, ...]:
    """One table row from `hydra_versus_full`'s numbers."""
    timing = found["speedup_vs_full_forwards"]
    spread = f"{min(timing['ratios']):.2f}–{max(timing['ratios']):.2f}"
    return (str(found["heads"]),
            f"{timing['median_s_first'] * 1000:.0f} ms",
            f"{timing['median_s_second'] * 1000:.0f} ms",
            f"{timing['median_ratio']:.2f}× ({spread})",
            f"{found['ideal_speedup']:.2f}×",
            f"{100 * found['fraction_of_ideal']:.0f}%",
            f"{found['ideal_with_lm_head']:.2f}×",
            f"{100 * found['fraction_of_ideal_with_lm_head']:.0f}%")


def verdict(found: dict) -> StudyVerdict:
    """The target at one N: the measured speed-up reaches 90% of the layers-only ideal."""
    speedup = found["speedup_vs_full_forwards"]["median_ratio"]
    return StudyVerdict(
        target=f"Hydra with {found['heads']} heads ≥ {TARGET_FRACTION:.0%} of the ideal speed-up",
        measured=(f"{speedup:.2f}× of an ideal {found['ideal_speedup']:.2f}×: "
                  f"{found['fraction_of_ideal']:.0%}"),
        met=found["fraction_of_ideal"] >= TARGET_FRACTION)


def measure(*, quick: bool) -> StudyResult:
    from expc.models.loading import load_model

    settings = QUICK if quick else FULL
    folder = ensure_checkpoint(REPO / f".cache/bench-model/llama-v{settings.vocab}", settings.vocab)
    single = load_model(folder)
    ids, mask = random_inputs(settings.batch, settings.seq)  # [B, S] each
    found = []
    with torch.inference_mode():
        for heads in HEAD_COUNTS:
            log.info("hydra: %d heads vs %d forwards, %d repetitions", heads, heads, settings.repeats)
            found.append(hydra_versus_full(folder, single, ids, mask, settings.repeats,
                                           heads=heads, trunk=TRUNK))
    return StudyResult(
        name=NAME, description=DESCRIPTION, status="ok",
        settings=(f"random Llama (hidden {SHAPE['hidden_size']}, intermediate "
                  f"{SHAPE['intermediate_size']}, {SHAPE['num_hidden_layers']} layers, vocabulary "
                  f"{settings.vocab}); batch {settings.batch} × {settings.seq} tokens; "
                  f"N = {', '.join(map(str, HEAD_COUNTS))}; {settings.repeats} repetitions "
                  "(order alternating)"),
        columns=COLUMNS,
        rows=tuple(row_cells(f) for f in found),
        raw={"settings": attrs.asdict(settings), "trunk": TRUNK, "by_heads": found},
        verdicts=tuple(verdict(f) for f in found if f["heads"] > 1))
