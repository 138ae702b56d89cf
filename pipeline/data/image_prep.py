"""Decoding, validating and resizing one input sample (folder imports, img2dataset shards).

Every sample goes through :func:`prepare_sample`: caption bytes -> clean text, image bytes -> RGB
(any common format and mode, EXIF orientation applied, fully decoded so truncation is caught),
size and aspect checks, centre crop, then the cascade pair: the high-res crop and the base image
downsampled from it by area averaging. A sample that cannot be used raises :class:`SkipSample`
with a short, stable ``reason`` code that the sharding job counts and reports.

A blank crop (every channel near-constant, :func:`is_blank`: a fully transparent PNG becomes
plain white) is flagged in the result, or skipped with ``skip_blank``.

Images are never flipped: captions speak of left and right.

PIL globals are left alone. The decompression-bomb limit is checked here from the header size,
before any pixel is decoded; PIL's own check (``Image.MAX_IMAGE_PIXELS``, raised at twice that
value) still applies on top, so a ``max_pixels`` above about 179 M pixels is capped by PIL's
default. Truncated files are detected because ``ImageFile.LOAD_TRUNCATED_IMAGES`` is off, PIL's
default; if some other code turned it on, decoding refuses to run rather than accept broken files.
"""

from __future__ import annotations

import contextlib
import io
import unicodedata
import warnings
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

# Stable reason codes (the sharding job aggregates skips by these strings).
ZERO_BYTE = "zero-byte file"
CORRUPT = "corrupt image"
TRUNCATED = "truncated image"
BOMB = "decompression bomb"
TOO_SMALL = "image too small"
ASPECT = "aspect ratio"
MISSING_CAPTION = "missing caption"
EMPTY_CAPTION = "empty caption"
UNDECODABLE_CAPTION = "undecodable caption"
BLANK = "blank image"
REASONS = (
    ZERO_BYTE,
    CORRUPT,
    TRUNCATED,
    BOMB,
    TOO_SMALL,
    ASPECT,
    MISSING_CAPTION,
    EMPTY_CAPTION,
    UNDECODABLE_CAPTION,
    BLANK,
)
# An image is blank when the pixel standard deviation of each of its channels (0..255) is below
# this: a plain colour, or nothing but faint compression noise on one.
BLANK_STD = 2.0

PNG_COMPRESS_LEVEL = 3  # fixed, so encode_png is byte-deterministic
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


class SkipSample(Exception):
    """A sample that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)  # args kept so the exception pickles (Ray workers)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        text = f"skipped sample ({self.reason})"
        return f"{text}: {self.detail}" if self.detail else text


def _white_composite(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    out = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    out.alpha_composite(rgba)
    return out.convert("RGB")


def _high_bit_gray_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit ('I;16*') or 32-bit int ('I') grayscale: the 0..65535 range mapped onto 0..255."""
    arr = np.asarray(img).astype(np.float64)
    arr = np.clip(np.rint(np.clip(arr, 0, 65535) / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white, high bit depths are scaled."""
    mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in img.info
    ):
        return _white_composite(img)
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        return _high_bit_gray_to_rgb(img)
    if mode == "F":  # float: [0, 1] if it looks normalised, else 8-bit range
        arr = np.asarray(img, dtype=np.float64)
        if np.nanmax(arr, initial=0.0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if mode == "1":
        return img.convert("L").convert("RGB")
    return img.convert("RGB")  # L, P, CMYK, YCbCr, LAB, HSV, ...


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode an encoded image fully into RGB, EXIF orientation applied.

    Raises SkipSample for empty or undecodable data, truncated files, and images whose header
    declares more than ``max_pixels`` pixels (checked before any pixel is decoded).
    """
    if not data:
        raise SkipSample(ZERO_BYTE, "no bytes")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on (set by some other code): truncated "
            "images would be accepted silently; turn it off before preparing samples"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as exc:
        raise SkipSample(BOMB, str(exc)) from exc
    except Exception as exc:  # UnidentifiedImageError, SyntaxError, OSError, struct.error, ...
        raise SkipSample(CORRUPT, f"{type(exc).__name__}: {exc}") from exc

    width, height = img.size
    if width <= 0 or height <= 0:
        raise SkipSample(CORRUPT, f"header declares size {width}x{height}")
    if width * height > max_pixels:
        raise SkipSample(BOMB, f"{width}x{height} = {width * height} pixels > {max_pixels}")

    try:
        img.load()
    except (OSError, EOFError, SyntaxError, ValueError, zlib.error) as exc:
        text = str(exc).lower()
        if isinstance(exc, EOFError) or "truncated" in text or "end of file" in text:
            raise SkipSample(TRUNCATED, f"{type(exc).__name__}: {exc}") from exc
        raise SkipSample(CORRUPT, f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise SkipSample(CORRUPT, f"{type(exc).__name__}: {exc}") from exc

    with contextlib.suppress(Exception):  # a broken EXIF block: keep the pixels as stored
        img = ImageOps.exif_transpose(img)
    try:
        return to_rgb(img)
    except Exception as exc:
        raise SkipSample(CORRUPT, f"cannot convert mode {img.mode}: {exc}") from exc


def decode_caption(data: bytes | str | None) -> str:
    """UTF-8 caption bytes -> text: BOM stripped, NFC, control and zero-width characters removed,
    whitespace collapsed to single spaces. SkipSample when missing, undecodable or empty."""
    if data is None:
        raise SkipSample(MISSING_CAPTION, "no caption for this image")
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SkipSample(UNDECODABLE_CAPTION, f"not UTF-8: {exc}") from exc
    text = unicodedata.normalize("NFC", text).translate(_ZERO_WIDTH)
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    text = " ".join(text.split())
    if not text:
        raise SkipSample(EMPTY_CAPTION, "caption is empty or whitespace only")
    return text


def center_crop_resize(img: Image.Image, size: int) -> Image.Image:
    """The centred square crop of ``img`` resized to ``size`` x ``size`` (Lanczos). No flips."""
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    if side != width or side != height:  # crop first: no pixel outside the square leaks in
        img = img.crop((left, top, left + side, top + side))
    if side == size:
        return img.copy()
    return img.resize(
        (size, size), Image.Resampling.LANCZOS, reducing_gap=3.0 if side > size else None
    )


def downsample(img: Image.Image, size: int) -> Image.Image:
    """Area-average a square image down to ``size`` (the cascade's low-res input)."""
    if img.size == (size, size):
        return img.copy()
    return img.resize((size, size), Image.Resampling.BOX)


def pixel_std(image: np.ndarray) -> float:
    """The largest per-channel standard deviation of a uint8 image [H, W, C] (0..255 scale)."""
    arr = np.asarray(image, dtype=np.float64)
    return float(arr.reshape(-1, arr.shape[-1]).std(axis=0).max())


def is_blank(image: np.ndarray) -> bool:
    """True when every channel of ``image`` is near-constant (see :data:`BLANK_STD`)."""
    return pixel_std(image) < BLANK_STD


def prepare_sample(
    image_bytes: bytes,
    caption_bytes: bytes | None,
    *,
    base_resolution: int,
    upsample_resolution: int,
    min_image_size: int,
    max_aspect_ratio: float,
    max_image_pixels: int,
    skip_blank: bool,
) -> dict[str, Any]:
    """Validate and resize one sample into the cascade pair.

    Returns ``{"base": uint8 [base, base, 3], "hires": uint8 [up, up, 3], "caption": str,
    "source_size": [w, h], "blank": bool}`` (the size after EXIF orientation; ``blank``: the
    high-res crop is a plain colour, :func:`is_blank`). ``base`` is ``hires`` area-averaged
    down, so the pair is consistent. Raises SkipSample, for a blank crop too with ``skip_blank``.
    """
    if not 0 < base_resolution <= upsample_resolution:
        raise ValueError("need 0 < base_resolution <= upsample_resolution")
    caption = decode_caption(caption_bytes)
    img = decode_image(image_bytes, max_image_pixels)
    width, height = img.size
    short, long = min(width, height), max(width, height)
    if short < min_image_size:
        raise SkipSample(TOO_SMALL, f"{width}x{height}: shorter side < {min_image_size}")
    if long / short > max_aspect_ratio:
        raise SkipSample(ASPECT, f"{width}x{height}: {long / short:.2f} > {max_aspect_ratio}")
    hires_img = center_crop_resize(img, upsample_resolution)
    hires = np.asarray(hires_img, dtype=np.uint8).copy()
    blank = is_blank(hires)
    if blank and skip_blank:
        raise SkipSample(BLANK, f"pixel std {pixel_std(hires):.2f} < {BLANK_STD} (plain colour)")
    base = downsample(hires_img, base_resolution)
    return {
        "base": np.asarray(base, dtype=np.uint8).copy(),
        "hires": hires,
        "caption": caption,
        "source_size": [int(width), int(height)],
        "blank": blank,
    }


def encode_png(image: np.ndarray | Image.Image) -> bytes:
    """Deterministic PNG bytes: no metadata, fixed compression; same input -> same bytes.

    Accepts a PIL image or a uint8 array [H, W], [H, W, 1], [H, W, 3] or [H, W, 4].
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 data, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"encode_png needs [H, W], [H, W, 1|3|4], got shape {arr.shape}")
    fresh = Image.fromarray(np.ascontiguousarray(arr))  # no info / ICC / EXIF carried over
    buf = io.BytesIO()
    fresh.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return buf.getvalue()


def decode_png(data: bytes, mode: str = "RGB") -> np.ndarray:
    """PNG bytes -> uint8 array [H, W, C] (C = 3 for the default mode RGB)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        if img.mode != mode:
            img = img.convert(mode)
        arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr.copy()
