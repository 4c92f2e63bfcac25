"""Lazy, validated access to a Hugging Face checkpoint folder (config.json + safetensors).

The model loader materialises parameters one tensor at a time from here, so a checkpoint
never sits twice in memory; `expc check` reads only `config.json` through `load_config`.
Every way a folder can be broken (no folder, no or malformed config, no safetensors, a
shard the index names but that is absent, a tensor missing or of the wrong shape) becomes
a `Diagnostic` naming the file concerned — and the line, where a JSON file is at fault.
Pickled `pytorch_model.bin` checkpoints are refused, never unpickled.

Tensors come back as safetensors gives them: views of a private (copy-on-write) memory map
of their shard, so loading costs no copy and pages are read from disk when first used. A
tensor read twice (each Hydra head's clone of a layer) gets a map of its own, so writing
into one copy never changes another. A cast to another dtype makes an ordinary in-memory
copy, read through a short-lived map so the source pages are released as it goes.
Overwriting a checkpoint file in place while a model loaded from it is alive is therefore
not supported.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from safetensors import SafetensorError, safe_open

from expc.spec.diagnostics import fail
from expc.spec.json_files import parse_json_object

if TYPE_CHECKING:  # tensors are handed out by safetensors; indexing a folder needs no torch
    import torch

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def _line_of(text: str, needle: str) -> int:
    """1-based line of the first occurrence of `needle` in `text` (1 when absent)."""
    at = text.find(needle)
    return 1 if at < 0 else text.count("\n", 0, at) + 1


def _read_json(path: Path, *, what: str) -> tuple[dict, str]:
    """A JSON object file and its text (to find a tensor's line in the index later)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return parse_json_object(text, path=path, what=what, code="checkpoint-bad-json"), text


def _require_folder(folder: Path) -> None:
    if not folder.exists():
        raise fail(folder, f"checkpoint folder `{folder}` does not exist",
                   code="checkpoint-missing-folder",
                   help=("give a local Hugging Face checkpoint folder or `builtin:NAME`",))
    if not folder.is_dir():
        raise fail(folder, f"checkpoint `{folder}` is a file, expected a folder holding "
                   f"{CONFIG_FILE} and *.safetensors", code="checkpoint-not-a-folder")


def load_config(folder: str | Path) -> dict:
    """The checkpoint's `config.json` as a dict, without touching the weights."""
    folder = Path(folder)
    _require_folder(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise fail(path, f"checkpoint folder `{folder}` has no {CONFIG_FILE}",
                   code="checkpoint-missing-config")
    return _read_json(path, what=CONFIG_FILE)[0]


def _shard_keys(shard: Path) -> set[str]:
    """Tensor names in one safetensors file (reads only its header)."""
    try:
        with safe_open(shard, framework="numpy") as handle:  # names only: no torch needed
            return set(handle.keys())
    except (SafetensorError, OSError) as exc:
        raise fail(shard, f"cannot read safetensors file `{shard.name}`: {exc}",
                   code="checkpoint-bad-safetensors") from None


def _locate_single(folder: Path) -> tuple[dict[str, Path], Path]:
    path = folder / SINGLE_FILE
    return {name: path for name in _shard_keys(path)}, path


def _locate_sharded(folder: Path) -> tuple[dict[str, Path], Path]:
    index_path = folder / INDEX_FILE
    index, text = _read_json(index_path, what=INDEX_FILE)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise fail(index_path, f"{INDEX_FILE} has no `weight_map` object",
                   code="checkpoint-bad-index")
    locations: dict[str, Path] = {}
    for shard_name in sorted(set(weight_map.values())):
        shard = folder / shard_name
        if not shard.is_file():
            raise fail(index_path, f"shard `{shard_name}` named in {INDEX_FILE} is missing "
                       f"from `{folder}`", code="checkpoint-missing-shard",
                       line=_line_of(text, f'"{shard_name}"'))
        present = _shard_keys(shard)
        for name in sorted(n for n, s in weight_map.items() if s == shard_name):
            if name not in present:
                raise fail(index_path, f"tensor `{name}` is mapped to shard `{shard_name}` "
                           f"but that shard does not hold it", code="checkpoint-shard-lacks-tensor",
                           line=_line_of(text, f'"{name}"'))
            locations[name] = shard
    return locations, index_path


def _locate_tensors(folder: Path) -> tuple[dict[str, Path], Path]:
    """Tensor name -> the safetensors file that holds it, and the file that lists them."""
    if (folder / INDEX_FILE).is_file():
        return _locate_sharded(folder)
    if (folder / SINGLE_FILE).is_file():
        return _locate_single(folder)
    pickles = [name for name in PICKLE_FILES if (folder / name).is_file()]
    if pickles:
        raise fail(folder / pickles[0], f"`{pickles[0]}` is a pickled PyTorch checkpoint; "
                   "expc reads only safetensors (pickles can run code when loaded)",
                   code="checkpoint-pickle-refused",
                   help=("convert it once with transformers: "
                         "`AutoModel.from_pretrained(folder).save_pretrained(folder)` "
                         "writes model.safetensors",))
    others = sorted(path.name for path in folder.glob("*.safetensors"))
    raise fail(folder, f"checkpoint folder `{folder}` holds no {SINGLE_FILE} "
               f"and no {INDEX_FILE}", code="checkpoint-no-weights",
               help=(f"found {', '.join(others)}; a sharded checkpoint needs its {INDEX_FILE}",)
               if others else ())


@attrs.define(kw_only=True)
class Checkpoint:
    """An opened checkpoint folder; tensors are read from disk only when asked for."""

    folder: Path
    config: dict
    listing: Path  # the file that names the tensors: model.safetensors or the index
    locations: dict[str, Path]
    # One open handle (one memory map) per shard, shared by the first read of each tensor.
    handles: dict[Path, object] = attrs.field(factory=dict, repr=False)
    handed_out: set[str] = attrs.field(factory=set, repr=False)

    def keys(self) -> list[str]:
        return sorted(self.locations)

    def __contains__(self, name: str) -> bool:
        return name in self.locations

    def _where(self, name: str) -> Path:
        if name not in self.locations:
            close = difflib.get_close_matches(name, self.locations, n=3)
            raise fail(self.listing, f"checkpoint has no tensor `{name}`",
                       code="checkpoint-missing-tensor",
                       help=tuple(f"did you mean `{c}`?" for c in close))
        return self.locations[name]

    def _handle(self, shard: Path):
        if shard not in self.handles:
            self.handles[shard] = safe_open(shard, framework="pt")
        return self.handles[shard]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(self._where(name)).get_slice(name).get_shape())

    def get_tensor(self, name: str, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Tensor `name`, cast to `dtype` when given; it never shares memory with another."""
        shard = self._where(name)
        if name not in self.handed_out:
            self.handed_out.add(name)
            tensor = self._handle(shard).get_tensor(name)  # a view: no page read yet
            if dtype is None or tensor.dtype == dtype:
                return tensor
        # A second read (a Hydra head's clone) or a cast: through a map of its own, so the
        # result never aliases another tensor, and a cast's source pages are unmapped
        # right after instead of staying resident beside the copies of the whole model.
        with safe_open(shard, framework="pt") as transient:
            tensor = transient.get_tensor(name)
        return tensor if dtype is None or tensor.dtype == dtype else tensor.to(dtype)

    def expect_shape(self, name: str, shape: tuple[int, ...] | torch.Size) -> None:
        """Raise a diagnostic when tensor `name` does not have the shape the model needs."""
        found = self.shape(name)
        if found != tuple(shape):
            raise fail(self.locations[name], f"tensor `{name}` has shape {list(found)} "
                       f"but the model built from {CONFIG_FILE} expects {list(shape)}",
                       code="checkpoint-shape-mismatch",
                       help=(f"check that {CONFIG_FILE} belongs to these weights",))


def open_checkpoint(folder: str | Path) -> Checkpoint:
    """Validate a checkpoint folder and index its tensors (headers only, no weights read)."""
    folder = Path(folder)
    config = load_config(folder)
    locations, listing = _locate_tensors(folder)
    return Checkpoint(folder=folder, config=config, listing=listing, locations=locations)
