"""CLIP's BPE tokenizer (the project default), wrapped from clip-anytorch.

clip-anytorch ships the BPE vocabulary inside the package, so nothing needs downloading.
SimpleTokenizer lower-cases and cleans the text; its encode adds no <|startoftext|> /
<|endoftext|> tokens and neither do we (see tokenizer.py for the shared conventions).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from pipeline.text.tokenizer import Tokenizer


@lru_cache(maxsize=1)
def _simple_tokenizer_class():
    """clip.simple_tokenizer.SimpleTokenizer, loaded from its file when possible: importing the
    `clip` package itself pulls in torchvision and pkg_resources (~6 s, a deprecation warning)."""
    spec = importlib.util.find_spec("clip")
    if spec is None:
        raise ImportError("CLIPBPETokenizer needs the clip-anytorch package (`import clip`)")
    for folder in spec.submodule_search_locations or []:
        path = Path(folder) / "simple_tokenizer.py"
        if path.is_file():
            file_spec = importlib.util.spec_from_file_location("_clip_simple_tokenizer", path)
            module = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(module)
            return module.SimpleTokenizer
    from clip.simple_tokenizer import SimpleTokenizer  # pragma: no cover - unusual layout

    return SimpleTokenizer


class CLIPBPETokenizer(Tokenizer):
    def __init__(self) -> None:
        self._bpe = _simple_tokenizer_class()()
        self._vocab_size = len(self._bpe.encoder)  # 49408, incl. the unused sot/eot ids

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
