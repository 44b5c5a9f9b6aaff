"""Safe, fast decoding of encoded image bytes: the one way mmsieve's models and filters get pixels.

`decode_image` turns encoded bytes into an RGB `PIL.Image` of the size a model wants, or into a
reason code from `mmsieve.reasons` with a precise detail: it never raises on bad data. JPEGs are
decoded at a reduced scale by libjpeg (draft mode) when only a small image is needed, EXIF
orientation is applied, every Pillow mode ends as RGB (alpha composited on a background, 16-bit
scaled to 8-bit), and the pixel count is checked from the header before any pixel is decoded.
`probe_image` reads the size and checks the data without keeping pixels; `DecodePool` decodes on
threads (Pillow releases the GIL while decoding) and prefetches batches in the background.

Example:
    >>> from io import BytesIO
    >>> buf = BytesIO()
    >>> Image.new("RGB", (640, 480), "red").save(buf, "JPEG")
    >>> decoded = decode_image(buf.getvalue(), 224)
    >>> decoded.ok, decoded.image.size, (decoded.width, decoded.height), decoded.format
    (True, (224, 224), (640, 480), 'JPEG')
    >>> decode_image(b"not an image").reason
    'image_unidentified'
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from typing import Any, Literal, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmsieve import reasons


DEFAULT_MAX_PIXELS: int = 89_478_485  # Pillow's default decompression-bomb threshold
DEFAULT_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

Resize = Literal["exact", "shortest", "longest"]
T = TypeVar("T")
U = TypeVar("U")

_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transposition that shows the image upright (as `ImageOps.exif_transpose`).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = {5, 6, 7, 8}
_END: Any = object()  # marks an exhausted iterator
_HIGH_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"BM": "BMP",
}


@dataclass
class DecodedImage:
    """The outcome of decoding or probing one image.

    Args:
        image: the RGB image, resized as requested; None on failure or when only probing.
        reason: a reason code from `mmsieve.reasons` on failure, else None.
        detail: a precise human-readable explanation of `reason`.
        width: the original width after EXIF orientation (None when the header could not be read).
        height: the original height after EXIF orientation.
        format: Pillow's format name ("JPEG", "PNG", ...).

    Example:
        >>> DecodedImage(reason="image_empty", detail="the image bytes are empty").ok
        False
    """

    image: Image.Image | None = None
    reason: str | None = None
    detail: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None

    @property
    def ok(self) -> bool:
        """True when the image decoded (or, for a probe, its header and data checked out)."""
        return self.reason is None


class _Refused(Exception):
    """A failure this module diagnosed itself, carrying its reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def decode_image(
    data: bytes | None,
    size: int | tuple[int, int] | None = None,
    *,
    resize: Resize = "exact",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    draft: bool = True,
    resample: Image.Resampling = Image.Resampling.BICUBIC,
) -> DecodedImage:
    """Decode encoded image bytes to an upright RGB image, or to a reason code; never raises on bad data.

    Args:
        data: the encoded file bytes (None gives `image_missing`).
        size: None for full resolution; else the target, read according to `resize`.
        resize: "exact" squashes to `size` (an int s means s x s, or a (width, height) tuple);
            "shortest" scales so the shorter side is exactly `size` (an int), keeping the aspect ratio;
            "longest" scales so the longer side is exactly `size` (an int). All three up- or downscale.
        max_pixels: refuse (`image_too_many_pixels`) an image whose header declares more pixels than
            this, before decoding any pixel; a resize whose output would exceed it is refused too.
        background: the colour transparent pixels are composited on.
        draft: let libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale when the result still covers the
            target size, then resize once (much faster; the output differs from a full decode by a
            few grey levels at most).
        resample: the Pillow filter of the final resize.

    Raises:
        ValueError: only for an invalid `size` / `resize` request, never for bad data.

    Example:
        >>> from io import BytesIO
        >>> buf = BytesIO()
        >>> Image.new("RGB", (640, 480)).save(buf, "PNG")
        >>> decode_image(buf.getvalue(), 224, resize="shortest").image.size
        (299, 224)
        >>> decode_image(buf.getvalue(), max_pixels=1000).detail
        'PNG declares 640x480 = 307200 pixels > 1000'
    """
    _check_request(size, resize)
    out = DecodedImage()
    try:
        im, orientation = _open_checked(data, max_pixels, out)
        target = None if size is None else _target_size(out.width, out.height, size, resize, max_pixels)
        stored = target if target is None or orientation not in _SWAPS_AXES else (target[1], target[0])
        if draft and stored is not None:
            im.draft("RGB", stored)  # JPEG: decode at the smallest DCT scale still >= stored; a no-op elsewhere
        im.load()
        rgb = _to_rgb(im, background)
        if stored is not None and rgb.size != stored:
            rgb = rgb.resize(stored, resample)
        out.image = rgb.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else rgb
    except Exception as e:  # every failure, expected or not, becomes a reason code
        out.reason, out.detail = _diagnose(data, e)
    return out


def probe_image(data: bytes | None, *, max_pixels: int = DEFAULT_MAX_PIXELS, verify: bool = True) -> DecodedImage:
    """Read an image's size and format (after EXIF orientation) without keeping its pixels.

    With `verify`, the data is decoded too, cheaply (a JPEG at 1/8 scale: libjpeg still reads the
    whole stream), so a truncated or corrupt file gets its reason code; without it only the header
    is read.

    Example:
        >>> from io import BytesIO
        >>> buf = BytesIO()
        >>> Image.new("RGB", (640, 480)).save(buf, "JPEG")
        >>> probe = probe_image(buf.getvalue())
        >>> probe.ok, probe.width, probe.height, probe.image
        (True, 640, 480, None)
        >>> probe_image(buf.getvalue()[:2000]).reason
        'image_truncated'
    """
    out = DecodedImage()
    try:
        im, _ = _open_checked(data, max_pixels, out)
        if verify:
            im.draft("L", (64, 64))
            im.load()
    except Exception as e:
        out.reason, out.detail = _diagnose(data, e)
    return out


def _check_request(size: int | tuple[int, int] | None, resize: str) -> None:
    if resize not in ("exact", "shortest", "longest"):
        raise ValueError(f"resize must be 'exact', 'shortest' or 'longest', got {resize!r}")
    if size is None:
        return
    if resize != "exact" and not isinstance(size, int):
        raise ValueError(f"resize={resize!r} needs an int size, got {size!r}")
    sides = (size, size) if isinstance(size, int) else size
    if not isinstance(sides, tuple | list) or len(sides) != 2 or not all(isinstance(s, int) and s >= 1 for s in sides):
        raise ValueError(f"size must be a positive int or a (width, height) tuple of them, got {size!r}")


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(BytesIO(data))
    except Image.DecompressionBombWarning:
        # Raised only when warnings are errors in this process; max_pixels is checked by the caller.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(BytesIO(data))


def _open_checked(data: bytes | None, max_pixels: int, out: DecodedImage) -> tuple[Image.Image, int]:
    """Open the image lazily, fill `out`'s format and oriented size, refuse a bomb; returns the EXIF orientation."""
    if data is None:
        raise _Refused(reasons.IMAGE_MISSING, "no image bytes (None)")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _Refused(reasons.IMAGE_UNIDENTIFIED, f"expected encoded image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise _Refused(reasons.IMAGE_EMPTY, "the image bytes are empty (0 bytes)")
    im = _open(data)
    out.format = im.format
    w, h = im.size
    orientation = _orientation(im)
    out.width, out.height = (h, w) if orientation in _SWAPS_AXES else (w, h)
    if w <= 0 or h <= 0:
        raise _Refused(reasons.IMAGE_CORRUPT, f"{im.format} declares an empty {w}x{h} image")
    if w * h > max_pixels:
        raise _Refused(reasons.IMAGE_TOO_MANY_PIXELS, f"{im.format} declares {w}x{h} = {w * h} pixels > {max_pixels}")
    return im, orientation


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8), 1 when absent or unreadable.

    A PNG's eXIf chunk counts only when it precedes the pixel data: finding a later one would decode the image.
    """
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        return value if value in _TRANSPOSE else 1
    except Exception:  # malformed EXIF must not fail an otherwise good image
        return 1


def _target_size(w: int, h: int, size: int | tuple[int, int], resize: str, max_pixels: int) -> tuple[int, int]:
    if resize == "exact":
        tw, th = (size, size) if isinstance(size, int) else size
    else:
        side = min(w, h) if resize == "shortest" else max(w, h)
        tw, th = max(1, round(w * size / side)), max(1, round(h * size / side))
    if tw * th > max_pixels:
        detail = f"resizing {w}x{h} to {tw}x{th} ({resize}) gives {tw * th} pixels > {max_pixels}"
        raise _Refused(reasons.IMAGE_TOO_MANY_PIXELS, detail)
    return tw, th


def _to_rgb(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any mode as RGB: alpha and palette transparency composited on `background`, high bit depths scaled to 8 bits."""
    if im.mode in _HIGH_DEPTH_MODES:
        values = np.asarray(im)
        gray = Image.fromarray(_to_uint8(values))
        transparent = im.info.get("transparency")
        if isinstance(transparent, int):  # a 16-bit grey PNG's tRNS chunk: one transparent grey value
            gray.putalpha(Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8)))
        im = gray
    if im.mode == "La":  # premultiplied alpha: Pillow converts it only to LA
        im = im.convert("LA")
    if not im.has_transparency_data:  # no alpha band, no palette alpha, no tRNS colour key
        return im if im.mode == "RGB" else im.convert("RGB")
    rgba = im.convert("RGBA")
    out = Image.new("RGB", im.size, background)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """One band of 16/32-bit integers or floats as 8 bits, keeping its tones.

    16-bit data maps 0..65535 to 0..255; floats within 0..1 are scaled by 255; other values already in
    0..255 are kept; anything else is stretched linearly from its minimum to its maximum.
    """
    floats = np.nan_to_num(values.astype(np.float32))
    lo, hi = (float(floats.min()), float(floats.max())) if floats.size else (0.0, 0.0)
    sixteen_bit = values.dtype.kind == "u" and values.dtype.itemsize == 2
    if sixteen_bit or (values.dtype.kind in "iu" and lo >= 0 and 255 < hi <= 65535):
        floats = floats / 257
    elif values.dtype.kind == "f" and lo >= 0 and hi <= 1:
        floats = floats * 255
    elif lo < 0 or hi > 255:
        floats = (floats - lo) * (255 / ((hi - lo) or 1.0))
    return np.clip(np.rint(floats), 0, 255).astype(np.uint8)


def _signature(data: bytes) -> str | None:
    """The format named by the file's first bytes, for the formats Pillow reads most often."""
    head = bytes(data[:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES.items() if head.startswith(magic)), None)


def _is_cut_short(data: bytes, fmt: str | None) -> bool:
    """Whether a file of a known format lacks its end marker or declared length (a truncated download)."""
    tail = bytes(data[-32:]).rstrip(b"\x00")
    if fmt == "JPEG":
        return not tail.endswith(b"\xff\xd9")
    if fmt == "PNG":
        return b"IEND" not in tail
    if fmt == "GIF":
        return not tail.endswith(b";")
    if fmt == "WEBP":
        return len(data) < 8 + int.from_bytes(bytes(data[4:8]), "little")
    if fmt == "BMP":
        return len(data) < int.from_bytes(bytes(data[2:6]), "little")
    return False


def _diagnose(data: Any, exc: Exception) -> tuple[str, str]:
    """The reason code and detail for an exception raised while opening or decoding `data`."""
    if isinstance(exc, _Refused):
        return exc.reason, str(exc)
    fmt = _signature(data)
    name = fmt or "image"
    if isinstance(exc, Image.DecompressionBombError):
        return reasons.IMAGE_TOO_MANY_PIXELS, f"{name} is over Pillow's hard limit: {exc}"
    unidentified = isinstance(exc, UnidentifiedImageError)
    if unidentified and fmt is None:
        return reasons.IMAGE_UNIDENTIFIED, f"not a known image format ({len(data)} bytes starting {bytes(data[:8])!r})"
    error = "Pillow cannot read its header" if unidentified else f"{type(exc).__name__}: {exc}"
    if _is_cut_short(data, fmt) or "truncated" in str(exc).lower() or isinstance(exc, EOFError):
        return reasons.IMAGE_TRUNCATED, f"{name} of {len(data)} bytes ends before its data does ({error})"
    return reasons.IMAGE_CORRUPT, f"{name} of {len(data)} bytes failed to decode ({error})"


class DecodePool:
    """Decode many images on threads, and prefetch batches in the background.

    Pillow releases the GIL while decoding and resizing, so threads use several cores. The thread
    pool is created on first use and dropped when pickled, so a step holding a pool can be sent to
    datatrove workers.

    Args:
        workers: decoding threads; default min(8, os.cpu_count()).

    Example:
        >>> with DecodePool(2) as pool:
        ...     [d.reason for d in pool.decode_many([None, b""])]
        ['image_missing', 'image_empty']
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="mmsieve-decode")
            return self._executor

    def decode_many(self, datas: Iterable[bytes | None], **decode_kwargs: Any) -> list[DecodedImage]:
        """`decode_image` on every item, in parallel; results in input order.

        Example:
            >>> DecodePool(2).decode_many([b"junk"], size=224)[0].reason
            'image_unidentified'
        """
        return list(self._pool().map(partial(decode_image, **decode_kwargs), datas))

    def probe_many(self, datas: Iterable[bytes | None], **probe_kwargs: Any) -> list[DecodedImage]:
        """`probe_image` on every item, in parallel; results in input order.

        Example:
            >>> DecodePool(2).probe_many([None], verify=False)[0].reason
            'image_missing'
        """
        return list(self._pool().map(partial(probe_image, **probe_kwargs), datas))

    def prefetch(self, batches: Iterable[T], fn: Callable[[T], U], depth: int = 2) -> Iterator[tuple[T, U]]:
        """Yield `(batch, fn(batch))` in input order, running `fn` on the next `depth` batches meanwhile.

        `batches` is pulled lazily (at most `depth` batches beyond the one yielded); an exception of
        `fn` is raised when its batch's turn comes. `fn` runs on threads of its own, so it may call
        `decode_many` of this pool.

        Example:
            >>> pool = DecodePool(2)
            >>> [(b, n) for b, n in pool.prefetch([[b"x"], [None, None]], len)]
            [([b'x'], 1), ([None, None], 2)]
        """
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")

        def run() -> Iterator[tuple[T, U]]:
            iterator = iter(batches)
            pending: deque[tuple[T, Future[U]]] = deque()
            background = ThreadPoolExecutor(max(1, depth), thread_name_prefix="mmsieve-prefetch")
            try:
                while True:
                    while len(pending) <= depth and (batch := next(iterator, _END)) is not _END:
                        pending.append((batch, background.submit(fn, batch)))
                    if not pending:
                        return
                    batch, future = pending.popleft()
                    yield batch, future.result()
            finally:
                background.shutdown(wait=True, cancel_futures=True)

        return run()

    def close(self) -> None:
        """Stop the decoding threads; the pool starts new ones if used again."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"workers": self.workers}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["workers"])
