"""The run folder's contract (contracts §3, docs/run-folder.md), in one torch-free home.

`expc run` writes run folders; `expc report`, `expc diff` and `expc.open_run` read them. All
of them take the facts from here, so writer and readers cannot drift apart: the file names,
the format id and statuses, the manifest's required fields and how a manifest is checked,
and the grammar of result keys. Keys are built by `capture_key`, `importance_key` and
`meta_key` and taken apart by `parse_key`; each builder is the parser's inverse (a property
test holds them to it).
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from expc.spec.diagnostics import fail
from expc.spec.json_files import read_json_object
from expc.spec.vocabulary import LAYER_TARGET

# The folder.
FORMAT = "expc-run/1"
STATUSES = ("running", "complete", "failed")
MANIFEST = "manifest.json"
RESULTS = "results.safetensors"
# A sharded run (results over `output { shard_size }`): shards named in the Hugging Face way
# plus their index; while running, each rank's shards carry no total yet (renamed at finish).
RESULTS_INDEX = "results.safetensors.index.json"
SHARD_PATTERN = "results-*-of-*.safetensors"
PARTIAL_PATTERN = "results-rank*.partial.safetensors"
RESULTS_FORMAT = "expc-results/1"  # the index's `metadata.format`
CHECKPOINT_DIR = "checkpoint"
REPORT, SUMMARY = "report.html", "summary.md"  # written by `expc report`
DERIVED_FILES = (REPORT, SUMMARY)  # made from a run; stale once it is re-run
CURSOR_PATTERN = "rank*-cursor.json"  # checkpoint files, per rank (runtime/checkpoint.py)
STATE_PATTERN = "rank*-state-*.safetensors"
RANK_ERROR_PATTERN = ".rank*-error.json"  # a failed rank's own error (runtime/rank_failures.py)
# Every file `expc run` and `expc report` may write in a run folder besides the manifest, as
# names or glob patterns relative to it: the manifest's `files`. Only files these name are
# ever removed (by a re-run), and only when the folder's manifest claims them.
OUTPUT_FILES = (RESULTS, RESULTS_INDEX, SHARD_PATTERN, PARTIAL_PATTERN, *DERIVED_FILES,
                RANK_ERROR_PATTERN,
                f"{CHECKPOINT_DIR}/{CURSOR_PATTERN}", f"{CHECKPOINT_DIR}/{STATE_PATTERN}")
RUN_FOLDER_CODE = "report-run-folder"  # the diagnostic code of a folder that cannot be read

# The manifest.
OBJECT_FIELDS = ("spec", "ir", "model", "data", "versions", "timings", "tensors")
NULLABLE_OBJECT_FIELDS = ("error", "checkpoint")
FILES_FIELD = "files"  # optional list of the `OUTPUT_FILES` the run claims
REQUIRED_FIELDS = {  # per key kind, what a tensor's entry holds beside `meaning` and `kind`
    "capture": ("site", "name", "layer", "head", "aggregate", "mask"),
    "importance": ("metric", "module", "layer", "head", "field"),
    "meta": (),
    "intervention": ("target", "layer", "head", "field"),
    "effect": ("metric", "name", "head", "reference"),
}

# The keys.
MASK_SUFFIX, VAR_SUFFIX, COUNT_SUFFIX = ".mask", ".var", ".count"  # beside a capture's key
SUFFIX_MEANINGS = {"": "", MASK_SUFFIX: " — its token mask", VAR_SUFFIX: " — variance",
                   COUNT_SUFFIX: " — number of tokens counted"}
SUFFIXES = tuple(suffix for suffix in SUFFIX_MEANINGS if suffix)
PER_SAMPLE_MODES = ("full", "mean", "sum", "max")  # their tensors have a sample axis first
SAMPLE_INDEX = "meta/sample_index"
TOKEN_COUNT = "meta/token_count"
META_MEANINGS = {
    SAMPLE_INDEX: "index of each row's sample in the data (rows are in data order)",
    TOKEN_COUNT: "number of real (non-padding) tokens of each sample after truncation",
}

_MODULE_HEAD = re.compile(r"^heads\.(\d+)\.")  # a head's module path: `heads.{h}.`
_KEY_HEAD = re.compile(r"^head(\d+)/(.*)$")  # the same in a key: `head{h}/`
_NAME_LAYER = re.compile(r"^(.+)_(\d+)$")
_MODULE_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")  # `layers.3` is a whole layer


# Reading a folder's manifest.
def read_manifest(path: Path) -> dict:
    """The checked manifest at `path`; raise `DiagnosticError` naming the file if it is not
    one of our format."""
    if not path.exists():
        raise fail(path, f"`{path.parent}` is not a run folder: it has no {MANIFEST}",
                   code=RUN_FOLDER_CODE,
                   help=("give the folder `expc run` wrote (its `output.dir`)",))
    manifest = read_json_object(path, what=MANIFEST, code=RUN_FOLDER_CODE)
    if manifest.get("format") != FORMAT:
        raise fail(path, f"unknown run folder format {manifest.get('format')!r}",
                   code=RUN_FOLDER_CODE, help=(f"this expc reads `{FORMAT}`",))
    if manifest.get("status") not in STATUSES:
        raise fail(path, f"unknown run status {manifest.get('status')!r}",
                   code=RUN_FOLDER_CODE, help=("status is one of " + ", ".join(STATUSES),))
    for field in OBJECT_FIELDS:
        if not isinstance(manifest.get(field, {}), dict):
            raise fail(path, f"`{field}` in {MANIFEST} must be an object", code=RUN_FOLDER_CODE)
    for field in NULLABLE_OBJECT_FIELDS:
        if not isinstance(manifest.get(field) or {}, dict):
            raise fail(path, f"`{field}` in {MANIFEST} must be an object or null",
                       code=RUN_FOLDER_CODE)
    files = manifest.get(FILES_FIELD, [])
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        raise fail(path, f"`{FILES_FIELD}` in {MANIFEST} must be a list of file names",
                   code=RUN_FOLDER_CODE)
    return manifest


def claimed_files(manifest: dict) -> tuple[str, ...]:
    """The `OUTPUT_FILES` a checked manifest claims: its `files` (only names this expc
    writes count, so a tampered list cannot claim a user's file); a manifest written before
    the field existed claims them all, as the format's layout does."""
    return tuple(name for name in OUTPUT_FILES
                 if name in manifest.get(FILES_FIELD, OUTPUT_FILES))


def read_run_manifest(folder: str | Path) -> tuple[dict, Path | None]:
    """A run folder's checked manifest and its results file (None while the run has none
    yet); a complete run must have its results file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise fail(folder, f"run folder `{folder}` does not exist", code=RUN_FOLDER_CODE)
    manifest = read_manifest(folder / MANIFEST)
    for results in (folder / RESULTS, folder / RESULTS_INDEX):
        if results.is_file():
            return manifest, results
    if manifest["status"] == "complete":
        raise fail(folder / RESULTS, f"the run is complete but has no {RESULTS} (nor "
                   f"{RESULTS_INDEX})", code=RUN_FOLDER_CODE)
    return manifest, None


# The sharded layout (docs/run-folder.md).
def shard_name(number: int, total: int) -> str:
    """`results-00002-of-00005.safetensors`: shard `number` (from 1) of `total`."""
    return f"results-{number:05d}-of-{total:05d}.safetensors"


def partial_name(rank: int, number: int) -> str:
    """`results-rank0-00003.partial.safetensors`: a rank's shard `number` (from 1) while the
    run goes on; the finish renames it to its `shard_name`."""
    return f"results-rank{rank}-{number:05d}.partial.safetensors"


def piece_name(key: str, first_row: int) -> str:
    """The stored name of a per-sample key's rows from `first_row` on: `@{first_row}/{key}`.
    `@` starts no key kind, so `parse_key` reads a piece name as kind `other`."""
    return f"@{first_row}/{key}"


STORED_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
                 "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
                 "bool": "BOOL"}  # torch's dtype names -> safetensors' (a layout's dtypes)


def read_results_index(path: Path) -> dict:
    """The `metadata.keys` of a checked results index: `{key: {"dtype", "shape", "order",
    "pieces": [{"file", "name", "rows": [first, stop] | None}]}}` (docs/run-folder.md)."""
    index = read_json_object(path, what=RESULTS_INDEX, code=RUN_FOLDER_CODE)
    metadata = index.get("metadata")
    keys = metadata.get("keys") if isinstance(metadata, dict) else None
    if not isinstance(keys, dict) or metadata.get("format") != RESULTS_FORMAT or not all(
            isinstance(entry, dict) and isinstance(entry.get("shape"), list)
            and isinstance(entry.get("dtype"), str) and isinstance(entry.get("pieces"), list)
            and all(isinstance(p, dict) and isinstance(p.get("file"), str)
                    and "/" not in p["file"] and isinstance(p.get("name"), str)
                    for p in entry["pieces"])
            for entry in keys.values()):
        raise fail(path, f"{RESULTS_INDEX} is not an `{RESULTS_FORMAT}` index",
                   code=RUN_FOLDER_CODE)
    return keys


def per_sample_key(key: str, entry: dict) -> bool:
    """Whether a result key has one row per sample first (its manifest `entry`): a capture
    aggregated per sample, an effect, `meta/sample_index` and `meta/token_count`."""
    kind = key.partition("/")[0]
    return (kind == "effect" or key in META_MEANINGS
            or (kind == "capture" and entry.get("aggregate") in PER_SAMPLE_MODES))


# Building keys.
def _head_part(head: int | None) -> str:
    return "" if head is None else f"head{head}/"


def capture_key(name: str, layer: int | None = None, head: int | None = None) -> str:
    """`capture/{name}_{L}`, `capture/head{h}/{name}_{L}`, `capture/{name}` for a model-wide
    site; `name` is the site or its `as` name."""
    layer_part = "" if layer is None else f"_{layer}"
    return f"capture/{_head_part(head)}{name}{layer_part}"


def split_head_prefix(path: str) -> tuple[int | None, str]:
    """`heads.1.layers.3.mlp` -> (1, `layers.3.mlp`); a trunk path -> (None, path)."""
    match = _MODULE_HEAD.match(path)
    if match is None:
        return None, path
    return int(match.group(1)), path[match.end():]


def module_key(path: str) -> str:
    """Module path -> its part of a key: `heads.1.layers.3.mlp` -> `head1/layers.3.mlp`."""
    head, rest = split_head_prefix(path)
    return _head_part(head) + rest


def importance_key(metric: str, module_path: str, field: str | None = None) -> str:
    """`importance/{metric}/{module}` (a metric's prefix), `.../{field}` for one tensor."""
    key = f"importance/{metric}/{module_key(module_path)}"
    return key if field is None else f"{key}/{field}"


def meta_key(name: str) -> str:
    return f"meta/{name}"


def intervention_key(target: str, layer: int, head: int | None, field: str) -> str:
    """`intervention/{head}/{target}_{L}/{field}` (no head part without a split), e.g.
    `intervention/head1/mlp.down_proj_3/channels`: what an intervention selected."""
    return f"intervention/{_head_part(head)}{target}_{layer}/{field}"


def effect_key(name: str, head: int | None) -> str:
    """`effect/{name}/head{h}`, or `effect/{name}` without a split; `name` is the metric or
    its `as` name."""
    return f"effect/{name}" if head is None else f"effect/{name}/head{head}"


# Taking keys apart.
@attrs.frozen(kw_only=True)
class KeyInfo:
    """One result key, taken apart."""

    key: str
    kind: str  # "capture" | "importance" | "intervention" | "effect" | "meta" | "other"
    name: str  # capture: the site or its `as` name; importance: the metric; meta: the field;
    # intervention: the target (site or module role); effect: the metric or its `as` name
    layer: int | None = None  # global layer number
    head: int | None = None  # Hydra head, None in the trunk or without a split
    suffix: str | None = None  # capture: e.g. "mask" for `capture/x_1.mask`
    module: str | None = None  # importance: module path without the head prefix
    field: str | None = None  # importance: "score" or an extra field; intervention: "channels"

    @property
    def instance(self) -> str:
        """The importance module as written in keys, e.g. `head1/layers.3.mlp.down_proj`."""
        return _head_part(self.head) + (self.module or "")

    @property
    def role(self) -> str:
        """The module with its layer taken out, e.g. `mlp.down_proj`; `layers` for a metric
        of whole layers (`importance/block_influence/layers.3/score`)."""
        module = self.module or ""
        if _MODULE_LAYER.fullmatch(module):
            return LAYER_TARGET
        return _MODULE_LAYER.sub("", module, count=1) or module


def _split_key_head(text: str) -> tuple[int | None, str]:
    match = _KEY_HEAD.match(text)
    if match is None:
        return None, text
    return int(match.group(1)), match.group(2)


def parse_key(key: str) -> KeyInfo:
    """Take a result key apart; keys outside the contract come back as kind `other`."""
    kind, _, rest = key.partition("/")
    if kind == "capture" and rest:
        head, rest = _split_key_head(rest)
        base, dot, suffix = rest.partition(".")
        match = _NAME_LAYER.match(base)
        name, layer = (match.group(1), int(match.group(2))) if match else (base, None)
        return KeyInfo(key=key, kind=kind, name=name, layer=layer, head=head,
                       suffix=suffix if dot else None)
    if kind == "importance" and rest.count("/") >= 2:
        metric, _, rest = rest.partition("/")
        module_path, _, field = rest.rpartition("/")
        head, module = _split_key_head(module_path)
        match = _MODULE_LAYER.search("." + module)
        layer = int(match.group(1)) if match else None
        return KeyInfo(key=key, kind=kind, name=metric, layer=layer, head=head,
                       module=module, field=field)
    if kind == "intervention" and rest.count("/") >= 1:
        head, rest = _split_key_head(rest)
        place, _, field = rest.rpartition("/")
        match = _NAME_LAYER.match(place)
        if match and field:
            return KeyInfo(key=key, kind=kind, name=match.group(1), layer=int(match.group(2)),
                           head=head, field=field)
    if kind == "effect" and rest:
        name, _, head_part = rest.partition("/")
        head_match = re.fullmatch(r"head(\d+)", head_part)
        if name and (not head_part or head_match):
            return KeyInfo(key=key, kind=kind, name=name,
                           head=int(head_match.group(1)) if head_match else None)
    if kind == "meta" and rest:
        return KeyInfo(key=key, kind=kind, name=rest)
    return KeyInfo(key=key, kind="other", name=key)


def split_suffix(key: str) -> tuple[str, str]:
    """`capture/x_1.mask` -> (`capture/x_1`, `.mask`); keys without a suffix keep `""`."""
    for suffix in SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], suffix
    return key, ""


def key_family(key: str) -> str:
    """The key with its layer and head numbers generalised: `capture/head{h}/resid_out_{L}`."""
    key = re.sub(r"(?<![A-Za-z0-9])head\d+(?=/)", "head{h}", key)
    key = re.sub(r"(?<=layers\.)\d+(?=\.|/)", "{L}", key)
    return re.sub(r"_\d+(?=$|\.|/)", "_{L}", key)
