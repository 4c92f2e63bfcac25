"""`HydraTransformer`: one shared trunk fanning out into N heads (after olmo_tap's Hydra).

The trunk is the embeddings plus layers `0..trunk-1` (`layers.{L}`); each head owns its own
modules for layers `trunk..L-1` (`heads.{h}.layers.{L}`, global `L`: distinct fx paths), whose
weights the loader shares between heads that read the same checkpoint
(`expc.models.loading`); all heads share the final `norm` and `lm_head`. A model without a
Hydra split is the same class with one head holding no layers, so every caller sees one
shape: logits `[n_heads, B, S, V]`.

Position ids follow the attention mask, so a left- or right-padded sample gives the same
numbers as the sample run alone; every query may attend to itself, so padded rows stay
finite. The architecture (Llama, OLMo2, BERT, ...) only supplies the embeddings, blocks and
final norm through `expc.models.registry`.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn

from expc.models import markers
from expc.models.config import ModelConfig
from expc.models.hydra_split import HydraSplit
from expc.models.layers import ForwardContext, RotaryEmbedding
from expc.models.registry import architecture_named


@attrs.define(kw_only=True)
class TrunkState:
    """The trunk's output and what the heads need to continue the same forward pass."""

    hidden: torch.Tensor  # [B, S, H]
    attention_mask: torch.Tensor  # [B, S]
    context: ForwardContext


class HydraHead(nn.Module):
    """One head: its own modules for the layers after the trunk, keyed by global layer number."""

    def __init__(self, *, config: ModelConfig, layers: range, head: int, build_block):
        super().__init__()
        self.layers = nn.ModuleDict({
            str(layer): build_block(config, layer, head) for layer in layers
        })


class HydraTransformer(nn.Module):
    """Shared trunk, N heads, shared final norm and `lm_head`; see the module docstring."""

    def __init__(self, *, config: ModelConfig, hydra: HydraSplit,
                 n_layers_built: int | None = None):
        super().__init__()
        if hydra.n_layers != config.n_layers:
            raise ValueError(f"hydra split covers {hydra.n_layers} layers, model has {config.n_layers}")
        built = config.n_layers if n_layers_built is None else n_layers_built
        if not 0 <= built <= config.n_layers:
            raise ValueError(f"cannot build {built} of a {config.n_layers}-layer model's layers")
        arch = architecture_named(config.model_type)
        self.config, self.hydra, self.arch, self.n_layers_built = config, hydra, arch, built
        self.embed_tokens = arch.build_embeddings(config)
        self.rotary = RotaryEmbedding(config) if arch.uses_rope else None
        self.layers = nn.ModuleDict({
            str(layer): arch.build_block(config, layer, None)
            for layer in range(min(hydra.trunk, built))
        })
        self.heads = nn.ModuleList(
            HydraHead(config=config, layers=range(hydra.trunk, max(hydra.trunk, built)), head=h,
                      build_block=arch.build_block)
            for h in range(hydra.n_heads)
        )
        if self.truncated:  # what follows the last built layer is not this model's output
            self.norm, self.lm_head = None, None
        else:
            self.norm = arch.build_final_norm(config)
            self.lm_head = arch.build_lm_head(config) if arch.has_lm_head else None
        self.tie_weights()

    @classmethod
    def build(cls, config: ModelConfig, hydra: HydraSplit | None = None, *,
              init_device: str | torch.device = "meta",
              n_layers_built: int | None = None) -> HydraTransformer:
        """Construct without weights on `init_device` (`meta`: no memory until loaded).

        `n_layers_built` keeps only the embeddings and the first that many layers (of the
        trunk and of every head): see `truncated`. None builds the whole model.
        """
        with torch.device(init_device):
            return cls(config=config, hydra=hydra or HydraSplit.single(config.n_layers),
                       n_layers_built=n_layers_built)

    @property
    def truncated(self) -> bool:
        """Built without its last layers (`Plan.layers_needed` decides how many a run
        needs): no final norm and no `lm_head`, and the forward returns each head's hidden
        state after the last built layer, `[n, B, S, H]`, with no `final_norm` or `logits`
        marker. Every marker it has computes what the whole model's does."""
        return self.n_layers_built < self.config.n_layers

    def tie_weights(self) -> None:
        """Share `lm_head.weight` with the token embeddings when the config ties them."""
        if self.lm_head is not None and self.config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def _head_marker(self, head: int) -> int | None:
        return head if self.hydra.is_split else None

    def _head_list(self, head_indices) -> list[int]:
        heads = list(range(self.hydra.n_heads)) if head_indices is None else list(head_indices)
        bad = [h for h in heads if not 0 <= h < self.hydra.n_heads]
        if bad or not heads:
            raise ValueError(f"head indices {heads} must be a non-empty subset of 0..{self.hydra.n_heads - 1}")
        return heads

    # ---- masks and positions -------------------------------------------------------------

    def _attention_mask(self, real: torch.Tensor, window: int | None) -> torch.Tensor:
        """[B, 1, S, S] bool: causal (decoders), window, real keys, and always the token itself."""
        pos = torch.arange(real.shape[1], device=real.device)  # [S]
        rel = pos[:, None] - pos[None, :]  # [S, S] query minus key position
        allowed = real[:, None, :]  # [B, 1, S]
        if self.arch.causal:
            allowed = allowed & (rel >= 0)
        if window is not None:
            allowed = allowed & (rel < window)
        allowed = allowed | (rel == 0)  # [B, S, S]
        return allowed[:, None]

    def _context(self, attention_mask: torch.Tensor) -> ForwardContext:
        """Positions (counted over real tokens only) and one attention mask per window."""
        real = attention_mask.to(torch.bool)  # [B, S]
        offsets = real.to(torch.long).cumsum(-1) - 1  # [B, S] position among real tokens
        masks = {
            window: self._attention_mask(real, window)
            for window in sorted(set(self.config.sliding_windows), key=lambda w: (w is None, w))
        }
        return ForwardContext(position_ids=offsets.clamp(min=0), masks=masks)

    # ---- forward passes ------------------------------------------------------------------

    def forward_trunk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TrunkState:
        """Embeddings and the shared layers: `input_ids [B, S]` -> hidden `[B, S, H]`."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ctx = self._context(attention_mask)
        hidden = self.embed_tokens(input_ids, ctx.position_ids)  # [B, S, H]
        hidden = markers.mark(hidden, "embed", None, None)
        if self.rotary is not None:
            ctx.cos, ctx.sin = self.rotary(ctx.position_ids, hidden.dtype)  # [B, S, d] each
        for block in self.layers.values():
            hidden = block(hidden, ctx)
        return TrunkState(hidden=hidden, attention_mask=attention_mask, context=ctx)

    def _run_head(self, state: TrunkState, head: int, last_token_only: bool) -> torch.Tensor:
        """One head's layers, final norm and `lm_head`: logits `[B, S_out, V]` (a truncated
        model's hidden state `[B, S_out, H]`)."""
        hidden = state.hidden
        for block in self.heads[head].layers.values():
            hidden = block(hidden, state.context)
        out = select_last_token(hidden, state.attention_mask) if last_token_only else hidden
        if self.truncated:
            return out
        marker = self._head_marker(head)
        out = markers.mark(self.norm(out), "final_norm", None, marker)
        if self.lm_head is not None:
            out = markers.mark(self.lm_head(out), "logits", None, marker)
        return out

    def forward_heads(self, state: TrunkState, head_indices=None, *,
                      last_token_only: bool = False) -> torch.Tensor:
        """The selected heads on a trunk output: logits `[n_selected, B, S_out, V]`."""
        return _stack([self._run_head(state, h, last_token_only) for h in self._head_list(head_indices)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                head_indices=None, last_token_only: bool = False) -> torch.Tensor:
        """`input_ids [B, S]` -> logits `[n_selected, B, S_out, V]` (S_out = 1 with last_token_only).

        Encoders without an `lm_head` return the final hidden states `[n, B, S, H]`.
        """
        state = self.forward_trunk(input_ids, attention_mask)
        return self.forward_heads(state, head_indices, last_token_only=last_token_only)


def _stack(per_head: list[torch.Tensor]) -> torch.Tensor:
    """`[n, ...]` from n tensors; a single head becomes a view, not a copy of its logits."""
    return per_head[0][None] if len(per_head) == 1 else torch.stack(per_head)


def select_last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of each sample's last real token: `[B, S, H]` -> `[B, 1, H]`."""
    positions = torch.arange(hidden.shape[1], device=hidden.device)  # [S]
    last = (positions * attention_mask.to(torch.long)).argmax(-1)  # [B]
    rows = torch.arange(hidden.shape[0], device=hidden.device)  # [B]
    return hidden[rows, last][:, None]
