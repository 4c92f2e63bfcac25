"""`Results`: the finished tensors of a run as one dict-like object (after easyroutine's cache).

Keys are the run folder's (`capture/resid_out_3`, `capture/attn_out_1.mask`,
`importance/l2_norm/layers.3.mlp.down_proj/score`, `meta/sample_index`). Beyond a dict it
offers what notebooks want: metadata, memory per key or per key family, `map_to_dict`,
`to(device)`, pickling, and `cat(*others)` to combine the results of runs over different
samples (any number at once, one concatenation per key: what easyroutine's deferred mode is
for). `cat` picks a strategy per key — a function registered for the longest matching
prefix, else the one the key's kind implies — and raises when two tensors cannot be
combined, where easyroutine would silently fall back to a list:
- a `full` capture (a `.mask` beside it) concatenates samples, padding the sequence dims;
- a `dataset_mean` (`.var` and `.count` beside it) merges the running moments exactly;
- any other capture and `meta/` concatenates samples and needs equal trailing shapes
  (`meta/sample_index` shifted so later parts' samples follow the earlier ones');
- `importance/` scores have no sample axis: merge the metric states instead, or register
  a strategy.
Registered strategies must be module-level functions for the object to stay picklable.
"""

from __future__ import annotations

import collections
import functools
import itertools
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence

import torch

from expc.runtime.aggregate.dataset_mean import Moments
from expc.runtime.aggregate.packing import padded_cat
from expc.spec.run_format import (COUNT_SUFFIX, MASK_SUFFIX, SAMPLE_INDEX, VAR_SUFFIX, key_family,
                                  split_suffix)

Aggregation = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _describe(tensors: Sequence[torch.Tensor]) -> str:
    return ", ".join(f"{t.dtype} {tuple(t.shape)}" for t in tensors)


def _concat_samples(key: str, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-sample tensors: everything after the sample axis must agree."""
    if len({(t.shape[1:], t.dtype) for t in tensors}) != 1:
        raise ValueError(f"cannot combine {key!r}: {_describe(tensors)} differ beyond the "
                         "sample axis")
    return torch.cat([t.to(tensors[0].device) for t in tensors])


def _concat_padded(key: str, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Samples of a `full` capture: only sequence-length dims (sized like dim 1) may differ."""
    def sequence_dims(tensor: torch.Tensor) -> set[int]:
        return {d for d in range(1, tensor.dim()) if tensor.shape[d] == tensor.shape[1]}

    first = tensors[0]
    for other in tensors[1:]:
        differing = {d for d in range(1, first.dim()) if first.shape[d] != other.shape[d]}
        if (first.dim() != other.dim() or first.dtype != other.dtype
                or not differing <= sequence_dims(first) & sequence_dims(other)):
            raise ValueError(f"cannot combine {key!r}: {_describe(tensors)} differ beyond "
                             "sequence length")
    return padded_cat(tensors)


class Results(MutableMapping[str, torch.Tensor]):
    """Result tensors by key, with metadata and per-prefix combination strategies."""

    def __init__(self, tensors: Mapping[str, torch.Tensor] | None = None, *,
                 metadata: Mapping[str, object] | None = None,
                 aggregations: Mapping[str, Aggregation] | None = None):
        self._tensors: MutableMapping[str, torch.Tensor] = {}
        self.metadata: dict[str, object] = dict(metadata or {})
        self._aggregations: dict[str, Aggregation] = dict(aggregations or {})
        self.update(tensors or {})

    @classmethod
    def reading(cls, tensors: Mapping[str, torch.Tensor], *,
                metadata: Mapping[str, object] | None = None) -> Results:
        """Results over a lazy mapping (a sharded run folder's tensors), read on access
        rather than copied in; keys set later are held as usual."""
        results = cls(metadata=metadata)
        results._tensors = collections.ChainMap({}, tensors)
        return results

    # The mapping.
    def __getitem__(self, key: str) -> torch.Tensor:
        return self._tensors[key]

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"result {key!r} must be a tensor, not {type(value).__name__}")
        self._tensors[key] = value

    def __delitem__(self, key: str) -> None:
        del self._tensors[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    __eq__ = object.__eq__  # tensors have no single truth value; use `equals`
    __hash__ = None  # type: ignore[assignment]

    def equals(self, other: Mapping[str, torch.Tensor]) -> bool:
        """Same keys, and every tensor equal in shape, dtype and value."""
        return set(self) == set(other) and all(
            self[key].dtype == other[key].dtype and torch.equal(self[key], other[key].to(
                self[key].device)) for key in self)

    def __repr__(self) -> str:
        return f"Results({len(self)} tensors, {self.memory_size()} bytes)"

    # Conveniences.
    def add_metadata(self, **fields: object) -> None:
        self.metadata.update(fields)

    def memory_size(self) -> int:
        """Bytes held by all tensors."""
        return sum(t.numel() * t.element_size() for t in self._tensors.values())

    def memory_tree(self, grouped: bool = True) -> dict[str, int]:
        """Bytes per key, or per key family (layers and heads generalised), largest first."""
        sizes: dict[str, int] = {}
        for key, tensor in self._tensors.items():
            name = key_family(key) if grouped else key
            sizes[name] = sizes.get(name, 0) + tensor.numel() * tensor.element_size()
        return dict(sorted(sizes.items(), key=lambda item: (-item[1], item[0])))

    def map_to_dict(self, fn: Callable[[torch.Tensor], object]) -> dict[str, object]:
        return {key: fn(tensor) for key, tensor in self._tensors.items()}

    def to(self, device: torch.device | str) -> Results:
        """A copy with every tensor on `device` (metadata and strategies kept)."""
        return Results({key: t.to(device) for key, t in self._tensors.items()},
                       metadata=self.metadata, aggregations=self._aggregations)

    # Combining two runs.
    def register_aggregation(self, prefix: str, fn: Aggregation) -> None:
        """Use `fn(mine, theirs)` in `cat` for keys starting with `prefix` (longest wins)."""
        self._aggregations[prefix] = fn

    def _registered(self, key: str) -> Aggregation | None:
        matching = [prefix for prefix in self._aggregations if key.startswith(prefix)]
        return self._aggregations[max(matching, key=len)] if matching else None

    def cat(self, *others: Results) -> Results:
        """These results followed by each of `others`' (other samples of the same
        experiment), combined in one go: one concatenation per key however many parts."""
        parts = [self, *others]
        for other in others:
            if set(self) != set(other):
                only = sorted(set(self) ^ set(other))
                raise ValueError(f"cannot combine results with different keys (e.g. "
                                 f"{only[0]!r} is in only one)")
        combined: dict[str, torch.Tensor] = {}
        for key in self:
            registered = self._registered(key)
            if registered is not None:
                combined[key] = functools.reduce(registered, [part[key] for part in parts])
            elif key not in combined:
                combined.update({name: value for name, value
                                 in self._default_combination(key, parts).items()
                                 if self._registered(name) is None})
        return Results(combined, metadata=self.metadata, aggregations=self._aggregations)

    def _default_combination(self, key: str, parts: Sequence[Results]
                             ) -> dict[str, torch.Tensor]:
        base, _ = split_suffix(key)
        if base + COUNT_SUFFIX in self:
            group = {suffix: base + suffix for suffix in ("", VAR_SUFFIX, COUNT_SUFFIX)}
            moments = [Moments.from_result({s: part[k] for s, k in group.items()})
                       for part in parts]
            merged = functools.reduce(Moments.combine, moments).as_result(self[base].dtype)
            return {group[suffix]: merged[suffix] for suffix in group}
        tensors = [part[key] for part in parts]
        if key == SAMPLE_INDEX:  # later parts' samples come after the earlier ones'
            starts = itertools.accumulate([0, *(len(t) for t in tensors[:-1])])
            tensors = [t + start for t, start in zip(tensors, starts)]
        if base + MASK_SUFFIX in self:
            return {key: _concat_padded(key, tensors)}
        if key.startswith("importance/"):
            raise ValueError(f"cannot combine {key!r}: importance scores have no sample axis; "
                             "merge the metric states, or register_aggregation a strategy")
        return {key: _concat_samples(key, tensors)}
