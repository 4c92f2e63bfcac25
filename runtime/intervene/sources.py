"""The tensors interventions read from earlier run folders, each read once.

`set = mean(run)` needs a `dataset_mean` capture, `set = patch(run)` a `full` capture and
the run's token counts, `add = vector(run, key)` a stored vector, and `lowest`/`highest`
units an importance score. Each folder's manifest is read and checked once (it must be a
complete run, `expc.spec.run_format.read_run_manifest`), its results opened once through
the one reader of both layouts (one file, or shards and their index:
`expc.report.results_reader`), and each tensor moved to the run's device once. Shapes are
checked from the headers (or the index) before any tensor is read. Every problem is a diagnostic at
the span of the statement part that asked (the operation or the units), naming the run
folder and the key.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch

from expc.report.results_reader import SingleFile, Sharded, open_results
from expc.spec.diagnostics import DiagnosticError, Span, fail
from expc.spec.run_format import (TOKEN_COUNT, capture_key, importance_key,
                                  read_run_manifest, split_head_prefix)

CODE = "intervention-source"


@attrs.frozen(kw_only=True)
class _Folder:
    run: str
    tensors: dict  # the manifest's per-key descriptions
    results: SingleFile | Sharded


def candidates_by_head(build, head: int | None) -> tuple[str, ...]:
    """Keys to try in order: the same head's, the unsplit one, head 0's (duplicates once)."""
    keys = ([build(head)] if head is not None else []) + [build(None), build(0)]
    return tuple(dict.fromkeys(keys))


class RunSources:
    """Tensors of earlier run folders, opened and loaded once, on `device`."""

    def __init__(self, *, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self._folders: dict[str, _Folder] = {}
        self._loaded: dict[tuple[str, str], torch.Tensor] = {}

    def _folder(self, run: str, span: Span) -> _Folder:
        if run not in self._folders:
            try:
                manifest, results = read_run_manifest(run)
            except DiagnosticError as exc:
                raise fail(span, f"run folder `{run}` cannot be read: "
                           f"{exc.diagnostics[0].message}", code=CODE,
                           help=("give the folder of an earlier `expc run` (its `output.dir`)",)
                           ) from None
            if manifest["status"] != "complete" or results is None:
                raise fail(span, f"run folder `{run}` is not a finished run "
                           f"(status `{manifest['status']}`)", code=CODE,
                           help=("finish that run first (`expc run --resume`)",))
            self._folders[run] = _Folder(run=run, tensors=manifest.get("tensors", {}),
                                         results=open_results(results))
        return self._folders[run]

    def choose(self, run: str, keys: Sequence[str], *, span: Span, what: str) -> str:
        """The first of `keys` the run holds; else a diagnostic naming them all."""
        folder = self._folder(run, span)
        for key in keys:
            if key in folder.results.layout:
                return key
        tried = ", ".join(f"`{key}`" for key in keys)
        raise fail(span, f"run folder `{run}` holds no {what} (looked for {tried})", code=CODE,
                   help=(f"run an experiment that stores {what} into `{run}` first",))

    def shape(self, run: str, key: str, *, span: Span) -> tuple[int, ...]:
        """The stored shape of `key`, read from the header or index (no tensor is loaded)."""
        return self._folder(run, span).results.layout[key][0]

    def tensor(self, run: str, key: str, *, span: Span) -> torch.Tensor:
        """The tensor `key` of run folder `run`, on the device (loaded once)."""
        if (run, key) not in self._loaded:
            self.choose(run, (key,), span=span, what=f"key `{key}`")
            results = self._folder(run, span).results
            self._loaded[run, key] = results.read(key).to(self.device)
        return self._loaded[run, key]

    def aggregate_of(self, run: str, key: str) -> str | None:
        """The aggregation a capture key was stored with, per its manifest entry."""
        return (self._folders[run].tensors.get(key) or {}).get("aggregate")

    # What each operation and unit selection reads.
    def capture(self, run: str, *, site: str, layer: int, head: int | None, mode: str,
                width: int, span: Span) -> tuple[str, torch.Tensor]:
        """The `mode` (`dataset_mean` `[C]` or `full` `[N, S, C]`) capture of `site` at
        `layer`: the same head's, else the unsplit one, else head 0's."""
        key = self.choose(run, candidates_by_head(lambda h: capture_key(site, layer, h), head),
                          span=span, what=f"capture of {site} at layer {layer}")
        shape = self.shape(run, key, span=span)
        stored = self.aggregate_of(run, key)
        rank = 1 if mode == "dataset_mean" else 3
        if stored not in (None, mode) or len(shape) != rank or shape[-1] != width:
            want = f"[{width}]" if rank == 1 else f"[N, S, {width}]"
            raise fail(span, f"`{key}` in run folder `{run}` is {_shape(shape)}"
                       f"{'' if stored is None else f' (aggregate = {stored})'}; this "
                       f"intervention needs the {mode} capture {want}", code=CODE,
                       help=(f"capture {site}[{layer}] with `aggregate = {mode}` in that run",))
        return key, self.tensor(run, key, span=span)

    def token_counts(self, run: str, *, n_samples: int | None, span: Span) -> torch.Tensor:
        """The run's real tokens per sample `[N]` (data order); N must be this run's."""
        counts = self.tensor(run, TOKEN_COUNT, span=span)
        if n_samples is not None and counts.numel() != n_samples:
            raise fail(span, f"run folder `{run}` holds {counts.numel()} samples "
                       f"(`{TOKEN_COUNT}`), this run has {n_samples}", code=CODE,
                       help=("patching takes each sample's values from the same sample of the "
                             "same data",))
        return counts

    def vector(self, run: str, key: str, *, width: int, n_samples: int | None,
               span: Span) -> torch.Tensor:
        """A stored vector `[C]`, or one per sample `[N, C]` in data order."""
        shape = self.shape(run, self.choose(run, (key,), span=span, what=f"key `{key}`"),
                           span=span)
        per_sample = len(shape) == 2 and (n_samples is None or shape[0] == n_samples)
        if shape[-1:] != (width,) or not (len(shape) == 1 or per_sample):
            samples = "N" if n_samples is None else str(n_samples)
            raise fail(span, f"`{key}` in run folder `{run}` is {_shape(shape)}; `add` needs "
                       f"[{width}] or one row per sample [{samples}, {width}]", code=CODE)
        return self.tensor(run, key, span=span)

    def scores(self, run: str, *, metric: str, module_path: str, head: int | None,
               count: int, span: Span) -> tuple[str, torch.Tensor]:
        """`importance/{metric}/{module}/score` of the same module (same head, else unsplit,
        else head 0) with `count` entries."""
        _, rest = split_head_prefix(module_path)

        def key(h: int | None) -> str:
            return importance_key(metric, rest if h is None else f"heads.{h}.{rest}", "score")

        chosen = self.choose(run, candidates_by_head(key, head), span=span,
                             what=f"{metric} scores of {rest}")
        shape = self.shape(run, chosen, span=span)
        if shape != (count,):
            raise fail(span, f"`{chosen}` in run folder `{run}` is {_shape(shape)}; the "
                       f"units to choose from here are [{count}]", code=CODE,
                       help=("score the same model's module in that run",))
        return chosen, self.tensor(run, chosen, span=span)


def _shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"
