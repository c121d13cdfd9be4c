"""A tiny randomly initialised CLIP checkpoint written offline, in the layout of a real one.

``CLIPModel(CLIPConfig(tiny sizes)).save_pretrained`` beside the files of a CLIP tokenizer
(``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` naming ``CLIPTokenizer``, as in a real
checkpoint): byte-level BPE whose vocabulary is the 256 byte symbols, each also as a word end, and
CLIP's two special tokens, with no merges, so every word is spelled out symbol by symbol. Written as
files, not through the tokenizer's constructor (whose arguments differ between transformers 4 and 5).
Nothing is downloaded. Tests that need it skip, with the reason, when the optional ``transformers``
(``spurlab[clip]``) is absent.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

SKIP_REASON = "the CLIP path needs the optional transformers package (pip install 'spurlab[clip]')"


def save_tiny_clip(path: Path, max_positions: int = 32, seed: int = 0) -> Path:
    pytest.importorskip("transformers", reason=SKIP_REASON)
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPModel

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate([*symbols, *(s + "</w>" for s in symbols),
                                                 "<|startoftext|>", "<|endoftext|>"])}
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab), "utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n", "utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": max_positions, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}), "utf-8")
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=max_positions,
                                         bos_token_id=bos, eos_token_id=eos, pad_token_id=eos, **small),
                        vision_config=dict(image_size=32, patch_size=16, **small), projection_dim=8)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(path)
    return path
