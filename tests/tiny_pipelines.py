"""Tiny random-weight transformers models, saved to folders, for the pipelines backend's tests and bench.

Nothing is downloaded: tokenizers are trained in a moment with `tokenizers`, configs are built by hand and
weights are random. Each builder saves with `save_pretrained` and returns the folder, as a user would point
a catalog entry at it.
"""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "natty is a discord bot for making things with generative models together",
    "hello there, how are you today? fine thanks, and you?",
    "a photo of a cat sitting on a red chair next to a window",
    "speech to text turns audio into words; text to speech turns words into audio",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"-()[]{}<>|/\\",
]


def train_tokenizer(vocab_size: int = 400, chat_template: bool = True):  # -> PreTrainedTokenizerFast
    """A byte-level BPE tokenizer trained on a few sentences, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_gpt2(path: str | Path, *, n_layer: int = 2, n_embd: int = 64, n_head: int = 2,
                    chat_template: bool = True, seed: int = 0) -> str:
    """A random GPT-2 causal LM with a trained tokenizer (and a chat template unless told otherwise)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    tok = train_tokenizer(chat_template=chat_template)
    config = GPT2Config(
        vocab_size=len(tok), n_positions=512, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def build_gpt2_small_shaped(path: str | Path, seed: int = 0) -> str:
    """GPT-2-small's shape (12 layers, 768 wide, 12 heads) with random weights and a small trained vocab."""
    return build_tiny_gpt2(path, n_layer=12, n_embd=768, n_head=12, seed=seed)


def _vit_processor(size: int = 32):  # -> ViTImageProcessor
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": size, "width": size}, do_resize=True, do_normalize=True)


def _tiny_vit_config(size: int = 32, **kw):  # -> ViTConfig
    from transformers import ViTConfig

    return ViTConfig(image_size=size, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=64, **kw)


def build_tiny_vit_classifier(path: str | Path, labels: tuple[str, ...] = ("cat", "dog", "bird", "fish")) -> str:
    """A random ViT image classifier with named labels and its image processor."""
    import torch
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    config = _tiny_vit_config(id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    ViTForImageClassification(config).eval().save_pretrained(path)
    _vit_processor().save_pretrained(path)
    return str(path)


def build_tiny_captioner(path: str | Path) -> str:
    """A random VisionEncoderDecoder (tiny ViT encoder + tiny GPT-2 decoder) for image-to-text."""
    import torch
    from transformers import GPT2Config, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    torch.manual_seed(0)
    tok = train_tokenizer(chat_template=False)
    decoder = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=1, n_head=2,
                         add_cross_attention=True, is_decoder=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    config = VisionEncoderDecoderConfig(encoder=_tiny_vit_config().to_dict(), decoder=decoder.to_dict())
    config.decoder_start_token_id = tok.bos_token_id
    config.pad_token_id = tok.pad_token_id
    config.eos_token_id = tok.eos_token_id
    model = VisionEncoderDecoderModel(config=config).eval()
    model.generation_config.decoder_start_token_id = tok.bos_token_id
    model.generation_config.max_new_tokens = 8
    model.save_pretrained(path)
    tok.save_pretrained(path)
    _vit_processor().save_pretrained(path)
    return str(path)


def build_tiny_whisper(path: str | Path) -> str:
    """A random Whisper with a feature extractor (16 kHz) and a trained tokenizer, for speech-to-text."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )

    torch.manual_seed(0)
    bpe = json.loads(train_tokenizer(chat_template=False).backend_tokenizer.to_str())["model"]
    # The ASR pipeline needs Whisper's own tokenizer class (for its timestamp-aware decoding).
    tok = WhisperTokenizer(vocab=bpe["vocab"], merges=[tuple(m) for m in bpe["merges"]], pad_token="<|pad|>")
    n = len(tok)
    config = WhisperConfig(
        vocab_size=n, num_mel_bins=80, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=64,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.bos_token_id, suppress_tokens=[], begin_suppress_tokens=[],
    )
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config.max_new_tokens = 8
    model.generation_config.forced_decoder_ids = None
    model.save_pretrained(path)
    tok.save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80, sampling_rate=16000).save_pretrained(path)
    return str(path)


def build_tiny_vits(path: str | Path) -> str:
    """A random VITS (MMS-TTS architecture) with a character vocabulary, for text-to-speech."""
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    torch.manual_seed(0)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chars = ["<pad>", "<unk>", " "] + list("abcdefghijklmnopqrstuvwxyz.,!?'")
    vocab_file = path / "vocab.json"
    vocab_file.write_text(json.dumps({c: i for i, c in enumerate(chars)}))
    tok = VitsTokenizer(str(vocab_file), pad_token="<pad>", unk_token="<unk>", add_blank=True,
                        normalize=True, phonemize=False)
    config = VitsConfig(
        vocab_size=len(chars), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
        flow_size=16, spectrogram_bins=17, prior_encoder_num_flows=1, prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1, duration_predictor_num_flows=1,
        duration_predictor_filter_channels=16, upsample_initial_channel=16,
        upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]], sampling_rate=16000,
    )
    VitsModel(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
