"""What every importance metric shares (after NVIDIA Model Optimizer's activation hooks).

A metric is the state behind one `importance` statement at one module (a `State`,
`runtime/state_protocol.py`). The runtime feeds it (`update`) each batch's module input
`x_in` `[B, S, D]` and/or output `y_out` `[B, S, O]` (only those in `needs`) with the batch's
attention mask; padding tokens never count. A metric of whole layers (`block_influence`) is
fed its layer's `resid_in` and `resid_out` in those two places. What a batch adds to the state goes to its
`finite` watch, so a NaN or inf fails the run at that batch. Unlike the hooks it comes from,
every metric can checkpoint, resume and `merge` exactly, and accumulators stay on the
activations' device in float64 so a batch never waits for the host. Per batch, metrics work
on temporaries of their own, zeroing padding in place (`masked_fill_`, NaN-safe) rather than
allocating masked copies: on CPU each fresh `[B, S, D]` tensor costs more than its arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from expc.runtime.finite_watch import FiniteWatch
from expc.runtime.state_protocol import State
from expc.runtime.token_sums import WIDE
from expc.spec.vocabulary import METRICS, ParamSpec

INPUT, OUTPUT = "input", "output"


def checked_param(param: ParamSpec, value: object) -> object:
    """`value` if the language allows it for `param` (one of its words, or a whole number of
    at least its minimum); else a ValueError."""
    if param.choices:
        if value not in param.choices:
            raise ValueError(f"{param.name} must be one of {', '.join(param.choices)}, "
                             f"not {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int) or value < param.minimum:
        raise ValueError(f"{param.name} must be a whole number of at least {param.minimum}, "
                         f"not {value!r}")
    return value


class ImportanceMetric(State):
    """Base of the metrics; subclasses implement `_update`, `result` and the state."""

    name = ""
    needs: frozenset[str] = frozenset()
    rows = False  # what a batch adds is per sample `[B, ...]` (False: summed over the batch)
    # which of weight / n_kv_heads / head_dim / total_batches the constructor takes
    CONTEXT: tuple[str, ...] = ()

    @classmethod
    def checked_params(cls, params: Mapping[str, object]) -> dict[str, object]:
        """The statement's `{ key = value }` block with the language's defaults filled in
        (`expc.spec.vocabulary.METRICS`); unknown names and bad values are ValueErrors."""
        known = METRICS[cls.name].params
        unknown = sorted(set(params) - {param.name for param in known})
        if unknown:
            names = ", ".join(param.name for param in known) or "none"
            raise ValueError(f"{cls.name} has no parameter {unknown[0]!r} (it takes: {names})")
        return {param.name: checked_param(param, params.get(param.name, param.default))
                for param in known}

    def __init__(self) -> None:
        self._batches = 0
        self.finite = FiniteWatch()

    def update(self, x_in: torch.Tensor | None, y_out: torch.Tensor | None, *,
               attention_mask: torch.Tensor) -> None:
        """Take one batch: `x_in` `[B, S, D]`, `y_out` `[B, S, O]`, mask `[B, S]` 0/1."""
        for need, tensor in ((INPUT, x_in), (OUTPUT, y_out)):
            if need in self.needs:
                if tensor is None:
                    raise ValueError(f"{self.name} needs the module's {need}")
                if tuple(tensor.shape[:2]) != tuple(attention_mask.shape):
                    raise ValueError(f"{self.name}: module {need} {tuple(tensor.shape)} does "
                                     f"not start with the mask's {tuple(attention_mask.shape)}")
        x_in = None if x_in is None else x_in.detach()  # never keep an autograd graph alive
        y_out = None if y_out is None else y_out.detach()
        device = (x_in if x_in is not None else y_out).device
        added = self._update(x_in, y_out, attention_mask.to(device).bool())
        self.finite.observe(added, batch=self._batches, rows=self.rows)
        self._batches += 1

    def progress(self) -> dict[str, int]:
        return {"batches": self._batches}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self._state(), "batches": torch.tensor(self._batches)}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self._batches = int(state["batches"])
        self.finite.clear()
        self._load({key: value for key, value in state.items() if key != "batches"})

    def merge(self, other: ImportanceMetric) -> None:
        """Fold another state of the same metric (other batches) into this one."""
        if type(other) is not type(self):
            raise ValueError(f"cannot merge {other.name} state into {self.name}")
        self._merge(other)
        self._batches += other._batches

    def result(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _update(self, x_in: torch.Tensor | None, y_out: torch.Tensor | None,
                mask: torch.Tensor) -> torch.Tensor:
        """Take one batch; return what it added to the state (for `finite`)."""
        raise NotImplementedError

    def _state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _load(self, state: Mapping[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def _merge(self, other: ImportanceMetric) -> None:
        raise NotImplementedError


def masked_abs(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`|values|` `[B, S, C]` as a new tensor (float32 at least) with padding zeroed."""
    magnitude = values.abs() if values.dtype in WIDE else values.float().abs_()
    return magnitude.masked_fill_(~mask.unsqueeze(-1), 0.0)


class TokenMeanMetric(ImportanceMetric):
    """A metric whose score is a per-token quantity `[C]` averaged over every real token."""

    def __init__(self) -> None:
        super().__init__()
        self._sum: torch.Tensor | None = None  # [C] float64
        self._count = torch.zeros((), dtype=torch.float64)  # tokens seen

    def token_sum(self, x_in: torch.Tensor | None, y_out: torch.Tensor | None,
                  mask: torch.Tensor) -> torch.Tensor:
        """The per-token quantity summed over the batch's real tokens, `[C]`."""
        raise NotImplementedError

    def _update(self, x_in: torch.Tensor | None, y_out: torch.Tensor | None,
                mask: torch.Tensor) -> torch.Tensor:
        batch_sum = self.token_sum(x_in, y_out, mask).double()  # [C]
        self._sum = batch_sum if self._sum is None else self._sum + batch_sum.to(self._sum)
        self._count = self._count.to(mask.device) + mask.sum()
        return batch_sum

    def token_mean(self) -> torch.Tensor:
        """The mean over every unmasked token so far, `[C]` float64."""
        if self._sum is None:
            raise ValueError(f"{self.name} has seen no batch yet")
        return self._sum / self._count.to(self._sum.device).clamp(min=1)

    def progress(self) -> dict[str, int]:
        return {**super().progress(), "tokens": int(self._count)}

    def _state(self) -> dict[str, torch.Tensor]:
        return {"count": self._count} if self._sum is None else {"count": self._count,
                                                                  "sum": self._sum}

    def _load(self, state: Mapping[str, torch.Tensor]) -> None:
        self._count = state["count"].double()
        self._sum = state["sum"].double() if "sum" in state else None

    def _merge(self, other: ImportanceMetric) -> None:
        assert isinstance(other, TokenMeanMetric)
        if other._sum is not None:
            self._sum = other._sum.clone() if self._sum is None else (
                self._sum + other._sum.to(self._sum.device))
        self._count = self._count + other._count.to(self._count.device)
