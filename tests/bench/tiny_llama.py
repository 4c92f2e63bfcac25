"""Helpers shared by the bench tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import bench.workloads as workloads


def build_tiny_llama(folder: Path, *, n_layers: int, vocab: int) -> Path:
    """A random Llama (hidden 32, 4 heads, 2 KV heads) with the bench's word-level tokenizer
    over `vocab` words, saved in `folder`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=n_layers, num_attention_heads=4,
                         num_key_value_heads=2, pad_token_id=workloads.PAD_ID,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(workloads, "VOCAB_SIZE", vocab)
        workloads._word_level_tokenizer(folder)
    return folder
