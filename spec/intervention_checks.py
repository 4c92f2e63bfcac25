"""Checks of interventions and effects against the model's shape and the run folders they
read — from `config.json` and the folders' manifests, never a weight or a tensor.

- the split: an intervention on a trunk layer under an explicit trunk (help: `trunk = auto`
  or a smaller trunk); `trunk = auto` resolves like the model does (`split_trunk`);
- the architecture: module roles it has, an LM head for `loss`, `kl`, `top1` and
  `logit_diff`, `cosine`'s `at` layer in range and inside the heads;
- the sources: each `run = "DIR"` a finished run folder whose manifest lists the key the
  run will read (for `mean`/`patch` the capture of the same head, else the unsplit one,
  else head 0's; for `lowest`/`highest` the scores likewise) with the width the model's
  config gives the target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from expc.spec import ir
from expc.spec import vocabulary as vocab
from expc.spec.diagnostics import Diagnostic, DiagnosticError, Span, error
from expc.spec.model_shape import ATTENTION_OUTPUT, ModelShape
from expc.spec.run_format import capture_key, importance_key, read_run_manifest

CODE = "intervention-source"


def split_trunk(hydra: ir.Hydra | None, interventions: Iterable[ir.Intervention],
                n_layers: int) -> int:
    """The trunk the model will be split at: `n_layers` without a split; `trunk = auto`
    the smallest intervened layer, at most `n_layers - 1` (out-of-range layers are reported
    elsewhere and left out here)."""
    if hydra is None:
        return n_layers
    if hydra.trunk is not None:
        return hydra.trunk
    return deepest_trunk(interventions, n_layers)


def deepest_trunk(interventions: Iterable[ir.Intervention], n_layers: int) -> int:
    """`trunk = auto`: the deepest trunk that keeps every intervention inside the heads — the
    smallest layer any intervention resolves to, capped at `n_layers - 1` so the heads hold
    at least one layer. The one home of the rule (`models.hydra_split` builds with it)."""
    layers = [layer for iv in interventions if not iv.layers.out_of_range(n_layers)
              for layer in iv.layers.resolve(n_layers)]
    return min([n_layers - 1, *layers])


def check_interventions(exp: ir.Experiment, shape: ModelShape, *, trunk: int,
                        layers_of: Callable[[ir.IndexSelector], tuple[int, ...] | None]
                        ) -> list[Diagnostic]:
    """Every problem of `exp`'s interventions and effects against `shape`; `layers_of`
    resolves a selector (reporting a layer out of range) or gives None."""
    out: list[Diagnostic] = []
    sources = _Sources()
    for iv in exp.interventions:
        layers = layers_of(iv.layers)
        if iv.target_kind != "site" and iv.target not in shape.modules:
            out.append(shape.no_module(iv.target, iv.target_span))
            continue
        why = shape.facts.missing_site(iv.target) if iv.target_kind == "site" else None
        if why is not None:
            out.append(error(iv.target_span, f"{shape.model_type} models have no "
                             f"`{iv.target}`: {why}", code="site"))
            continue
        if layers is None:
            continue
        in_trunk = [layer for layer in layers if layer < trunk]
        if exp.hydra is not None and in_trunk:
            out.append(error(iv.layers.span, f"layer {in_trunk[0]} sits in the shared trunk "
                             f"(layers 0..{trunk - 1}): an intervention there would change "
                             "every head", code="trunk",
                             help=(f"`trunk = {vocab.AUTO_TRUNK}` splits below the first "
                                   f"intervened layer, or write `trunk = {min(layers)}` or "
                                   "smaller",)))
            continue
        places = [(layer, _heads(exp.hydra, iv.heads, layer, trunk)) for layer in layers]
        out.extend(_sources_of(iv, shape, places, sources))
    for effect in exp.effects:
        out.extend(_effect(effect, shape, trunk, split=exp.hydra is not None))
    return out


def _heads(hydra: ir.Hydra | None, selector: ir.IndexSelector | None, layer: int,
           trunk: int) -> tuple[int | None, ...]:
    if hydra is None or layer < trunk:
        return (None,)
    return tuple(range(hydra.heads)) if selector is None else selector.resolve(hydra.heads)


def _effect(effect: ir.Effect, shape: ModelShape, trunk: int, *, split: bool) -> list[Diagnostic]:
    needs_lm = vocab.EFFECT_METRICS[effect.metric][1]
    if needs_lm and not shape.facts.has_lm_head:
        return [error(effect.span, f"{shape.model_type} models have no LM head, and "
                      f"`{effect.metric}` reads next-token logits", code="effect",
                      help=("compare hidden states with `effect cosine vs heads[0] "
                            f"{{ at = resid_out[{shape.n_layers - 1}] }}`" if split else
                            "an encoder's effects compare heads with `cosine`",))]
    if effect.at_layer is None:
        return []
    where = f"`at = {effect.at_site}[{effect.at_layer}]`"
    if effect.at_layer >= shape.n_layers:
        return [error(effect.span, f"{where}: layer {effect.at_layer} is out of range, the model "
                      f"has {shape.n_layers} layers (0..{shape.n_layers - 1})", code="range")]
    if split and effect.at_layer < trunk:
        return [error(effect.span, f"{where} sits in the shared trunk (layers 0..{trunk - 1}): "
                      "every head sees the same value there", code="range",
                      help=(f"compare at a layer from {trunk} on",))]
    return []


# run folders --------------------------------------------------------------------------
class _Sources:
    """Each run folder's manifest, read once: its `tensors` map, or why it cannot be used."""

    def __init__(self) -> None:
        self._folders: dict[str, dict | str] = {}

    def tensors(self, run: str) -> dict | str:
        if run not in self._folders:
            self._folders[run] = _read(run)
        return self._folders[run]


def _read(run: str) -> dict | str:
    try:
        manifest, results = read_run_manifest(run)
    except DiagnosticError as exc:
        return f"run folder `{run}` cannot be read: {exc.diagnostics[0].message}"
    if manifest["status"] != "complete" or results is None:
        return f"run folder `{run}` is not a finished run (status `{manifest['status']}`)"
    return manifest.get("tensors", {})


def _candidates(build: Callable[[int | None], str], head: int | None) -> tuple[str, ...]:
    """The keys a source is read from, in order: the same head's, the unsplit one, head 0's."""
    return tuple(dict.fromkeys([*([build(head)] if head is not None else []), build(None),
                                build(0)]))


def _sources_of(iv: ir.Intervention, shape: ModelShape,
                places: list[tuple[int, tuple[int | None, ...]]],
                sources: _Sources) -> list[Diagnostic]:
    """The first problem with what the operation and the units read, each at its span."""
    out = []
    op, units = iv.operation, iv.channels
    width = shape.target_width(iv.target, iv.target_kind)
    for layer, heads in places:
        for head in heads:
            if op.kind in ("mean", "patch") and not out:
                mode = "dataset_mean" if op.kind == "mean" else "full"
                out.extend(_need(sources, op.run, _candidates(
                    lambda h: capture_key(iv.target, layer, h), head), span=op.span,
                    what=f"{mode} capture of {iv.target} at layer {layer}",
                    fits=_capture_fits(mode, width), want=_capture_shape(mode, width),
                    fix=f"capture {iv.target}[{layer}] with `aggregate = {mode}` in that run"))
    if op.kind == "add":
        out.extend(_need(sources, op.run, (op.key,), span=op.span, what=f"key `{op.key}`",
                         fits=lambda s: len(s) in (1, 2) and s[-1] == width,
                         want=f"[{width}] or one row per sample [N, {width}]",
                         fix="store a vector of the target's width in that run"))
    if units is not None and units.kind in ("lowest", "highest"):
        kv = iv.target == ATTENTION_OUTPUT and units.metric == "kv_head_contribution"
        count = shape.n_kv_heads if kv else width
        for layer, heads in places:
            path = f"layers.{layer}.{iv.target}"
            found = _need(sources, units.run, _candidates(
                lambda h: importance_key(units.metric, path if h is None else f"heads.{h}.{path}",
                                         "score"), heads[0]), span=units.span,
                what=f"{units.metric} scores of {path}", fits=lambda s: s == [count],
                want=f"[{count}]", fix=f"score {iv.target} with `importance {units.metric}` in "
                "that run")
            if found:
                out.extend(found)
                break
    return out[:2]


def _capture_fits(mode: str, width: int) -> Callable[[list], bool]:
    rank = 1 if mode == "dataset_mean" else 3
    return lambda s: len(s) == rank and s[-1] == width


def _capture_shape(mode: str, width: int) -> str:
    return f"[{width}]" if mode == "dataset_mean" else f"[N, S, {width}]"


def _need(sources: _Sources, run: str, keys: tuple[str, ...], *, span: Span, what: str,
          fits: Callable[[list], bool], want: str, fix: str) -> list[Diagnostic]:
    """A diagnostic unless run folder `run` lists one of `keys` (the first held is the one
    read) with a shape that `fits`."""
    tensors = sources.tensors(run)
    if isinstance(tensors, str):
        return [error(span, tensors, code=CODE,
                      help=("give the folder of a finished `expc run` (its `output.dir`); run "
                            "that experiment first",))]
    key = next((k for k in keys if k in tensors), None)
    if key is None:
        tried = ", ".join(f"`{k}`" for k in keys)
        return [error(span, f"run folder `{run}` holds no {what} (looked for {tried})",
                      code=CODE, help=(fix,))]
    shape = (tensors[key] or {}).get("shape") if isinstance(tensors[key], dict) else None
    if not isinstance(shape, list) or not fits(shape):
        return [error(span, f"`{key}` in run folder `{run}` has shape {shape}; this "
                      f"intervention needs {want}", code=CODE, help=(fix,))]
    return []
