"""Tiny models the tests build on the spot: no weights can be downloaded, so the loading code is fed these.

`build_tiny_causal_lm(path)` writes a Llama-shaped causal LM with random weights and a byte-level BPE
tokenizer (trained in well under a second with `tokenizers`) carrying a chat template, so that
`from_pretrained(path)`, `pipeline(...)` and `transformers serve path` all work on it offline.
"""

from __future__ import annotations

import os
from pathlib import Path

_CORPUS = [
    "Hello there! How are you today? I am fine, thank you.",
    "The quick brown fox jumps over the lazy dog.",
    "Natty is a Discord bot for creating with generative models together.",
    "Draw a cat, sing a song, write a poem, tell a story about the sea.",
    "user assistant system: what is the answer? The answer is 42.",
    "0 1 2 3 4 5 6 7 8 9 . , ; : ! ? ' \" ( ) [ ] { } - + * / = < > @ # $ % & _",
]

# Minimal ChatML-style template; `add_generation_prompt` opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def build_tiny_tokenizer(path: str | os.PathLike) -> str:
    """Train a byte-level BPE tokenizer in a blink and save it as a PreTrainedTokenizerFast with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(path))
    return str(path)


def build_tiny_causal_lm(path: str | os.PathLike, *, seed: int = 0) -> str:
    """Write a tiny random LlamaForCausalLM plus tokenizer to `path` and return the folder."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    build_tiny_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=16,
        do_sample=False,
    )
    model.save_pretrained(str(folder))
    return str(folder)


def build_tiny_scene_model(path: str | os.PathLike, *, seed: int = 0) -> str:
    """A tiny random natty-scenes model at the real size, vocabulary and palette, saved as `natty train scenes`
    does (models/own/scenes.py)."""
    import torch

    from models.own import save_checkpoint, scenes
    from models.own.pixelcnn import PixelCNN, PixelCNNConfig

    torch.manual_seed(seed)
    cfg = PixelCNNConfig(n_levels=len(scenes.PALETTE), n_classes=scenes.N_TOKENS, height=scenes.SIZE,
                         width=scenes.SIZE, n_channels=4, n_layers=2, map_size=4, map_channels=2)
    save_checkpoint(PixelCNN(cfg), Path(path), {"data": "scenes"})
    return str(path)


def recording_ctx(cancel_after: int | None = None):  # -> (RunContext, list of the Progress it got)
    """A RunContext that keeps every progress report, and cancels itself after `cancel_after` of them."""
    from models.base import RunContext

    reports: list = []
    ctx = RunContext()

    def report(p) -> None:
        reports.append(p)
        if cancel_after is not None and len(reports) >= cancel_after:
            ctx.cancel.cancel()

    ctx.report = report
    return ctx, reports
