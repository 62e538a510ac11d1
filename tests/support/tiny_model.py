"""The test model: a tiny random Llama with the SmolLM2 tokenizer, so tests run the real
code paths (tokenizer, chat template, peft, TRL) in seconds. Built once and cached."""

import json
import os
from pathlib import Path

from django.conf import settings

VOCAB_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
)


def tiny_model_dir() -> Path:
    folder = settings.MODEL_CACHE_DIR / "tiny-llama-test"
    if (folder / "finetune_hub.json").exists():
        return folder
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from inference.base_models import embedded_gguf

    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **VOCAB_CONFIG,
    )
    model = LlamaForCausalLM(config)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / "finetune_hub.json").write_text(json.dumps({"source": "tiny random llama (tests)"}))
    try:
        tmp.rename(folder)
    except OSError:
        pass
    return folder
