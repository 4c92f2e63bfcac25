"""Resolve the spec's `device` word into a torch device (its `dtype` word: `load_model`).

A CUDA device this machine does not have is the same diagnostic `expc check` gives
(`expc.spec.devices.cuda_problem`), at the spec's `device = ...`.
"""

from __future__ import annotations

import torch

from expc.spec.devices import DEVICE_HELP, cuda_problem
from expc.spec.diagnostics import Span, fail


def resolve_device(name: str, *, span: Span | None = None) -> torch.device:
    """`auto` picks CUDA when present, else the CPU; `cuda:N` must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    problem = cuda_problem(name, gpus)
    if problem is not None:
        raise fail(span, problem, code="device", help=DEVICE_HELP)
    return torch.device(name)
