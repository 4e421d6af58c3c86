"""Untrusted image bytes to the uint8 tensor a backbone reads, with every limit checked first.

Order of checks, cheapest first, so a hostile request costs as little as possible:

1. the body is not empty and not over :attr:`ImageLimits.max_bytes` (checked while it streams in);
2. Pillow identifies the format from the header alone, among :data:`ALLOWED_FORMATS` only (a
   known but refused format such as TIFF is named in the error);
3. width x height from the header is at most :attr:`ImageLimits.max_pixels`, each side at most
   :attr:`ImageLimits.max_side` and the longer side at most :attr:`ImageLimits.max_aspect` times
   the shorter, before any pixel is decoded (decompression bombs; a 1 x 16,000,000 PNG of 31 KB
   once took 45 s and 6.4 GB to resize);
4. the first frame is decoded; a truncated or corrupt file is a client error.

Every failure is an :class:`ImageError` carrying its HTTP status (4xx) and a short code.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from autopetl.tasks.data import resize_uint8

# Formats Pillow may decode here: common web formats with mature decoders. Everything else
# (TIFF, PSD, EPS, ICO, JPEG 2000, ...) is refused: fewer decoders, less attack surface.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
# Content types accepted for a raw body; the bytes decide the real format, this is a first filter.
ALLOWED_CONTENT_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/jpg",
        "image/webp",
        "image/gif",
        "image/bmp",
        "image/x-ms-bmp",
    }
)


class ImageError(Exception):
    """A client's image (or request) was refused: ``status`` is the 4xx to answer."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class ImageLimits:
    """What one request may send.

    Attributes:
        max_bytes: Largest request body (the image, or the whole multipart form).
        max_pixels: Largest width x height, read from the header before decoding.
        max_side: Largest width or height.
        max_aspect: Largest ratio of the longer side to the shorter.
    """

    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_side: int = 8192
    max_aspect: float = 16.0


def _format_name(data: bytes) -> str | None:
    """The format Pillow would read, trying every plugin but decoding nothing (for the message)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format
    except Exception:  # not an image at all
        return None


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode the first frame of an allowed image as RGB, enforcing the limits.

    Transparent images are composed on black (the background of dSprites and of most padding).

    Raises:
        ImageError: Empty, too large, not an image, a refused format, too many pixels, truncated.
    """
    if not data:
        raise ImageError(400, "empty_body", "the request has no image: send the image bytes")
    if len(data) > limits.max_bytes:
        raise ImageError(
            413, "body_too_large", f"the image is larger than {limits.max_bytes} bytes"
        )
    buf = io.BytesIO(data)
    try:
        img = Image.open(buf, formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        other = _format_name(data)
        if other is not None:
            raise ImageError(
                415,
                "unsupported_format",
                f"{other} images are not accepted; send {', '.join(ALLOWED_FORMATS)}",
            ) from None
        raise ImageError(
            400, "invalid_image", "the body is not a readable image (PNG, JPEG, WebP, GIF, BMP)"
        ) from None
    except Image.DecompressionBombError as exc:  # Pillow's own check, at twice its global limit
        raise ImageError(413, "too_many_pixels", str(exc)) from None
    except Exception as exc:  # any other header a decoder rejects is the client's bad file
        raise ImageError(400, "invalid_image", f"cannot read the image header: {exc}") from None
    with img:
        width, height = img.size
        if width < 1 or height < 1:
            raise ImageError(400, "invalid_image", f"the image is {width}x{height} pixels")
        if width * height > limits.max_pixels:
            raise ImageError(
                413,
                "too_many_pixels",
                f"the image is {width}x{height} = {width * height} pixels; "
                f"at most {limits.max_pixels} are accepted",
            )
        if max(width, height) > limits.max_side:
            raise ImageError(
                413,
                "side_too_long",
                f"the image is {width}x{height} pixels; each side may be at most {limits.max_side}",
            )
        if max(width, height) > limits.max_aspect * min(width, height):
            raise ImageError(
                400,
                "bad_aspect_ratio",
                f"the image is {width}x{height} pixels; the longer side may be at most "
                f"{limits.max_aspect:g} times the shorter (crop it first)",
            )
        try:
            with warnings.catch_warnings():
                # Pillow's own bomb check warns between 1x and 2x its limit: make it an error too.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.load()
                rgb = _to_rgb(img)
        except ImageError:
            raise
        except Exception as exc:  # truncated, corrupt, or a bomb Pillow caught while decoding
            raise ImageError(
                400, "invalid_image", f"cannot decode the {img.format} image: {exc}"
            ) from None
    return rgb


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit and float greyscale: scale to 8 bits rather than clip at 255.
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.size and arr.max() > 255 else 255.0
        grey = np.clip(arr / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return img.convert("RGB")


def to_tensor(img: Image.Image, img_size: int) -> torch.Tensor:
    """RGB image to uint8 [3, S, S]: the same antialiased resize as the task data (squashing).

    Very large images are first shrunk by an integer box filter, each side on its own, to at
    least twice the target size, which bounds the float buffer of the final resize (one factor
    from the shorter side skipped the filter for long thin images); images of at most 4x the
    target side go through exactly the training data's :func:`~autopetl.tasks.data.resize_uint8`.
    """
    if max(img.size) > 4 * img_size:
        width, height = img.size
        factors = (max(1, width // (2 * img_size)), max(1, height // (2 * img_size)))
        if max(factors) >= 2:
            img = img.reduce(factors)
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
    return resize_uint8(arr.unsqueeze(0), img_size)[0].contiguous()


def preprocess(data: bytes, img_size: int, limits: ImageLimits | None = None) -> torch.Tensor:
    """Untrusted bytes to the uint8 [3, S, S] tensor a backbone of input side ``img_size`` reads."""
    return to_tensor(decode_image(data, limits or ImageLimits()), img_size)
