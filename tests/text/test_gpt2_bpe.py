"""GPT-2 byte-level BPE on small vocabulary files written by the test."""

import json

import pytest

from pipeline.text import GPT2BPETokenizer, bytes_to_unicode, get_tokenizer
from pipeline.text.gpt2_bpe import _PRETOKENIZE

MERGES = [("t", "h"), ("th", "e"), ("Ġ", "the"), ("l", "o"), ("lo", "w"), ("Ġ", "c")]


def write_vocab(folder, merges=MERGES, extra_tokens=(), drop=()):
    symbols = list(bytes_to_unicode().values()) + [a + b for a, b in merges] + list(extra_tokens)
    encoder = {s: i for i, s in enumerate(dict.fromkeys(symbols)) if s not in drop}
    encoder["<|endoftext|>"] = max(encoder.values()) + 1
    enc_path, bpe_path = folder / "encoder.json", folder / "vocab.bpe"
    enc_path.write_text(json.dumps(encoder), encoding="utf-8")
    bpe_path.write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    return enc_path, bpe_path, encoder


@pytest.fixture
def vocab(tmp_path):
    return write_vocab(tmp_path)


def test_bytes_to_unicode_is_a_printable_bijection():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
    assert all(c.isprintable() and not c.isspace() for c in table.values())


def test_pretokenizer_splits_like_gpt2():
    assert _PRETOKENIZE.findall("I'll go  now, 42x!") == [
        "I", "'ll", " go", " ", " now", ",", " 42", "x", "!",
    ]  # fmt: skip


def test_merges_and_vocab_size(vocab):
    enc_path, bpe_path, encoder = vocab
    tok = GPT2BPETokenizer.from_files(enc_path, bpe_path)
    assert tok.vocab_size == 256 + len(MERGES) + 1
    ids = tok.encode("the low the cat")
    # "the" | " low" -> Ġ + low (no "Ġ low" merge) | " the" | " cat" -> Ġc, a, t
    expected = ["the", "Ġ", "low", "Ġthe", "Ġc", "a", "t"]
    assert ids == [encoder[s] for s in expected]
    assert tok.decode(ids) == "the low the cat"


def test_merge_rank_order_decides(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir(), b.mkdir()
    tok_ab = GPT2BPETokenizer.from_files(*write_vocab(a, [("a", "b"), ("b", "c")])[:2])
    tok_bc = GPT2BPETokenizer.from_files(*write_vocab(b, [("b", "c"), ("a", "b")])[:2])
    assert [tok_ab.decoder[i] for i in tok_ab.encode("abc")] == ["ab", "c"]
    assert [tok_bc.decoder[i] for i in tok_bc.encode("abc")] == ["a", "bc"]
    assert tok_ab.identity != tok_bc.identity


@pytest.mark.parametrize(
    "text",
    ["", "the low the", "Héllo, wörld! 🙂\n\ttabs  and   spaces ", "it's 2024's end", "日本語"],
)
def test_round_trip(vocab, text):
    tok = GPT2BPETokenizer.from_files(*vocab[:2])
    assert tok.decode(tok.encode(text)) == text


def test_identity_hashes_the_files(tmp_path, vocab):
    enc_path, bpe_path, _ = vocab
    ident = GPT2BPETokenizer.from_files(enc_path, bpe_path).identity
    assert ident.startswith("gpt2-bpe:") and len(ident) == len("gpt2-bpe:") + 64
    assert get_tokenizer("gpt2", encoder_json=enc_path, vocab_bpe=bpe_path).identity == ident
    bpe_path.write_text(bpe_path.read_text() + "\n")  # same merges, other bytes
    assert GPT2BPETokenizer.from_files(enc_path, bpe_path).identity != ident


def test_missing_files_are_named(tmp_path, vocab):
    enc_path, bpe_path, _ = vocab
    with pytest.raises(FileNotFoundError, match="nope.json"):
        GPT2BPETokenizer.from_files(tmp_path / "nope.json", bpe_path)
    with pytest.raises(FileNotFoundError, match="nope.bpe"):
        GPT2BPETokenizer.from_files(enc_path, tmp_path / "nope.bpe")


def test_corrupt_files_are_named(tmp_path, vocab):
    enc_path, bpe_path, _ = vocab
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json.*not valid JSON"):
        GPT2BPETokenizer.from_files(bad_json, bpe_path)
    bad_bpe = tmp_path / "bad.bpe"
    bad_bpe.write_text("#version: 0.2\nt h\nthree parts here\n")
    with pytest.raises(ValueError, match="bad.bpe, line 3"):
        GPT2BPETokenizer.from_files(enc_path, bad_bpe)


def test_mismatched_files(tmp_path):
    enc_path, bpe_path, _ = write_vocab(tmp_path, drop=("the",))
    with pytest.raises(ValueError, match="missing from .*encoder.json"):
        GPT2BPETokenizer.from_files(enc_path, bpe_path)
    enc_path, bpe_path, _ = write_vocab(tmp_path, drop=("Ġ",))
    with pytest.raises(ValueError, match="byte symbols"):
        GPT2BPETokenizer.from_files(enc_path, bpe_path)
