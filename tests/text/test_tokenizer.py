"""Batching to (tokens, mask), truncation, the empty caption, the CLIP tokenizer, the factory."""

import warnings

import pytest
import torch

from pipeline.text import (
    PAD_ID,
    CaptionTruncatedWarning,
    CLIPBPETokenizer,
    Tokenizer,
    collect_truncations,
    empty_caption_tokens,
    encode_batch,
    get_tokenizer,
    tokenize_batch,
)


class WordTokenizer(Tokenizer):
    """One id per whitespace-separated word: 'w<n>' -> n."""

    vocab_size = 1000
    identity = "test-words"

    def encode(self, text):
        return [int(w[1:]) for w in text.split()]


@pytest.fixture(scope="module")
def clip_tok():
    return CLIPBPETokenizer()


def test_padding_and_mask():
    tokens, mask = tokenize_batch(WordTokenizer(), ["w5 w6 w7", "w9", ""], text_ctx=5)
    assert tokens.dtype == torch.long and mask.dtype == torch.bool
    assert tokens.tolist() == [[5, 6, 7, PAD_ID, PAD_ID], [9] + [PAD_ID] * 4, [PAD_ID] * 5]
    assert mask.tolist() == [
        [True, True, True, False, False],
        [True, False, False, False, False],
        [False] * 5,
    ]


def test_truncation_is_reported():
    tok = WordTokenizer()
    captions = ["w1 w2 w3 w4 w5 w6", "w1 w2"]
    with pytest.warns(CaptionTruncatedWarning, match="1 of 2 captions exceed text_ctx=4"):
        tokens, mask = tokenize_batch(tok, captions, text_ctx=4)
    assert tokens[0].tolist() == [1, 2, 3, 4] and mask[0].all()
    batch = encode_batch(tok, captions, text_ctx=4)
    assert batch.truncated == [True, False]
    assert torch.equal(batch.tokens, tokens) and torch.equal(batch.mask, mask)
    # exactly text_ctx tokens is not a truncation; warn=False silences the warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenize_batch(tok, ["w1 w2 w3 w4"], text_ctx=4)
        tokenize_batch(tok, captions, text_ctx=4, warn=False)


def test_truncations_in_a_block_make_one_summary_instead_of_warnings():
    """A stage samples the same captions under many conditions: one line, not one per batch."""
    tok = WordTokenizer()
    long_caption, other = "w1 w2 w3 w4 w5 w6", "w7 w8 w9 w10 w11"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CaptionTruncatedWarning would fail the test
        with collect_truncations() as tally:
            for _ in range(5):  # e.g. five guidance scales
                tokenize_batch(tok, [long_caption, "w1", other], text_ctx=4)
            tokenize_batch(tok, [long_caption], text_ctx=3)  # another model's text_ctx
    assert tally.count == 3
    assert tally.summary() == (
        "1 caption longer than text_ctx=3 tokens; 2 captions longer than text_ctx=4 tokens "
        "were truncated, as GLIDE does (e.g. 'w1 w2 w3 w4 w5 w6')"
    )
    with pytest.warns(CaptionTruncatedWarning):  # outside the block: warnings again
        tokenize_batch(tok, [long_caption], text_ctx=4)


def test_empty_caption_is_all_padding(clip_tok):
    tokens, mask = empty_caption_tokens(7, batch_size=3)
    assert tokens.shape == mask.shape == (3, 7)
    assert (tokens == PAD_ID).all() and not mask.any()
    for tok in (clip_tok, WordTokenizer()):
        t2, m2 = tokenize_batch(tok, ["", ""], text_ctx=7)
        assert torch.equal(t2, tokens[:2]) and torch.equal(m2, mask[:2])


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_text_ctx(bad):
    with pytest.raises(ValueError, match="text_ctx"):
        tokenize_batch(WordTokenizer(), ["w1"], text_ctx=bad)
    with pytest.raises(ValueError, match="text_ctx"):
        empty_caption_tokens(bad)


def test_single_string_rejected():
    with pytest.raises(TypeError, match="list of strings"):
        tokenize_batch(WordTokenizer(), "w1 w2", text_ctx=4)


def test_clip_tokenizer(clip_tok):
    assert clip_tok.vocab_size == 49408
    assert clip_tok.identity == "clip-bpe-49408"
    ids = clip_tok.encode("A red cube on a blue sphere")
    assert len(ids) == 7 and all(0 <= i < 49406 for i in ids)  # no start/end tokens
    assert clip_tok.decode(ids) == "a red cube on a blue sphere"
    tokens, mask = tokenize_batch(clip_tok, ["a red cube"], text_ctx=16)
    assert mask.sum() == 3 and tokens[0, :3].tolist() == clip_tok.encode("a red cube")


def test_get_tokenizer(tmp_path):
    assert isinstance(get_tokenizer("clip"), CLIPBPETokenizer)
    with pytest.raises(ValueError, match="unknown tokenizer 'bert'"):
        get_tokenizer("bert")
    with pytest.raises(TypeError, match="missing"):
        get_tokenizer("gpt2", encoder_json=tmp_path / "encoder.json")
    with pytest.raises(TypeError, match="no file paths"):
        get_tokenizer("clip", vocab_bpe="x")
