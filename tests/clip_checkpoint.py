"""A tiny randomly initialised CLIP checkpoint written offline, in the layout of a real one.

``CLIPModel(CLIPConfig(tiny sizes)).save_pretrained`` beside a real ``CLIPTokenizer`` (byte-level
BPE) whose vocabulary is the 256 byte symbols, each also as a word end, and CLIP's two special
tokens, with no merges: every word is spelled out symbol by symbol. Nothing is downloaded. Tests
that need it skip, with the reason, when the optional ``transformers`` (``spurlab[clip]``) is absent.
"""
from __future__ import annotations

from pathlib import Path

import pytest

SKIP_REASON = "the CLIP path needs the optional transformers package (pip install 'spurlab[clip]')"


def save_tiny_clip(path: Path, max_positions: int = 32, seed: int = 0) -> Path:
    pytest.importorskip("transformers", reason=SKIP_REASON)
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate([*symbols, *(s + "</w>" for s in symbols),
                                                 "<|startoftext|>", "<|endoftext|>"])}
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_positions).save_pretrained(path)
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=max_positions,
                                         bos_token_id=bos, eos_token_id=eos, pad_token_id=eos, **small),
                        vision_config=dict(image_size=32, patch_size=16, **small), projection_dim=8)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(path)
    return Path(path)
