"""Numbers the model-wide section plots: one value per sample for `embed`, `final_norm` and
`logits` captures, computed from the stored tensors alone.

For `embed` and `final_norm` the value is the L2 norm of the sample's captured vector; for
`logits` it is the entropy, in nats, of the softmax of the sample's captured logits, and the
logits' argmax is counted per token id (the most frequent top predictions). A `full`
capture `[N, S, F]` gets the value of every token, averaged over the sample's masked tokens
(and every masked token's argmax is counted); `mean`/`sum`/`max` captures `[N, F]` have one
vector per sample; a `dataset_mean` `[F]` is a single vector, so a single value (and its
highest logits stand in for the argmax counts).

Captures are read a slice of samples at a time (`capture_slices.masked_slices`): full logits
`[N, S, V]` are never held whole. Captures with the same name and aggregation form a family,
one member per Hydra head (or the trunk alone: `embed`, and any capture without a split).
"""

from __future__ import annotations

import attrs
import torch

from expc.report import run_folder
from expc.report.capture_slices import masked_slices
from expc.report.capture_stats import capture_site
from expc.report.run_folder import RunFolder
from expc.spec.run_format import KeyInfo, parse_key
from expc.spec.vocabulary import MODEL_SITES

LOGIT_SITES = ("logits",)
TOP_TOKENS = 10


@attrs.frozen(kw_only=True)
class ModelWideCapture:
    """One model-wide capture key, reduced to a value per sample."""

    key: str
    head: int | None  # Hydra head; None in the trunk or without a split
    values: torch.Tensor  # [N] float64 (norm or entropy); [1] for a dataset_mean
    per_token: bool  # a `full` capture: each value is a mean over the sample's masked tokens
    whole_run: bool  # a `dataset_mean`: one vector for the whole run, so one value
    top_tokens: tuple[tuple[int, int | float], ...] = ()  # logits: (token id, score), best first
    top_by: str = ""  # logits: the score, "count" (of argmax) or "mean logit" (dataset_mean)
    vocab: int | None = None  # logits: the vocabulary size

    @property
    def place(self) -> str:
        return "trunk" if self.head is None else f"head {self.head}"


@attrs.frozen(kw_only=True)
class ModelWideFamily:
    """The captures of one model-wide name and aggregation: the trunk's or one per head."""

    site: str  # embed | final_norm | logits
    name: str  # the `as` name or the site
    aggregate: str
    mask: str | None
    members: tuple[ModelWideCapture, ...]  # trunk first, then heads ascending

    @property
    def label(self) -> str:
        how = ", ".join(x for x in (self.aggregate, self.mask and f"mask {self.mask}") if x)
        return f"{self.name} ({how})" if how else self.name

    @property
    def is_logits(self) -> bool:
        return self.site in LOGIT_SITES

    @property
    def whole_run(self) -> bool:
        """A `dataset_mean` family: one value per member, no distribution over samples."""
        return all(m.whole_run for m in self.members)


def token_norms(value: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each vector along the last axis: `[..., F] -> [...]` (float64)."""
    return value.double().norm(dim=-1)


def token_entropies(value: torch.Tensor) -> torch.Tensor:
    """The entropy in nats of the softmax of each logit vector: `[..., V] -> [...]`."""
    probabilities = value.double().softmax(dim=-1)  # [..., V]
    return torch.special.entr(probabilities).sum(dim=-1)  # -p ln p, 0 where p = 0


def blockwise(statistic, value: torch.Tensor) -> torch.Tensor:
    """`statistic` of every vector of `value` `[..., F] -> [...]`, computed on blocks of about
    `run_folder.CHUNK_ELEMENTS` values, so its float64 temporaries stay bounded even when one
    sample's slice (`[S, V]` logits) is large."""
    flat = value.reshape(-1, value.shape[-1])  # [M, F]
    rows = max(1, run_folder.CHUNK_ELEMENTS // max(1, value.shape[-1]))
    parts = [statistic(flat[start:start + rows]) for start in range(0, flat.shape[0], rows)]
    joined = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)  # [M]
    return joined.reshape(value.shape[:-1])


def per_sample(statistic: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A statistic of a slice as one value per sample: `[n, S]` (full) averaged over each
    row's masked tokens, `[n]` as is, a scalar (dataset_mean) as `[1]`."""
    if statistic.dim() == 0:
        return statistic[None]
    if statistic.dim() == 1:
        return statistic
    weights = (torch.ones_like(statistic, dtype=torch.bool) if mask is None
               else mask.bool())  # [n, S]
    total = torch.where(weights, statistic, 0.0).sum(dim=1)  # [n]; padding may hold anything
    return total / weights.sum(dim=1).clamp_min(1)


def argmax_counts(value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """How often each token id is the argmax of a slice's logits `[..., V]`, over samples
    (and over the masked tokens of a full capture): `[V]` int64."""
    ids = value.argmax(dim=-1)  # [n, S], [n] or []
    if ids.dim() == 2 and mask is not None:
        ids = ids[mask.bool()]
    return torch.bincount(ids.reshape(-1), minlength=value.shape[-1])


def _ranked(scores: torch.Tensor, k: int) -> list[int]:
    """The ids of the `k` highest scores `[V]`, ties by ascending id."""
    return torch.sort(scores, descending=True, stable=True).indices[:k].tolist()


def most_frequent(counts: torch.Tensor, k: int = TOP_TOKENS) -> tuple[tuple[int, int], ...]:
    """The `k` ids with the highest nonzero counts `[V]`, ties by ascending id."""
    return tuple((i, int(counts[i])) for i in _ranked(counts, k) if counts[i] > 0)


def highest_logits(logits: torch.Tensor,
                   k: int = TOP_TOKENS) -> tuple[tuple[int, float], ...]:
    """The `k` ids with the highest logits `[V]` (a `dataset_mean`), ties by ascending id."""
    return tuple((i, float(logits[i])) for i in _ranked(logits.double(), k))


def _capture(folder: RunFolder, info: KeyInfo, site: str) -> ModelWideCapture | None:
    shape, _ = folder.layout[info.key]
    if len(shape) not in (1, 2, 3) or shape[-1] == 0:
        return None
    logits = site in LOGIT_SITES
    statistic = token_entropies if logits else token_norms
    single = len(shape) == 1  # dataset_mean: one vector for the whole run
    values, counts, top = [], torch.zeros(shape[-1], dtype=torch.int64), ()
    for value, mask in masked_slices(folder, info.key):
        values.append(per_sample(blockwise(statistic, value), mask))
        if logits and single:
            top = highest_logits(value)
        elif logits:
            counts += argmax_counts(value, mask)
    joined = torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)
    if joined.numel() == 0:
        return None
    top_fields = {} if not logits else {
        "vocab": shape[-1], "top_tokens": top if single else most_frequent(counts),
        "top_by": "mean logit" if single else "count"}
    return ModelWideCapture(key=info.key, head=info.head, values=joined,
                            per_token=len(shape) == 3, whole_run=single, **top_fields)


def _is_model_wide(folder: RunFolder, info: KeyInfo) -> bool:
    return (info.kind == "capture" and info.suffix is None
            and folder.entry(info.key).get("layer", info.layer) is None
            and capture_site(folder, info) in MODEL_SITES)


def model_wide_families(folder: RunFolder) -> list[ModelWideFamily]:
    """Every model-wide capture of the run, grouped by name and aggregation, in forward order
    (embed, final_norm, logits)."""
    grouped: dict[tuple[str, str], list] = {}
    for info in (parse_key(k) for k in folder.keys):
        if not _is_model_wide(folder, info):
            continue
        site = capture_site(folder, info)
        found = _capture(folder, info, site)
        if found is None:
            continue
        entry = folder.entry(info.key)
        slot = grouped.setdefault((info.name, entry.get("aggregate", "")),
                                  [site, entry.get("mask"), []])
        slot[2].append(found)
    order = {site: i for i, site in enumerate(MODEL_SITES)}
    families = [
        ModelWideFamily(site=site, name=name, aggregate=aggregate, mask=mask,
                        members=tuple(sorted(members,
                                             key=lambda m: -1 if m.head is None else m.head)))
        for (name, aggregate), (site, mask, members) in grouped.items()]
    return sorted(families, key=lambda f: (order[f.site], f.name, f.aggregate))
