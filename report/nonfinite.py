"""Which result tensors of a run folder hold NaN or inf, counted slice by slice.

The runtime fails a run whose results would hold non-finite values, but a folder written by
an older expc, or a results file edited since, may still hold them; the report's Run section
and `expc diff` name those keys rather than plot or compare garbage silently. Only
floating-point tensors can hold NaN or inf; large ones are read a slice at a time
(`RunFolder.chunks`), so the count never holds a whole `full` capture.
"""

from __future__ import annotations

import attrs
import torch

from expc.report.run_folder import RunFolder

FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")  # safetensors' names of the float dtypes


@attrs.frozen(kw_only=True)
class NonFiniteCount:
    """How many NaN, +inf and -inf values a tensor holds."""

    nan: int = 0
    posinf: int = 0
    neginf: int = 0

    @property
    def total(self) -> int:
        return self.nan + self.posinf + self.neginf

    def __add__(self, other: NonFiniteCount) -> NonFiniteCount:
        return NonFiniteCount(nan=self.nan + other.nan, posinf=self.posinf + other.posinf,
                              neginf=self.neginf + other.neginf)

    def __str__(self) -> str:
        parts = [(self.nan, "NaN"), (self.posinf, "+inf"), (self.neginf, "-inf")]
        return ", ".join(f"{count} {name}" for count, name in parts if count) or "none"


def count_nonfinite(tensor: torch.Tensor) -> NonFiniteCount:
    """The NaN and infinities of one tensor (zero for a non-float one)."""
    if not tensor.is_floating_point():
        return NonFiniteCount()
    return NonFiniteCount(nan=int(torch.isnan(tensor).sum()),
                          posinf=int(torch.isposinf(tensor).sum()),
                          neginf=int(torch.isneginf(tensor).sum()))


def nonfinite_keys(folder: RunFolder) -> dict[str, NonFiniteCount]:
    """Every float result key holding NaN or inf, with its counts, in key order."""
    found = {}
    for key in folder.keys:
        if folder.layout[key][1] not in FLOAT_DTYPES:
            continue
        count = NonFiniteCount()
        for part in folder.chunks(key, folder.rows_per_chunk(key)):
            count += count_nonfinite(part)
        if count.total:
            found[key] = count
    return found
