"""CLIP's BPE tokenizer (the project default), wrapped from clip-anytorch.

clip-anytorch ships the BPE vocabulary inside the package, so nothing needs downloading.
SimpleTokenizer lower-cases and cleans the text; its encode adds no <|startoftext|> /
<|endoftext|> tokens and neither do we (see tokenizer.py for the shared conventions).
"""

from __future__ import annotations

from pipeline.text.tokenizer import Tokenizer


class CLIPBPETokenizer(Tokenizer):
    def __init__(self) -> None:
        try:
            from clip.simple_tokenizer import SimpleTokenizer
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "CLIPBPETokenizer needs the clip-anytorch package (`import clip`); "
                "note that clip needs setuptools < 81 for pkg_resources"
            ) from e
        self._bpe = SimpleTokenizer()
        self._vocab_size = len(self._bpe.encoder)  # 49408, incl. sot/eot ids

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def identity(self) -> str:
        return f"clip-bpe-{self._vocab_size}"

    def encode(self, text: str) -> list[int]:
        return self._bpe.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self._bpe.decode(list(ids)).strip()
