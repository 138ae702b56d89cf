"""Building blocks against naive reference computations."""

import math

import torch

from pipeline.models.nn_blocks import GroupNorm32, LayerNorm32, timestep_embedding
from pipeline.models.text_transformer import MultiheadAttention
from pipeline.models.unet import AttentionBlock


def naive_attention(q, k, v):  # [N, ch, Tq], [N, ch, Tk], [N, ch, Tk] -> [N, ch, Tq]
    w = torch.einsum("nct,ncs->nts", q, k) / math.sqrt(q.shape[1])
    return torch.einsum("nts,ncs->nct", w.softmax(dim=-1), v)


def test_unet_attention_with_encoder_matches_naive():
    torch.manual_seed(0)
    c, heads, enc_c, length = 64, 4, 24, 5
    block = AttentionBlock(c, num_head_channels=16, encoder_channels=enc_c)
    assert block.num_heads == heads
    torch.nn.init.normal_(block.proj_out.weight, std=0.1)
    x, enc = torch.randn(2, c, 4, 4), torch.randn(2, enc_c, length)

    ch = c // heads
    qkv = block.qkv(block.norm(x).reshape(2, c, 16))  # [B, 3C, T], per head (q|k|v)
    q, k, v = qkv.reshape(2 * heads, 3 * ch, 16).split(ch, dim=1)
    ek, ev = block.encoder_kv(enc).reshape(2 * heads, 2 * ch, length).split(ch, dim=1)
    k, v = torch.cat([ek, k], dim=-1), torch.cat([ev, v], dim=-1)  # text first
    h = naive_attention(q, k, v).reshape(2, c, 16)
    expected = x + block.proj_out(h).reshape(2, c, 4, 4)
    torch.testing.assert_close(block(x, enc), expected, rtol=1e-4, atol=1e-5)
    # without the encoder sequence it is plain self-attention, and the text matters
    assert not torch.allclose(block(x, enc), block(x, None))


def test_text_attention_matches_naive_and_is_unmasked():
    torch.manual_seed(0)
    width, heads, n = 32, 4, 6
    attn = MultiheadAttention(width, heads)
    x = torch.randn(2, n, width)
    ch = width // heads
    qkv = attn.c_qkv(x).reshape(2, n, heads, 3 * ch)  # per head (q|k|v)
    q, k, v = (t.permute(0, 2, 3, 1).reshape(2 * heads, ch, n) for t in qkv.split(ch, dim=-1))
    h = naive_attention(q, k, v).reshape(2, heads, ch, n).permute(0, 3, 1, 2).reshape(2, n, width)
    torch.testing.assert_close(attn(x), attn.c_proj(h), rtol=1e-4, atol=1e-5)


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0, 1, 999]), 8)
    assert emb.shape == (3, 8) and emb.dtype == torch.float32
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))  # cos first, then sin
    freqs = torch.exp(-math.log(10000) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[2], torch.cat([torch.cos(999 * freqs), torch.sin(999 * freqs)]))
    assert timestep_embedding(torch.tensor([3.5]), 7).shape == (1, 7)


def test_norms_compute_in_float32_and_keep_dtype():
    x = (torch.randn(2, 64, 4, 4) * 1000 + 3000).bfloat16()
    gn = GroupNorm32(32, 64)
    out = gn(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), gn(x.float()), rtol=0, atol=1e-2)
    ln = LayerNorm32(64)
    y = torch.randn(3, 64).bfloat16()
    assert ln(y).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gn(x.float()).dtype == torch.float32  # float in, float out even under autocast


def test_released_widths_keep_adms_32_groups():
    from pipeline.models.nn_blocks import norm_groups

    for channels in (128, 192, 384, 576, 768, 1024, 2048):  # GLIDE/ADM widths
        assert norm_groups(channels) == 32


def test_narrow_layers_keep_several_channels_per_group():
    from pipeline.models.nn_blocks import norm_groups

    for channels in (16, 32, 64, 96, 8, 4, 12):
        groups = norm_groups(channels)
        assert channels % groups == 0 and channels // groups >= 4


def test_norm_does_not_erase_the_per_channel_mean_of_narrow_layers():
    """A group of one channel would normalise each channel's spatial mean away, so the network
    could not see (or predict) the mean colour of x_t: samples then drift to a colour cast."""
    from pipeline.models.nn_blocks import normalization

    torch.manual_seed(0)
    for channels in (16, 32):
        norm = normalization(channels)
        h = torch.randn(2, channels, 8, 8)
        shift = torch.randn(1, channels, 1, 1)  # a different constant per channel
        assert not torch.allclose(norm(h), norm(h + shift), atol=1e-3)
