"""Captions as CLIP's text encoder reads them: <|startoftext|> ids <|endoftext|>, zero-padded.

This is the convention of OpenAI CLIP (``clip.tokenize(..., truncate=True)``), which differs
from the project's diffusion-model convention (no start/end tokens, see ``tokenizer.py``): CLIP
takes its text feature at the <|endoftext|> position, found as the largest id of the row. The
BPE is the project's CLIP tokenizer (the same vocabulary file clip-anytorch ships), so this
module does not import the ``clip`` package (and torchvision) to tokenise.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from pipeline.text.clip_bpe import CLIPBPETokenizer

START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"


@lru_cache(maxsize=1)
def _tokenizer() -> tuple[CLIPBPETokenizer, int, int]:
    tokenizer = CLIPBPETokenizer()
    encoder = tokenizer._bpe.encoder
    return tokenizer, int(encoder[START_OF_TEXT]), int(encoder[END_OF_TEXT])


def clip_vocab_size() -> int:
    """Token ids a CLIP text encoder's embedding holds (49408, start/end tokens included)."""
    return _tokenizer()[0].vocab_size


def clip_text_tokens(captions: Sequence[str], text_ctx: int) -> torch.Tensor:
    """LongTensor [B, text_ctx]: each caption as [sot, ids..., eot, 0, ...].

    A caption longer than ``text_ctx - 2`` tokens is cut and still ends with <|endoftext|>,
    as ``clip.tokenize(captions, context_length=text_ctx, truncate=True)`` does.
    """
    if isinstance(captions, str):
        raise TypeError("captions must be a list of strings, not a single string")
    if int(text_ctx) < 2:
        raise ValueError(f"text_ctx must be at least 2 (start and end tokens), got {text_ctx}")
    tokenizer, sot, eot = _tokenizer()
    out = torch.zeros(len(captions), int(text_ctx), dtype=torch.long)
    for row, caption in enumerate(captions):
        ids = [sot, *tokenizer.encode(str(caption))[: int(text_ctx) - 2], eot]
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out
