"""Configs of the built-in tiny models, as Hugging Face `config.json` dicts (no torch here).

`expc check` reads model shapes from these for `builtin:NAME` exactly as it reads a
checkpoint's `config.json`; `expc.models` builds the untrained models from them, with
weights generated deterministically from `BUILTIN_SEED`. All use the byte-level tokenizer
(256 byte ids, then pad, bos, eos), hence the vocabulary of 259.
"""

BUILTIN_SEED = 1234
BYTE_VOCAB = 259

BUILTIN_CONFIGS: dict[str, dict] = {
    "tiny-llama": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": BYTE_VOCAB, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "hidden_act": "silu", "tie_word_embeddings": False,
        "pad_token_id": 256, "bos_token_id": 257, "eos_token_id": 258,
    },
    "tiny-olmo2": {
        "architectures": ["Olmo2ForCausalLM"], "model_type": "olmo2",
        "vocab_size": BYTE_VOCAB, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False,
        "pad_token_id": 256, "bos_token_id": 257, "eos_token_id": 258,
    },
    "tiny-bert": {
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": BYTE_VOCAB, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 4, "num_attention_heads": 4, "max_position_embeddings": 512,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
        "pad_token_id": 256,
    },
}
