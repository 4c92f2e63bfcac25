"""The run section: the Hydra split drawn as trunk -> heads, model, data, timings, provenance,
the spec (highlighted) and the table of every result key.

It is drawn from the manifest alone, so even a `running` run with no results yet has it,
plus a warning naming every result tensor that holds NaN or inf (`report/nonfinite.py`):
expc fails such runs today, but an older one or an edited results file may hold them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from expc.report.figures import FULL_WIDTH, TRUNK_COLOR, head_color, new_figure, to_svg
from expc.report.highlight import highlight
from expc.report.html_parts import Section, esc, facts, figure, fmt_number, table
from expc.report.nonfinite import NonFiniteCount
from expc.report.run_folder import RunFolder
from expc.report.tokens import TokenText
from expc.spec.model_shape import ARCHITECTURES

MAX_DRAWN_HEADS = 8
MAX_SHOWN_TOKENS = 24  # tokens per sample in the samples table


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str) -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02",
                                facecolor="white", edgecolor=color, linewidth=1.5))
    ax.text(x, y, text, ha="center", va="center", fontsize=10, color=color)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10,
                                 color="#777777", linewidth=1))


def output_label(architecture: str | None, *, shared: bool) -> str:
    """What the model ends in: a decoder's final norm and LM head, an encoder's last hidden
    state (no LM head), or just `output` for an architecture this expc does not know."""
    facts = ARCHITECTURES.get(architecture or "")
    if facts is None:
        return "output"
    if not facts.has_lm_head:
        return "encoder output\n(last hidden state, no lm_head)"
    return "final_norm\n+ lm_head" + (" (shared)" if shared else "")


def hydra_svg(n_layers: int, trunk: int, heads: int, architecture: str | None = None) -> str:
    """Trunk -> heads -> shared output as an SVG diagram; without a split (one head), the
    one path embed -> layers -> output."""
    split = heads > 1 and trunk < n_layers
    drawn = min(heads, MAX_DRAWN_HEADS) if split else 1
    fig = new_figure(FULL_WIDTH, max(1.6, 0.5 * drawn + 0.6), left=0.05, right=0.05,
                     bottom=0.05, top=0.05)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.6 * drawn, 0.6 * drawn)
    if not split:
        _box(ax, 1.6, 0, 2.8, 0.8, "embed", TRUNK_COLOR)
        _box(ax, 5.0, 0, 2.9, 0.8, f"layers 0-{n_layers - 1}", TRUNK_COLOR)
        _box(ax, 8.6, 0, 2.4, 0.8, output_label(architecture, shared=False), TRUNK_COLOR)
        _arrow(ax, (3.0, 0), (3.55, 0))
        _arrow(ax, (6.45, 0), (7.4, 0))
        return to_svg(fig)
    trunk_text = f"trunk\nembed + layers 0-{trunk - 1}" if trunk > 0 else "trunk\nembed"
    _box(ax, 1.6, 0, 2.8, 0.8, trunk_text, TRUNK_COLOR)
    _box(ax, 8.6, 0, 2.4, 0.8, output_label(architecture, shared=True), TRUNK_COLOR)
    ys = numpy.linspace(0.6 * (drawn - 1), -0.6 * (drawn - 1), drawn)
    for head, y in enumerate(ys):
        label = f"head {head}: layers {trunk}-{n_layers - 1}"
        if head == drawn - 1 and heads > drawn:
            label = f"... {heads - drawn + 1} more heads"
        _box(ax, 5.0, y, 2.9, 0.5, label, head_color(head))
        _arrow(ax, (3.0, 0), (3.55, y))
        _arrow(ax, (6.45, y), (7.4, 0))
    return to_svg(fig)


def _run_facts(manifest: Mapping, folder: RunFolder) -> str:
    model = manifest.get("model", {})
    hydra = model.get("hydra", {})
    data = manifest.get("data", {})
    timings = manifest.get("timings", {})
    seconds = timings.get("seconds", {})
    versions = manifest.get("versions", {})
    spec = manifest.get("spec", {})
    checkpoint = manifest.get("checkpoint") or {}
    rows = [
        ("status", manifest.get("status")),
        ("run folder", str(folder.path)),
        ("model", model.get("path")),
        ("architecture", model.get("architecture")),
        ("device", model.get("device") or "not recorded (run by an older expc)"),
        ("layers", model.get("n_layers")),
        ("hydra split", f"trunk {hydra.get('trunk')}, heads {hydra.get('heads')}"
         if hydra else None),
        ("data", data.get("source")),
        ("samples / tokens / batches",
         " / ".join(fmt_number(data.get(k)) for k in ("samples", "tokens", "batches"))
         if data else None),
        ("started", timings.get("started")),
        ("finished", timings.get("finished")),
        ("seconds (load / compile / run / total)",
         " / ".join(fmt_number(seconds.get(k)) for k in ("load", "compile", "run", "total"))
         if seconds else None),
        ("tokens/s", fmt_number(timings.get("tokens_per_s"))),
        ("samples/s", fmt_number(timings.get("samples_per_s"))),
        ("spec", spec.get("path")),
        ("spec sha256", spec.get("sha256")),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
        ("checkpoint", (f"{folder.path / str(checkpoint.get('dir'))} "
                        f"({checkpoint.get('batches_done')} batches done)" if checkpoint
                        else None)),
    ]
    return facts(rows)


def _error_block(manifest: Mapping) -> str:
    problem = manifest.get("error")
    if not problem:
        return ""
    lines = [problem.get("message", "")]
    for d in problem.get("diagnostics", []):
        lines.append(f"{d.get('path')}:{d.get('line')}:{d.get('col')}: {d.get('message')}")
    return f'<pre class="error">{esc(chr(10).join(lines))}</pre>'


def _nonfinite_warning(nonfinite: Mapping[str, NonFiniteCount]) -> str:
    if not nonfinite:
        return ""
    rows = [(key, count.nan, count.posinf, count.neginf) for key, count in nonfinite.items()]
    return (f'<div class="banner failed">{len(rows)} result tensors hold NaN or inf values: '
            "their figures and statistics are not meaningful</div>"
            + table(("key", "NaN", "+inf", "-inf"), rows))


def _keys_table(folder: RunFolder) -> str:
    if not folder.keys:
        return ""
    rows = []
    for key in folder.keys:
        entry = folder.entry(key)
        shape, dtype = folder.layout[key]
        rows.append((key, "x".join(map(str, shape)) or "scalar", dtype, entry.get("meaning", "")))
    return (f"<details><summary>{len(rows)} result tensors</summary>"
            f"{table(('key', 'shape', 'dtype', 'meaning'), rows)}</details>")


def _samples_table(tokens: TokenText) -> str:
    """The first samples as the model saw them: text and tokens (from `data.preview`)."""
    if not tokens.samples:
        return ""
    rows = [(s.index, "-" if s.line is None else s.line, len(s.ids),
             " ".join(tokens.token(i) for i in s.ids[:MAX_SHOWN_TOKENS])
             + (" …" if len(s.ids) > MAX_SHOWN_TOKENS else ""), s.text)
            for s in tokens.samples.values()]
    return (f"<details><summary>First {len(rows)} samples as tokenized</summary>"
            + table(("sample", "data line", "tokens", "token text", "text"), rows)
            + "</details>")


def run_section(folder: RunFolder, *,
                nonfinite: Mapping[str, NonFiniteCount] | None = None) -> Section:
    """The run's description; always present. `nonfinite`: the keys holding NaN or inf."""
    manifest = folder.manifest
    model = manifest.get("model", {})
    hydra = model.get("hydra") or {}
    n_layers = int(model.get("n_layers") or 0)
    trunk = int(hydra.get("trunk", n_layers))
    heads = int(hydra.get("heads", 1))
    caption = (f"Hydra split: layers 0-{trunk - 1} shared, {heads} heads each own layers "
               f"{trunk}-{n_layers - 1}" if heads > 1 and trunk < n_layers
               else "no Hydra split: one path through every layer")
    spec_text = manifest.get("spec", {}).get("text")
    spec = (f"<h3>Spec</h3><pre class=\"spec\">{highlight(spec_text)}</pre>" if spec_text else "")
    body = (_error_block(manifest) + _nonfinite_warning(nonfinite or {})
            + figure(hydra_svg(n_layers, trunk, heads, model.get("architecture")), caption)
            + _run_facts(manifest, folder) + spec
            + _samples_table(TokenText.from_manifest(manifest)) + _keys_table(folder))
    return Section(anchor="run", title="Run", body=body)
