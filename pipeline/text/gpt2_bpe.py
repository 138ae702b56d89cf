"""GPT-2 byte-level BPE (the vocabulary of the released GLIDE models), from user-supplied files.

    encoder.json : {token string -> id}      (50257 entries for real GPT-2)
    vocab.bpe    : "#version" header line, then one merge "a b" per line, in priority order

Text -> utf-8 bytes -> each byte mapped to a printable unicode character (bytes_to_unicode) ->
split into words by the GPT-2 regex -> each word merged greedily by lowest merge rank -> ids.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import regex

from pipeline.text.tokenizer import Tokenizer

# contractions, letter runs, number runs, other-symbol runs (each optionally led by one space),
# trailing whitespace, other whitespace
_PRETOKENIZE = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Reversible map byte -> printable character: printable latin-1 bytes map to themselves,
    the other 68 bytes (control chars, space, ...) to code points 256, 257, ... in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _read_encoder(path: Path) -> dict[str, int]:
    if not path.is_file():
        raise FileNotFoundError(f"GPT-2 BPE encoder file not found: {path}")
    try:
        encoder = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"GPT-2 BPE encoder file {path} is not valid JSON: {e}") from e
    if not isinstance(encoder, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in encoder.items()
    ):
        raise ValueError(f"GPT-2 BPE encoder file {path} must map token strings to int ids")
    if len(set(encoder.values())) != len(encoder) or min(encoder.values(), default=0) < 0:
        raise ValueError(f"GPT-2 BPE encoder file {path} has duplicate or negative ids")
    return encoder


def _read_merges(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"GPT-2 BPE merges file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"GPT-2 BPE merges file {path} is not utf-8 text: {e}") from e
    merges = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or (lineno == 1 and line.startswith("#")):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(
                f"GPT-2 BPE merges file {path}, line {lineno}: expected 'a b', got {line!r}"
            )
        merges.append((parts[0], parts[1]))
    return merges


class GPT2BPETokenizer(Tokenizer):
    def __init__(self, encoder: dict[str, int], merges: list[tuple[str, str]], identity: str):
        self.encoder = encoder
        self.decoder = {i: s for s, i in encoder.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self._identity = identity
        self._vocab_size = max(encoder.values()) + 1
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def from_files(cls, encoder_json: str | Path, vocab_bpe: str | Path) -> GPT2BPETokenizer:
        encoder_json, vocab_bpe = Path(encoder_json), Path(vocab_bpe)
        encoder = _read_encoder(encoder_json)
        merges = _read_merges(vocab_bpe)
        missing = [c for c in bytes_to_unicode().values() if c not in encoder]
        if missing:
            raise ValueError(
                f"GPT-2 BPE encoder file {encoder_json} lacks {len(missing)} of the 256 byte "
                f"symbols (e.g. {missing[0]!r}): some text could not be encoded"
            )
        bad = [a + b for a, b in merges if a + b not in encoder]
        if bad:
            raise ValueError(
                f"GPT-2 BPE merges file {vocab_bpe} produces {len(bad)} tokens missing from "
                f"{encoder_json} (e.g. {bad[0]!r}): the two files do not belong together"
            )
        digest = hashlib.sha256()
        for path in (encoder_json, vocab_bpe):
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return cls(encoder, merges, identity=f"gpt2-bpe:{digest.hexdigest()}")

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def identity(self) -> str:
        return self._identity

    def _bpe(self, word: str) -> list[str]:
        """Merge the characters of one pre-token, lowest rank first, until no pair is known."""
        if word in self._cache:
            return self._cache[word]
        parts = list(word)
        while len(parts) > 1:
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        if len(self._cache) < 100_000:
            self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in _PRETOKENIZE.findall(text):
            word = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[tok] for tok in self._bpe(word))
        return ids

    def decode(self, ids: list[int]) -> str:
        text = "".join(self.decoder[int(i)] for i in ids)
        return bytes(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace")
