"""Tokenizers (CLIP BPE default, GPT-2 BPE from user files) and the empty caption."""

from __future__ import annotations

from pipeline.text.clip_bpe import CLIPBPETokenizer
from pipeline.text.gpt2_bpe import GPT2BPETokenizer, bytes_to_unicode
from pipeline.text.tokenizer import (
    PAD_ID,
    CaptionTruncatedWarning,
    TokenizedBatch,
    Tokenizer,
    TruncationTally,
    collect_truncations,
    empty_caption_tokens,
    encode_batch,
    tokenize_batch,
)

TOKENIZERS = ("clip", "gpt2")


def get_tokenizer(name: str = "clip", **paths) -> Tokenizer:
    """'clip' (no paths) or 'gpt2' (encoder_json=..., vocab_bpe=...)."""
    if name == "clip":
        if paths:
            raise TypeError(f"the clip tokenizer takes no file paths, got {sorted(paths)}")
        return CLIPBPETokenizer()
    if name == "gpt2":
        unknown = set(paths) - {"encoder_json", "vocab_bpe"}
        missing = {"encoder_json", "vocab_bpe"} - set(paths)
        if unknown or missing:
            raise TypeError(
                "the gpt2 tokenizer needs exactly encoder_json=... and vocab_bpe=... "
                f"(unknown: {sorted(unknown)}, missing: {sorted(missing)})"
            )
        return GPT2BPETokenizer.from_files(paths["encoder_json"], paths["vocab_bpe"])
    raise ValueError(f"unknown tokenizer {name!r}; expected one of {TOKENIZERS}")


__all__ = [
    "PAD_ID",
    "TOKENIZERS",
    "CLIPBPETokenizer",
    "CaptionTruncatedWarning",
    "GPT2BPETokenizer",
    "TokenizedBatch",
    "Tokenizer",
    "TruncationTally",
    "bytes_to_unicode",
    "collect_truncations",
    "empty_caption_tokens",
    "encode_batch",
    "get_tokenizer",
    "tokenize_batch",
]
