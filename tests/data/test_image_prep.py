"""Decoding, validation and resizing of one input sample, with images built in memory."""

from __future__ import annotations

import io
import pickle
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from pipeline.data.image_prep import (
    SkipSample,
    center_crop_resize,
    decode_caption,
    decode_image,
    decode_png,
    encode_png,
    prepare_sample,
    to_rgb,
)

BIG = 10**8


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def skip_reason(fn, *args, **kwargs) -> str:
    with pytest.raises(SkipSample) as info:
        fn(*args, **kwargs)
    return info.value.reason


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header claiming a size, followed by a few bytes of pixel data only."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# ---- modes and formats -------------------------------------------------------------------


def test_rgb_jpeg():
    out = decode_image(encode(Image.new("RGB", (100, 80), (200, 50, 30)), "JPEG"), BIG)
    assert out.mode == "RGB" and out.size == (100, 80)
    assert np.abs(np.asarray(out, dtype=int) - (200, 50, 30)).max() <= 4


def test_rgba_png_is_composited_on_white():
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[0, 0] = (255, 0, 0, 128)  # half-transparent red
    arr[1, 1] = (0, 0, 255, 255)  # opaque blue; the rest fully transparent black
    out = np.asarray(decode_image(encode(Image.fromarray(arr), "PNG"), BIG), dtype=int)
    assert np.abs(out[0, 0] - (255, 127, 127)).max() <= 1
    assert tuple(out[1, 1]) == (0, 0, 255)
    assert tuple(out[3, 3]) == (255, 255, 255)


def test_la_png_is_composited_on_white():
    img = Image.new("LA", (3, 3), (0, 0))
    img.putpixel((1, 1), (40, 255))
    out = np.asarray(decode_image(encode(img, "PNG"), BIG))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[1, 1]) == (40, 40, 40)


def test_palette_png_with_transparency():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((2, 2), 1)
    out = np.asarray(decode_image(encode(img, "PNG", transparency=0), BIG))
    assert tuple(out[0, 0]) == (255, 255, 255)  # index 0 is transparent -> white
    assert tuple(out[2, 2]) == (255, 0, 0)


def test_rgb_png_with_transparent_colour_key():
    img = Image.new("RGB", (3, 3), (0, 0, 0))
    img.putpixel((0, 0), (10, 200, 30))
    out = np.asarray(decode_image(encode(img, "PNG", transparency=(0, 0, 0)), BIG))
    assert tuple(out[1, 1]) == (255, 255, 255) and tuple(out[0, 0]) == (10, 200, 30)


def test_grayscale_l():
    out = np.asarray(decode_image(encode(Image.new("L", (5, 5), 77), "PNG"), BIG))
    assert out.shape == (5, 5, 3) and (out == 77).all()


def test_one_bit():
    img = Image.new("1", (8, 8), 0)
    img.putpixel((3, 4), 1)
    out = np.asarray(decode_image(encode(img, "PNG"), BIG))
    assert tuple(out[4, 3]) == (255, 255, 255) and tuple(out[0, 0]) == (0, 0, 0)


def test_16bit_grayscale_png_is_scaled_to_8_bits():
    values = np.array([[0, 257 * 100, 65535, 1000, 32896, 65000]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(decode_image(data, BIG))[0, :, 0]
    assert out.tolist() == [0, 100, 255, 4, 128, 253]


def test_32bit_int_mode_i_is_scaled_like_16_bits():
    img = Image.fromarray(np.array([[0, 65535, 25700, 70000, -5]], dtype=np.int32))
    assert img.mode == "I"
    assert np.asarray(to_rgb(img))[0, :, 0].tolist() == [0, 255, 100, 255, 0]


def test_cmyk_jpeg():
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    out = np.asarray(decode_image(data, BIG), dtype=int)
    r, g, b = out[8, 8]
    assert r > 220 and g < 40 and b < 40  # cyan 0, magenta + yellow full: red


def test_webp_lossless():
    img = noise(20, 12)
    out = decode_image(encode(img, "WEBP", lossless=True), BIG)
    assert np.array_equal(np.asarray(out), np.asarray(img))


def test_exif_orientation_is_applied():
    arr = np.zeros((40, 60, 3), dtype=np.uint8)
    arr[:, :30] = (255, 0, 0)  # stored: left half red, right half blue
    arr[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    data = encode(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95)
    out = np.asarray(decode_image(data, BIG), dtype=int)
    assert out.shape == (60, 40, 3)
    assert out[5, 20, 0] > 200 and out[5, 20, 2] < 50  # top is red
    assert out[55, 20, 2] > 200 and out[55, 20, 0] < 50  # bottom is blue


# ---- bad images ------------------------------------------------------------------------------


def test_zero_bytes():
    assert skip_reason(decode_image, b"", BIG) == "zero-byte file"


def test_garbage_bytes():
    assert skip_reason(decode_image, b"this is not an image at all" * 20, BIG) == "corrupt image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(fmt):
    data = encode(noise(64, 48), fmt)
    assert skip_reason(decode_image, data[: len(data) * 2 // 3], BIG) == "truncated image"


def test_header_claiming_huge_size_is_a_bomb_before_decoding():
    # The file is a real PNG header with almost no pixel data: decoding it would fail as
    # truncated, so the "decompression bomb" reason shows the size was checked first.
    assert skip_reason(decode_image, png_header_only(300, 200), BIG) == "truncated image"
    assert skip_reason(decode_image, png_header_only(100_000, 100_000), BIG) == (
        "decompression bomb"
    )
    # Between our limit and PIL's: our check fires on the header (no pixel data follows).
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not escape
        reason = skip_reason(decode_image, png_header_only(10_000, 10_000), 10**6)
    assert reason == "decompression bomb"


def test_real_image_over_max_pixels():
    data = encode(noise(100, 100), "PNG")
    assert skip_reason(decode_image, data, 9_999) == "decompression bomb"
    assert decode_image(data, 10_000).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # the global is left alone


def test_load_truncated_images_on_is_refused(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(encode(noise(8, 8), "PNG"), BIG)


# ---- captions --------------------------------------------------------------------------------


def test_caption_cleaning():
    raw = "\ufeff  a   red\n\tcircle\u200b \x00 on  the left \r\n".encode()
    assert decode_caption(raw) == "a red circle on the left"
    assert decode_caption("café au lait".encode()) == "café au lait"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "missing caption"),
        (b"", "empty caption"),
        (" \n\t\u3000\xa0 ".encode(), "empty caption"),
        (b"\xff\xfe bad \xc3", "undecodable caption"),
    ],
)
def test_bad_captions(data, reason):
    assert skip_reason(decode_caption, data) == reason


def test_skip_sample_pickles_and_reads_well():
    err = pickle.loads(pickle.dumps(SkipSample("corrupt image", "bad header")))
    assert err.reason == "corrupt image" and err.detail == "bad header"
    assert "corrupt image" in str(err) and "bad header" in str(err)


# ---- prepare_sample --------------------------------------------------------------------------

PREP = {
    "base_resolution": 16,
    "upsample_resolution": 64,
    "min_image_size": 32,
    "max_aspect_ratio": 2.0,
    "max_image_pixels": BIG,
    "skip_blank": False,
}


def test_prepare_sample_shapes_and_consistent_cascade_pair():
    out = prepare_sample(encode(noise(120, 90), "PNG"), b"a noisy picture", **PREP)
    assert out["caption"] == "a noisy picture" and out["source_size"] == [120, 90]
    assert out["hires"].shape == (64, 64, 3) and out["hires"].dtype == np.uint8
    assert out["base"].shape == (16, 16, 3) and out["base"].dtype == np.uint8
    pooled = out["hires"].astype(np.float64).reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
    assert np.abs(pooled - out["base"]).max() <= 1.0


def test_prepare_sample_never_flips_and_crops_the_centre():
    arr = np.zeros((90, 180, 3), dtype=np.uint8)
    arr[:, :45] = (0, 255, 0)  # outer quarters green: cropped away
    arr[:, 135:] = (0, 255, 0)
    arr[:, 45:90] = (255, 0, 0)  # centre square: left half red, right half blue
    arr[:, 90:135] = (0, 0, 255)
    out = prepare_sample(encode(Image.fromarray(arr), "PNG"), b"x", **PREP)["hires"]
    assert out[:, :2, 1].max() < 20 and out[:, -2:, 1].max() < 20  # no green at the borders
    assert (out[:, :28] == (255, 0, 0)).all() and (out[:, 36:] == (0, 0, 255)).all()


def test_center_crop_resize_keeps_an_exact_square_when_sizes_match():
    img = noise(50, 30)
    out = center_crop_resize(img, 30)
    assert np.array_equal(np.asarray(out), np.asarray(img)[:, 10:40])


def test_too_small_and_aspect_ratio():
    small = encode(noise(40, 31), "PNG")
    assert skip_reason(prepare_sample, small, b"x", **PREP) == "image too small"
    wide = encode(noise(130, 64), "PNG")
    assert skip_reason(prepare_sample, wide, b"x", **PREP) == "aspect ratio"
    ok = encode(noise(128, 64), "PNG")  # exactly the limit
    assert prepare_sample(ok, b"x", **PREP)["source_size"] == [128, 64]


def test_blank_images_are_flagged_or_skipped():
    """A fully transparent PNG becomes plain white: flagged, or skipped with skip_blank."""
    clear = Image.new("RGBA", (80, 64), (200, 30, 30, 0))
    out = prepare_sample(encode(clear, "PNG"), b"a logo", **PREP)
    assert out["blank"] and (out["hires"] == 255).all()
    skipping = {**PREP, "skip_blank": True}
    assert skip_reason(prepare_sample, encode(clear, "PNG"), b"x", **skipping) == "blank image"
    flat_red = encode(Image.new("RGB", (64, 64), (255, 0, 0)), "JPEG", quality=90)
    assert prepare_sample(flat_red, b"x", **PREP)["blank"]  # one colour, compression noise
    speck = np.full((64, 64, 3), 255, dtype=np.uint8)
    speck[30:34, 30:34] = 0  # a small black mark on white is content
    assert not prepare_sample(encode(Image.fromarray(speck), "PNG"), b"x", **PREP)["blank"]
    assert not prepare_sample(encode(noise(64, 64), "PNG"), b"x", **PREP)["blank"]


def test_prepare_sample_reports_caption_and_image_problems():
    good = encode(noise(64, 64), "PNG")
    assert skip_reason(prepare_sample, good, None, **PREP) == "missing caption"
    assert skip_reason(prepare_sample, good, b"  ", **PREP) == "empty caption"
    assert skip_reason(prepare_sample, b"", b"x", **PREP) == "zero-byte file"


# ---- PNG encoding ----------------------------------------------------------------------------


def _chunk_types(data: bytes) -> list[bytes]:
    types, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        types.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return types


def test_encode_png_is_deterministic_and_round_trips():
    arr = np.asarray(noise(33, 21, seed=4))
    data = encode_png(arr)
    assert data == encode_png(arr.copy())
    img = Image.fromarray(arr)
    img.info["icc_profile"] = b"not really a profile"
    img.info["dpi"] = (300, 300)
    assert encode_png(img) == data  # image metadata is not written
    assert _chunk_types(data) == [b"IHDR", b"IDAT", b"IEND"]
    back = decode_png(data)
    assert back.dtype == np.uint8 and back.shape == (21, 33, 3)
    assert np.array_equal(back, arr)


def test_encode_png_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), dtype=np.float32))
