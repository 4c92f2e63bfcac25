"""Numbers the captures section plots, computed from the captured tensors alone.

Every capture becomes per-sample vectors `[N, H]`: a `mean`/`sum`/`max` capture already is
one, a `full` capture `[N, S, H]` is averaged over its mask's tokens, a `dataset_mean` `[H]`
is one vector. Captures with the same name and aggregation form a family: the trunk's
layers plus each head's layers. From a family come the per-layer mean norm, the cosine
similarity between consecutive layers along each head's path, and the disagreement across
heads at a layer (variance across heads, averaged over samples and channels).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import attrs
import torch

from expc.report.capture_slices import masked_slices
from expc.report.run_folder import RunFolder
from expc.spec.run_format import KeyInfo, parse_key

NOT_VECTORS = ("attn_pattern",)  # sites whose captures are not hidden states
FLOAT_TOLERANCE = 1e-5  # relative: heads closer than this agree to float precision


@attrs.frozen(kw_only=True)
class Family:
    """The captures of one name and aggregation, by layer: trunk and per head."""

    name: str
    aggregate: str
    trunk: Mapping[int, torch.Tensor]  # layer -> [N, H] float64
    heads: Mapping[int, Mapping[int, torch.Tensor]]  # head -> layer -> [N, H] float64

    @property
    def label(self) -> str:
        return f"{self.name} ({self.aggregate})" if self.aggregate else self.name

    @functools.cached_property
    def disagreement(self) -> list[tuple[int, float]]:
        """`head_disagreement`, computed once (the captures section asks several times)."""
        return head_disagreement(self)

    @functools.cached_property
    def identical(self) -> bool:
        """`heads_identical`, computed once (the captures section asks several times)."""
        return heads_identical(self)

    def paths(self) -> dict[int | None, list[tuple[int, torch.Tensor]]]:
        """Each head's forward path (trunk layers then its own), or the trunk alone."""
        trunk = sorted(self.trunk.items())
        if not self.heads:
            return {None: trunk}
        return {h: trunk + sorted(layers.items()) for h, layers in sorted(self.heads.items())}


def capture_site(folder: RunFolder, info: KeyInfo) -> str:
    """The site a capture key holds (its `as` name, if any, hides it in the key)."""
    return folder.entry(info.key).get("site", info.name)


def sample_vectors(value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """A capture as per-sample vectors `[N, H]` (float64), or None if it has no such form."""
    value = value.double()
    if value.dim() == 1:  # [H], dataset_mean
        return value[None]
    if value.dim() == 2:  # [N, H]
        return value
    if value.dim() == 3:  # [N, S, H] full
        weights = (torch.ones(value.shape[:2], dtype=torch.float64) if mask is None
                   else mask.double())  # [N, S]
        counts = weights.sum(dim=1, keepdim=True).clamp_min(1.0)  # [N, 1]
        return (value * weights[..., None]).sum(dim=1) / counts
    return None


def _stream_vectors(folder: RunFolder, key: str) -> torch.Tensor | None:
    """`sample_vectors` of a stored capture, read a slice of samples at a time."""
    parts = [sample_vectors(value, mask) for value, mask in masked_slices(folder, key)]
    if not parts or any(part is None for part in parts):
        return None
    return torch.cat(parts)


def families(folder: RunFolder) -> list[Family]:
    """Every per-layer hidden-state capture of the run, grouped into families."""
    wanted = [parse_key(k) for k in folder.keys]
    wanted = [i for i in wanted if i.kind == "capture" and i.suffix is None
              and i.layer is not None and capture_site(folder, i) not in NOT_VECTORS]
    grouped: dict[tuple[str, str], dict] = {}
    for info in wanted:
        vectors = _stream_vectors(folder, info.key)
        if vectors is None:
            continue
        aggregate = folder.entry(info.key).get("aggregate", "")
        slot = grouped.setdefault((info.name, aggregate), {"trunk": {}, "heads": {}})
        if info.head is None:
            slot["trunk"][info.layer] = vectors
        else:
            slot["heads"].setdefault(info.head, {})[info.layer] = vectors
    return [Family(name=name, aggregate=aggregate, trunk=slot["trunk"], heads=slot["heads"])
            for (name, aggregate), slot in sorted(grouped.items())]


def mean_norm(vectors: torch.Tensor) -> float:
    """Mean over samples of the L2 norm of each sample's vector."""
    return float(vectors.norm(dim=-1).mean())


def consecutive_cosine(path: list[tuple[int, torch.Tensor]]) -> list[tuple[int, float]]:
    """(L+1, mean over samples of cos(x_L, x_{L+1})) for each consecutive pair on a path."""
    out = []
    for (layer, a), (next_layer, b) in zip(path, path[1:]):
        if next_layer == layer + 1 and a.shape == b.shape:
            cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)  # [N]
            out.append((next_layer, float(cos.mean())))
    return out


def head_disagreement(family: Family) -> list[tuple[int, float]]:
    """(layer, variance across heads averaged over samples and channels) where >= 2 heads
    captured that layer."""
    layers = sorted({layer for per_head in family.heads.values() for layer in per_head})
    out = []
    for layer in layers:
        stack = [per_head[layer] for per_head in family.heads.values() if layer in per_head]
        if len(stack) >= 2 and all(s.shape == stack[0].shape for s in stack):
            out.append((layer, float(torch.stack(stack).var(dim=0, unbiased=False).mean())))
    return out


def _largest(value: torch.Tensor) -> float:
    return float(value.abs().max()) if value.numel() else 0.0


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float rounding, relative to the larger magnitude of the two."""
    if a.shape != b.shape:
        return False
    return _largest(a - b) <= FLOAT_TOLERANCE * max(_largest(a), _largest(b), 1e-30)


def heads_identical(family: Family) -> bool:
    """True when the family has >= 2 heads and every head captured the same layers with the
    same values as head 0 up to float rounding (a Hydra split without interventions or
    `head_models`: the heads are copies of one model)."""
    heads = list(family.heads.values())
    if len(heads) < 2:
        return False
    first = heads[0]
    return all(other.keys() == first.keys()
               and all(_close(first[layer], value) for layer, value in other.items())
               for other in heads[1:])


def captured_layers(family: Family) -> set[int]:
    """Every layer the family captured, trunk and heads."""
    return set(family.trunk) | {layer for per_head in family.heads.values() for layer in per_head}
