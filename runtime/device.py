"""Resolve the spec's `device` word into a torch device (its `dtype` word: `load_model`)."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else the CPU; `cuda:N` must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device `{name}` asked for, but CUDA is not available here")
    return device
