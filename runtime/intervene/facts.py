"""What edits and unit selection need to know about the model beyond the plan.

An intervention's target value is `[B, S, C]` at run time, but its units are chosen before
the first batch (a fraction of C, a score vector that must have C entries, a stored vector
of width C), so C comes from the model: a linear module's input width (its weight's second
dim), a norm's output width (its weight), or a site's width from the config.
"""

from __future__ import annotations

import attrs
import torch

from expc.compiler.plan import InterventionEntry


@attrs.frozen(kw_only=True)
class ModelFacts:
    """The model's attention layout and the width of every intervention's target value."""

    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    module_widths: dict[str, int] = attrs.field(factory=dict)  # module path -> target width

    @classmethod
    def from_model(cls, model: torch.nn.Module, entries: tuple[InterventionEntry, ...] = ()
                   ) -> ModelFacts:
        """Facts of a loaded model (`model.config`), with the widths of `entries`' modules."""
        config = model.config
        widths = {}
        for entry in entries:
            if entry.module_path is not None:
                weight = model.get_submodule(entry.module_path).weight
                widths[entry.module_path] = weight.shape[1 if entry.kind == "linear" else 0]
        return cls(n_heads=config.n_attention_heads, n_kv_heads=config.n_kv_heads,
                   head_dim=config.head_dim, hidden_size=config.hidden_size,
                   intermediate_size=config.intermediate_size, module_widths=widths)

    def width(self, entry: InterventionEntry) -> int:
        """C, the channels of the value the intervention edits (trailing dims flattened)."""
        if entry.module_path is not None:
            return self.module_widths[entry.module_path]
        return {"mlp_post": self.intermediate_size,
                "q": self.n_heads * self.head_dim, "z": self.n_heads * self.head_dim,
                "k": self.n_kv_heads * self.head_dim,
                "v": self.n_kv_heads * self.head_dim,
                "values": self.n_kv_heads * self.head_dim}.get(entry.site, self.hidden_size)

    def unit_count(self, entry: InterventionEntry) -> int:
        """D, how many units there are to choose from: KV heads or channels."""
        return self.n_kv_heads if entry.kv_units else self.width(entry)

    def kv_channels(self, groups: torch.Tensor) -> torch.Tensor:
        """KV-head indices -> the `o_proj` input channels of their query heads, sorted.

        Group g holds query heads g*r .. g*r + r - 1 (r = n_heads / n_kv_heads), and query
        head q the channels q*head_dim .. (q+1)*head_dim - 1: one block of r*head_dim.
        """
        block = self.n_heads // self.n_kv_heads * self.head_dim
        offsets = torch.arange(block, dtype=torch.int64)
        return (groups.to(torch.int64)[:, None] * block + offsets).reshape(-1)
