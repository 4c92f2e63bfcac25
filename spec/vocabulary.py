"""The words of the language: keys, blocks, sites, aggregation modes, masks, metrics.

One place for the names the checker accepts, the formatter knows and the docs list; the
compiler, the runtime and the report import the sites from here too.
"""

from __future__ import annotations

import attrs

TOP_KEYS = ("model", "dtype", "device", "seed", "compile")
BLOCKS = ("hydra", "data", "output")
BLOCK_KEYS = {
    "hydra": ("trunk", "heads", "head_models"),
    "data": ("source", "batch_size", "max_length", "limit", "window"),
    "output": ("dir", "checkpoint_every", "shard_size"),
}

BUILTIN_PREFIX = "builtin:"  # `model = "builtin:NAME"`: a built-in tiny model, not a folder
DEFAULT_BATCH_SIZE = 8  # `data { batch_size }` when the spec leaves it out
DEFAULT_WINDOW = 32  # `data { window }`: batches whose samples are read and sorted by length together
DEFAULT_SHARD_SIZE = 2_000_000_000  # `output { shard_size }` in bytes: "2GB" (decimal units)
SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}  # shard_size words

DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")  # plus cuda:N

LAYER_SITES = ("resid_in", "resid_mid", "resid_out", "attn_in", "attn_out", "mlp_in",
               "mlp_out", "attn_pattern", "values", "mlp_post", "q", "k", "v", "z", "lens",
               "router")
MLP_POST_SITE = "mlp_post"  # the input of `mlp.down_proj`: none in a mixture of experts
ROUTER_SITE = "router"  # a mixture of experts' router logits [B, S, n_experts], before softmax
LENS_SITE = "lens"  # lm_head(final_norm(resid_out[L])): built by the compiler, not marked
PLANNED_SITES = ("attn_pattern", LENS_SITE)  # layer sites the compiler adds where captured
LM_HEAD_SITES = ("logits", LENS_SITE)  # sites that need an LM head (no encoder has them)
PER_HEAD_MODEL_SITES = ("final_norm", "logits")  # after the last layer: one per Hydra head
MODEL_SITES = ("embed", *PER_HEAD_MODEL_SITES)  # model-wide: no layer; `embed` precedes the trunk
SITES = LAYER_SITES + MODEL_SITES
CAPTURE_KEYS = ("aggregate",)

AGGREGATE_MODES = ("none", "full", "mean", "sum", "max", "dataset_mean")
REDUCING_MODES = ("mean", "sum", "max", "dataset_mean")  # take `mask = ...`
MASKS = ("attention", "last", "first", "field")
DEFAULT_MASK = "attention"

SOURCES = {  # kind -> (keyword arguments it takes, default of `field`)
    "jsonl": (("path", "field", "mask_field"), "text"),
    "text": (("path",), None),
    "tokens": (("path", "field", "mask_field"), "input_ids"),
    "parquet": (("path", "field", "mask_field"), "text"),
    "hf_dataset": (("path", "split", "field", "mask_field"), "text"),
}
TABLE_SOURCES = ("parquet", "hf_dataset")  # columnar files, read with pyarrow
DEFAULT_SPLIT = "train"  # the split `hf_dataset(...)` reads of a saved DatasetDict when not told


@attrs.frozen(kw_only=True)
class ParamSpec:
    """One metric parameter: an integer range or a choice of words, with its default."""

    name: str
    default: int | str
    choices: tuple[str, ...] = ()  # empty for integers
    minimum: int = 1


@attrs.frozen(kw_only=True)
class MetricSpec:
    name: str
    modules: str  # "linear", "norm", "any", "attention_output" or "layer" (`at layers[...]`)
    params: tuple[ParamSpec, ...] = ()
    sites: tuple[str, ...] = ()  # a "layer" metric: the layer's sites it reads, in order
    # (field, what it holds in words: formula, unit, direction): the manifest's `meaning`
    # of each stored field and the one home of that text (docs/pruning-validity.md explains).
    meaning: tuple[tuple[str, str], ...] = ()

    def field_meaning(self, field: str) -> str:
        """What the stored field `field` holds, in words."""
        return dict(self.meaning)[field]


REAL_TOKENS = "over the run's real tokens (padding excluded)"
METRICS = {m.name: m for m in (
    MetricSpec(name="l2_norm", modules="any", meaning=(
        ("score", "per input channel: sqrt of the sum over samples of (the sample's mean |X| over "
                  "its real tokens)^2, in the input's units times sqrt(samples); higher = more "
                  "important"),)),
    MetricSpec(name="channel_contribution", modules="linear", meaning=(
        ("score", f"per input channel j: ||W[:, j]||_2 x mean |X_j| {REAL_TOKENS}, how far the "
                  "channel moves the output, in output units; higher = more important"),
        ("weight_norm", "per input channel j: ||W[:, j]||_2, the weight column it feeds "
                        "(the score's first factor)"),
        ("activation_mean_abs", f"per input channel j: mean |X_j| {REAL_TOKENS} "
                                "(the score's second factor)"))),
    MetricSpec(name="kv_head_contribution", modules="attention_output", params=(
        ParamSpec(name="optimize_for", default="memory", choices=("memory", "latency")),),
        meaning=(("score", f"per KV-head group k: mean ||X_k W_k^T||_2 {REAL_TOKENS}, the norm "
                           "of what the group adds to the attention output, in output units; "
                           "higher = more important"),)),
    MetricSpec(name="layernorm_contribution", modules="norm", meaning=(
        ("score", f"per channel c of the norm's output Y: mean |Y_c| {REAL_TOKENS}; "
                  "higher = more important"),)),
    MetricSpec(name="iterative_channel", modules="linear", params=(
        ParamSpec(name="iterations", default=8),
        ParamSpec(name="calibration", default="none", choices=("none", "scale_by_magnitude"))),
        meaning=(("score", "per input channel: the position at which greedy pruning in rounds "
                           "removed it (0 = first = least important), a rank, not a magnitude; "
                           "higher = more important"),
                 ("channels_importance_ascending", "the input channels in the order greedy "
                                                   "pruning removed them, least important "
                                                   "first"))),
    MetricSpec(name="block_influence", modules="layer", sites=("resid_in", "resid_out"),
               meaning=(("score", f"1 - mean cos(resid_in, resid_out) {REAL_TOKENS}: how far "
                                  "the layer turns the residual stream (0 = not at all, at most "
                                  "2); higher = more important"),)),
)}
LAYER_TARGET = "layers"  # `importance block_influence at layers[...]`: whole layers, no module

INT_MAX = 2**31 - 1
SEED_MAX = 2**63 - 1

# Interventions (`intervene TARGET [of heads[...]] { ... }`) and effects (`effect METRIC ...`).
INTERVENE_KEYS = ("set", "add", "scale", "channels", "positions")
AUTO_TRUNK = "auto"  # `hydra { trunk = auto }`
READOUT_SITES = {  # per-layer sites that can be captured but not intervened on: what each is,
    # and where to intervene instead
    "attn_pattern": ("the softmax weights",
                     "intervene on `attn_out[...]` or on the heads' outputs at `self_attn.o_proj[...]`"),
    LENS_SITE: ("`resid_out` projected onto the vocabulary", "intervene on `resid_out[...]`"),
    ROUTER_SITE: ("the router's logits, which pick each token's experts",
                  "intervene on `mlp_in[...]` or on the router's input at `mlp.gate[...]`"),
}
TARGET_SITES = tuple(s for s in LAYER_SITES if s not in READOUT_SITES)
SET_VALUES = ("zero", "mean", "patch")  # `set = zero | mean(run = DIR) | patch(run = DIR)`
UNIT_KINDS = ("lowest", "highest", "random")  # `channels = KIND(...)`, or a list of indices
POSITION_WORDS = ("all", "first", "last")  # `positions = WORD`, a list, or `field("name")`
DEFAULT_POSITIONS = "all"
EFFECT_METRICS = {  # metric -> (needs `vs`, needs an LM head, its parameters)
    "kl": (True, True, ("mask",)),
    "top1": (True, True, ("mask",)),
    "loss": (False, True, ()),
    "logit_diff": (False, True, ("correct", "wrong")),
    "cosine": (True, False, ("at", "aggregate")),
}
