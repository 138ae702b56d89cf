"""Tokenizer interface, batching to fixed-length (tokens, mask), the empty caption.

Conventions shared by every tokenizer of the project:
- no start / end tokens are added: a caption is exactly its BPE tokens (as GLIDE's GPT-2 encoding);
- padding is on the right with PAD_ID = 0 for every tokenizer, so the empty caption does not
  depend on the tokenizer. The value is irrelevant to a GLIDE model with xf_padding (padded
  positions are replaced by a learned embedding); without xf_padding it is just a token;
- mask is True at real tokens, False at padding. The empty caption "" is all padding, mask all
  False: it is the unconditional input of classifier-free guidance.
"""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch

PAD_ID = 0


class CaptionTruncatedWarning(UserWarning):
    """A caption had more tokens than text_ctx and was cut (GLIDE truncates silently)."""


class Tokenizer(ABC):
    """What the models and the data pipeline need from a tokenizer."""

    pad_id: int = PAD_ID

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids the model's token embedding must hold."""

    @property
    @abstractmethod
    def identity(self) -> str:
        """Stable name of the vocabulary, stored in checkpoints (e.g. 'clip-bpe-49408')."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of a caption, without start/end tokens."""

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError(f"{type(self).__name__} does not decode")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identity={self.identity!r}, vocab_size={self.vocab_size})"


class TokenizedBatch(NamedTuple):
    tokens: torch.Tensor  # LongTensor [B, text_ctx]
    mask: torch.Tensor  # BoolTensor [B, text_ctx], True at real tokens
    truncated: list[bool]  # per caption: had more than text_ctx tokens


def _check_ctx(text_ctx: int) -> None:
    if not isinstance(text_ctx, int) or isinstance(text_ctx, bool) or text_ctx <= 0:
        raise ValueError(f"text_ctx must be a positive int, got {text_ctx!r}")


def encode_batch(tokenizer: Tokenizer, captions: list[str], text_ctx: int) -> TokenizedBatch:
    """Encode, truncate to text_ctx, right-pad with PAD_ID; report which captions were cut."""
    _check_ctx(text_ctx)
    if isinstance(captions, str):
        raise TypeError("captions must be a list of strings, not a single string")
    tokens = torch.full((len(captions), text_ctx), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(captions), text_ctx), dtype=torch.bool)
    truncated = []
    for i, caption in enumerate(captions):
        ids = tokenizer.encode(caption)
        truncated.append(len(ids) > text_ctx)
        ids = ids[:text_ctx]
        if ids:
            tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, : len(ids)] = True
    return TokenizedBatch(tokens, mask, truncated)


class TruncationTally:
    """Captions cut to ``text_ctx``, each counted once per ``text_ctx`` (by its key, or by its
    text when no keys are given), with the first one as an example: one line for a whole stage
    instead of one warning per batch."""

    def __init__(self) -> None:
        self.cut: dict[int, set[str]] = {}
        self.example = ""

    def add(self, captions: Sequence[str], text_ctx: int, keys: Sequence[str] = ()) -> None:
        if captions and not self.example:
            self.example = str(captions[0])
        self.cut.setdefault(int(text_ctx), set()).update(map(str, keys or captions))

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.cut.values())

    def summary(self) -> str:
        """``"3 captions longer than text_ctx=32 tokens were truncated (e.g. '...')"``, or ""."""
        if not self.count:
            return ""
        parts = [
            f"{len(ids)} caption{'s' * (len(ids) != 1)} longer than text_ctx={ctx} tokens"
            for ctx, ids in sorted(self.cut.items())
        ]
        example = self.example if len(self.example) <= 80 else self.example[:77] + "..."
        return f"{'; '.join(parts)} were truncated, as GLIDE does (e.g. {example!r})"


_TALLIES: list[TruncationTally] = []


@contextlib.contextmanager
def collect_truncations() -> Iterator[TruncationTally]:
    """Within this block, :func:`tokenize_batch` adds truncated captions to the tally it yields
    instead of warning (print ``tally.summary()`` once at the end)."""
    tally = TruncationTally()
    _TALLIES.append(tally)
    try:
        yield tally
    finally:
        _TALLIES.remove(tally)


def tokenize_batch(
    tokenizer: Tokenizer, captions: list[str], text_ctx: int, warn: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens LongTensor[B, text_ctx], mask BoolTensor[B, text_ctx]).

    Captions longer than text_ctx are truncated and, unless warn=False, reported: added to the
    innermost :func:`collect_truncations` tally if one is open, else as a
    CaptionTruncatedWarning. `encode_batch` gives the per-caption flags.
    """
    batch = encode_batch(tokenizer, captions, text_ctx)
    if warn and _TALLIES and any(batch.truncated):
        cut = [c for c, t in zip(captions, batch.truncated, strict=True) if t]
        _TALLIES[-1].add(cut, text_ctx)
    elif warn and any(batch.truncated):
        n = sum(batch.truncated)
        first = next(c for c, t in zip(captions, batch.truncated, strict=True) if t)
        warnings.warn(
            f"{n} of {len(captions)} captions exceed text_ctx={text_ctx} tokens and were "
            f"truncated (first: {first[:60]!r})",
            CaptionTruncatedWarning,
            stacklevel=2,
        )
    return batch.tokens, batch.mask


def empty_caption_tokens(
    text_ctx: int, batch_size: int = 1, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The empty caption "": tokens all PAD_ID [B, text_ctx], mask all False [B, text_ctx].

    Equal to tokenize_batch(any_tokenizer, [""] * batch_size, text_ctx).
    """
    _check_ctx(text_ctx)
    tokens = torch.full((batch_size, text_ctx), PAD_ID, dtype=torch.long, device=device)
    mask = torch.zeros((batch_size, text_ctx), dtype=torch.bool, device=device)
    return tokens, mask
