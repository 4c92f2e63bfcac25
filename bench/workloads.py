"""The benchmark's workloads: a checkpoint, a list of batches, and the layers to capture.

Every method in a comparison runs the same checkpoint on the same batches, so the workload
owns both. The Llama-style checkpoints are built once with `transformers` from a config
(random weights, seed 0) and saved with `save_pretrained` under `.cache/bench/`, next to a
word-level tokenizer (TransformerLens and nnsight want one to wrap a model); later runs reuse
them. Decoder data are random token ids with mixed real lengths, right-padded, so padding is
always present and every masked mean depends on the mask being honoured. The MiniLM workload
runs the trained all-MiniLM-L6-v2 (fetched by `scripts/fetch_minilm.py`) on the real English
sentences of `bench/sentences.txt`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import attrs
import torch

from bench.metric_formulas import CHANNEL_CONTRIBUTION, KV_HEAD_CONTRIBUTION

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".cache" / "bench"
MINILM_DIR = REPO_ROOT / ".cache" / "models" / "all-MiniLM-L6-v2"
SENTENCES_FILE = Path(__file__).resolve().parent / "sentences.txt"

VOCAB_SIZE = 8192
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
PAD_ID = 3
FIRST_WORD_ID = len(SPECIAL_TOKENS)
LLAMA_SHAPE = {
    "hidden_size": 512,
    "intermediate_size": 1024,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
}


@attrs.frozen(kw_only=True)
class Batch:
    """One padded batch; `attention_mask` is 1 on real tokens, 0 on padding."""

    input_ids: torch.Tensor  # [B, S] int64
    attention_mask: torch.Tensor  # [B, S] int64

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())


@attrs.frozen(kw_only=True)
class Workload:
    """What one comparison runs: `layers` are the `resid_out` layers every method captures;
    `metrics` (see `bench.metric_formulas`) are computed at every one of those layers too."""

    name: str
    description: str
    checkpoint: Path
    family: str  # "decoder" (Llama, causal LM head) | "encoder" (BERT, no head)
    n_layers: int
    layers: tuple[int, ...]
    batches: tuple[Batch, ...]
    texts: tuple[str, ...]  # per sample, the text whose tokenisation gives the batches (for `expc run`)
    metrics: tuple[str, ...] = ()  # importance metrics, e.g. ("channel_contribution",)

    @property
    def real_tokens(self) -> int:
        return sum(batch.real_tokens for batch in self.batches)

    @property
    def shape_text(self) -> str:
        first = self.batches[0].input_ids.shape
        return f"{len(self.batches)} × [{first[0]} × {first[1]}]"

    def load_model(self, *, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        """A fresh copy of the checkpoint in eval mode (each method gets its own)."""
        from transformers import AutoModel, AutoModelForCausalLM

        loader = AutoModelForCausalLM if self.family == "decoder" else AutoModel
        return loader.from_pretrained(self.checkpoint, dtype=dtype).eval()

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.checkpoint)


def _word_level_tokenizer(save_to: Path) -> None:
    """A word-level tokenizer over `VOCAB_SIZE` synthetic words, saved for `AutoTokenizer`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(SPECIAL_TOKENS) + [f"w{i}" for i in range(VOCAB_SIZE - FIRST_WORD_ID)]
    core = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                      eos_token="</s>", pad_token="<pad>", padding_side="right")
    wrapped.save_pretrained(save_to)


def ensure_llama_checkpoint(n_layers: int) -> Path:
    """Build (once) and return the random Llama-style checkpoint with `n_layers` layers."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = CACHE_DIR / f"llama-h512-l{n_layers}"
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder
    log.info("building checkpoint %s", folder)
    config = LlamaConfig(vocab_size=VOCAB_SIZE, num_hidden_layers=n_layers, bos_token_id=1,
                         eos_token_id=2, pad_token_id=PAD_ID, tie_word_embeddings=False,
                         **LLAMA_SHAPE)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=CACHE_DIR))
    model.save_pretrained(staging)
    _word_level_tokenizer(staging)
    if folder.exists():  # a half-built folder from an interrupted run
        shutil.rmtree(folder)
    os.replace(staging, folder)
    return folder


def random_batches(*, n_batches: int, batch_size: int, seq_len: int, seed: int) -> tuple[Batch, ...]:
    """Random token ids, real lengths drawn from [seq_len/4, seq_len], the first one full."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        lengths = torch.randint(max(1, seq_len // 4), seq_len + 1, (batch_size,), generator=generator)
        lengths[0] = seq_len
        ids = torch.randint(FIRST_WORD_ID, VOCAB_SIZE, (batch_size, seq_len), generator=generator)  # [B, S]
        mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()  # [B, S]
        batches.append(Batch(input_ids=ids.masked_fill(mask == 0, PAD_ID), attention_mask=mask))
    return tuple(batches)


def word_texts(batches: tuple[Batch, ...]) -> tuple[str, ...]:
    """Each sample's real tokens as the words the bench tokenizer maps back to the same ids."""
    texts = []
    for batch in batches:
        for ids, mask in zip(batch.input_ids, batch.attention_mask):
            texts.append(" ".join(f"w{int(i) - FIRST_WORD_ID}" for i in ids[mask.bool()]))
    return tuple(texts)


def _decoder_workload(name: str, *, n_layers: int, layers: tuple[int, ...],
                      batches: tuple[Batch, ...], metrics: tuple[str, ...] = ()) -> Workload:
    return Workload(name=name, description=DESCRIPTIONS[name], family="decoder",
                    checkpoint=ensure_llama_checkpoint(n_layers), n_layers=n_layers, layers=layers,
                    batches=batches, texts=word_texts(batches), metrics=metrics)


def sentence_batches(tokenizer, sentences: list[str], *, batch_size: int) -> tuple[Batch, ...]:
    """Tokenise real sentences into padded batches (padding to the longest in each batch)."""
    batches = []
    for start in range(0, len(sentences), batch_size):
        encoded = tokenizer(sentences[start:start + batch_size], padding=True, truncation=True,
                            max_length=128, return_tensors="pt")
        batches.append(Batch(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]))
    return tuple(batches)


DESCRIPTIONS = {
    "compute_bound": "8 layers, batch 8 × 256 tokens with mixed real lengths; every layer captured",
    "metrics": "the compute-bound model and batch, every layer captured, plus channel_contribution "
               "at every MLP down projection and kv_head_contribution at every attention output "
               "projection",
    "latency_bound": "8 layers, batch 1 × 16 tokens, one call per prompt; every layer captured",
    "deep_selective": "32 layers, batch 4 × 128 tokens with mixed real lengths; only resid_out[1] "
                      "captured",
    "minilm_sentences": "the trained all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) on real English "
                        "sentences (`bench/sentences.txt`), batch 16; every layer captured",
}


def _compute_batches(quick: bool) -> tuple[Batch, ...]:
    return random_batches(n_batches=1, batch_size=4 if quick else 8, seq_len=128 if quick else 256,
                          seed=1)


def _compute_bound(quick: bool) -> Workload:
    return _decoder_workload("compute_bound", n_layers=8, layers=tuple(range(8)),
                             batches=_compute_batches(quick))


def _metrics(quick: bool) -> Workload:
    return _decoder_workload("metrics", n_layers=8, layers=tuple(range(8)),
                             batches=_compute_batches(quick),
                             metrics=(CHANNEL_CONTRIBUTION, KV_HEAD_CONTRIBUTION))


def _latency_bound(quick: bool) -> Workload:
    return _decoder_workload("latency_bound", n_layers=8, layers=tuple(range(8)), batches=random_batches(
        n_batches=25 if quick else 200, batch_size=1, seq_len=16, seed=2))


def _deep_selective(quick: bool) -> Workload:
    return _decoder_workload("deep_selective", n_layers=32, layers=(1,), batches=random_batches(
        n_batches=1, batch_size=2 if quick else 4, seq_len=64 if quick else 128, seed=3))


def _minilm(quick: bool) -> Workload:
    from transformers import AutoTokenizer

    sentences = [line.strip() for line in SENTENCES_FILE.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    sentences = sentences[:32] if quick else sentences
    tokenizer = AutoTokenizer.from_pretrained(MINILM_DIR)
    return Workload(
        name="minilm_sentences", description=DESCRIPTIONS["minilm_sentences"],
        checkpoint=MINILM_DIR, family="encoder", n_layers=6, layers=tuple(range(6)),
        batches=sentence_batches(tokenizer, sentences, batch_size=16), texts=tuple(sentences),
    )


BUILDERS = {
    "compute_bound": _compute_bound,
    "metrics": _metrics,
    "latency_bound": _latency_bound,
    "deep_selective": _deep_selective,
    "minilm_sentences": _minilm,
}


def unavailable_reason(name: str) -> str | None:
    """Why a workload cannot run on this machine (None when it can)."""
    if name == "minilm_sentences" and not (MINILM_DIR / "model.safetensors").exists():
        return (f"`{MINILM_DIR.relative_to(REPO_ROOT)}` is absent; fetch it with "
                "`.venv/bin/python scripts/fetch_minilm.py`")
    return None


def build_workload(name: str, *, quick: bool) -> Workload:
    """The workload called `name` (see `BUILDERS`), smaller under `--quick`."""
    return BUILDERS[name](quick)
