"""Built-in tiny models (`builtin:NAME`): untrained, with weights generated from a fixed seed.

A built-in model is served as a checkpoint that computes each tensor on request from
`BUILTIN_SEED` and the tensor's name (normal(0, 0.02) matrices, unit norm weights, zero
biases), so it loads through exactly the same path as a folder on disk and every run sees
the same numbers. The weights are NOT trained: outputs are deterministic but meaningless,
fit for tests and the quickstart only.
"""

from __future__ import annotations

import zlib

import attrs
import torch

from expc.models.registry import read_config
from expc.spec.builtin_models import BUILTIN_CONFIGS, BUILTIN_SEED
from expc.spec.diagnostics import fail
from expc.spec.vocabulary import BUILTIN_PREFIX

INIT_STD = 0.02


def builtin_config(ref: str) -> dict:
    """The `config.json` dict of `builtin:NAME`; an unknown name is a diagnostic."""
    name = str(ref)[len(BUILTIN_PREFIX):]
    if name not in BUILTIN_CONFIGS:
        known = ", ".join(BUILTIN_PREFIX + n for n in sorted(BUILTIN_CONFIGS))
        raise fail(ref, f"unknown built-in model `{ref}`", code="model-unknown-builtin",
                   help=(f"built-in models: {known}",))
    return dict(BUILTIN_CONFIGS[name])


def _initial_value(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Deterministic per key, independent of the order tensors are asked for."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "bias" or "token_type" in key:
        return torch.zeros(shape)
    if len(shape) == 1:  # norm weights
        return torch.ones(shape)
    generator = torch.Generator().manual_seed(BUILTIN_SEED + zlib.crc32(key.encode()))
    return torch.randn(shape, generator=generator) * INIT_STD


@attrs.define(kw_only=True)
class BuiltinCheckpoint:
    """Checkpoint interface (`config`, `keys`, `get_tensor`, ...) over generated weights."""

    ref: str
    config: dict
    shapes: dict[str, tuple[int, ...]]

    def keys(self) -> list[str]:
        return sorted(self.shapes)

    def __contains__(self, name: str) -> bool:
        return name in self.shapes

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def expect_shape(self, name: str, shape) -> None:
        if self.shapes[name] != tuple(shape):  # generated from the same config: a bug if hit
            raise AssertionError(f"{self.ref}: {name} {self.shapes[name]} != {tuple(shape)}")

    def get_tensor(self, name: str, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        tensor = _initial_value(name, self.shapes[name])
        return tensor if dtype is None else tensor.to(dtype)


def open_builtin(ref: str) -> BuiltinCheckpoint:
    """`builtin:NAME` as a checkpoint whose keys are the Hugging Face names of its tensors."""
    from expc.models.hydra import HydraTransformer

    raw = builtin_config(ref)
    model = HydraTransformer.build(read_config(raw, source=ref), init_device="meta")
    shapes = {
        model.arch.checkpoint_keys(name)[0]: tuple(param.shape)
        for name, param in model.named_parameters()
    }
    return BuiltinCheckpoint(ref=ref, config=raw, shapes=shapes)
