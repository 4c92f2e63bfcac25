"""A model reference, `builtin:NAME` or a local checkpoint folder, opened as a checkpoint.

One home for telling the two apart, shared by the loader and by `expc prune`: a folder is
opened without torch (its headers only), while a built-in model, whose tensors torch
generates, imports its module only when one is asked for.
"""

from __future__ import annotations

from pathlib import Path

from expc.models.checkpoint import CONFIG_FILE, open_checkpoint
from expc.spec.vocabulary import BUILTIN_PREFIX


def is_builtin(ref: str | Path) -> bool:
    return str(ref).startswith(BUILTIN_PREFIX)


def open_source(ref: str | Path):
    """The checkpoint behind a model reference: `builtin:NAME` or a local folder."""
    if not is_builtin(ref):
        return open_checkpoint(ref)
    from expc.models.builtin import open_builtin  # generates its tensors with torch

    return open_builtin(str(ref))


def config_source(ref: str | Path) -> str:
    """Where diagnostics about a model's config point."""
    return str(ref) if is_builtin(ref) else str(Path(ref) / CONFIG_FILE)
