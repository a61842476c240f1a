"""Safe image intake: limits checked before decoding, EXIF orientation applied, every mode made RGB.

The rules, in order:
1. more than ``max_bytes`` bytes -> :class:`PayloadTooLarge` (413), before anything is parsed;
2. not an image Pillow recognises, or a format outside :data:`FORMATS` -> :class:`UnsupportedMediaType` (415);
3. width x height over ``max_pixels`` (read from the header, nothing allocated) -> 413;
4. truncated or corrupt pixel data -> :class:`InvalidParameter` (422) saying so;
5. EXIF orientation is applied; GIF and other animations keep their first frame;
6. modes become RGB predictably: transparency (RGBA, LA, PA, P with a transparent index) is composited
   over white; 16-bit and 32-bit integer greys (I;16*, I) are scaled from 0-65535 to 0-255; float greys (F)
   are clipped to 0-255; CMYK, YCbCr, LAB, HSV, L and 1 go through Pillow's own conversion.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.core.errors import InvalidParameter, PayloadTooLarge, UnsupportedMediaType

# Pillow format name -> what we tell the user. MPO is how Pillow names JPEGs from some cameras.
FORMATS = {
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "PNG": "PNG",
    "WEBP": "WebP",
    "GIF": "GIF",
    "BMP": "BMP",
    "TIFF": "TIFF",
}
ACCEPTED = "JPEG, PNG, WebP, GIF, BMP or TIFF"
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, orientation applied
    format: str  # one of FORMATS' values


def _human(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 1_000_000 else f"{n} bytes"


def _broken(exc: BaseException, fmt: str = "") -> str:
    kind = "truncated" if "truncat" in str(exc).lower() else "corrupt"
    return f"a {kind} {fmt}".rstrip()


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I: 16-bit range scaled to 8 bits
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, what: str = "file") -> DecodedImage:
    """Decode uploaded bytes into an RGB image, refusing what is too large, not an image or corrupt.

    Args:
        data: the file's bytes.
        max_bytes: largest accepted file.
        max_pixels: largest accepted width x height, checked from the header before decoding.
        what: how to name the input in messages (a file name, say).
    """
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{what} is {_human(len(data))}; the limit is {_human(max_bytes)}.")
    if not data:
        raise UnsupportedMediaType(f"{what} is empty; send a {ACCEPTED} image.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"{what} declares too many pixels ({exc}); the limit is {max_pixels:,}.") from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedMediaType(f"{what} is not an image this server can read; send {ACCEPTED}.") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidParameter(f"{what} is {_broken(exc)} image (in its header): {exc}.") from exc

    fmt = FORMATS.get(image.format or "")
    if fmt is None:
        raise UnsupportedMediaType(f"{what} is a {image.format} image; send {ACCEPTED}.")
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidParameter(f"{what} declares an empty size {width}x{height}.")
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"{what} is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,} pixels."
        )
    try:
        image.seek(0)  # first frame of an animation
        image.load()
        image = ImageOps.exif_transpose(image) or image
        rgb = _to_rgb(image)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise InvalidParameter(f"{what} is {_broken(exc, fmt)} image: {exc}.") from exc
    rgb.load()
    return DecodedImage(image=rgb, format=fmt)


def encode_png(image: Image.Image, compress_level: int = 1) -> bytes:
    """PNG bytes; level 1 because these are sent once and speed matters more than size."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()
