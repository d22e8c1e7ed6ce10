"""Turn any supported image input into an upright 8-bit RGB PIL image, or raise a clear :class:`ImageError`.

Accepted inputs: PIL images, file paths (``str`` / ``os.PathLike``), HWC ``uint8`` numpy arrays (1, 3 or 4
channels) and CHW ``uint8`` torch tensors. EXIF orientation is applied. Modes are converted as follows:

* ``RGB``: as is. ``L``, ``1``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: PIL's own conversion to RGB.
* ``RGBA``, ``LA``, ``P``/``PA`` with transparency: alpha-composited on **white** (the same as transformers'
  ``convert_to_rgb``), then RGB.
* ``I;16`` / ``I;16B`` / ``I;16L`` / ``I`` (16-bit grey): scaled to 8 bits by ``value >> 8`` (PIL's own conversion
  clips instead, turning most 16-bit images white).
* Anything else (``F``, multi-band TIFFs, ...) raises :class:`ImageError`.
"""

from __future__ import annotations

import os
import stat
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

#: Default decompression-bomb limit in pixels (about 16k x 16k), configurable per strategy.
DEFAULT_MAX_PIXELS = 268_435_456

_PIL_TO_RGB = {"RGB", "L", "1", "CMYK", "YCbCr", "LAB", "HSV"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_ORIENTATION = 0x0112
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_NOT_REGULAR = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISSOCK, "a socket"),
)
#: Serialises the brief raise of PIL's global bomb limit (see :func:`_pil_open`).
_PIL_LIMIT_LOCK = threading.Lock()


class ImageError(ValueError):
    """An image could not be used: it names the input and the reason."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


@dataclass(frozen=True)
class LoadedImage:
    """An RGB image ready for preprocessing, plus where it came from (for error messages)."""

    image: Image.Image
    source: str


def describe(obj: Any) -> str:
    """A short, human-readable name for an image input, used in error messages."""
    if isinstance(obj, (str, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, Image.Image):
        name = getattr(obj, "filename", "") or ""
        return name or f"<PIL.Image mode={obj.mode} size={obj.size[0]}x{obj.size[1]}>"
    shape = getattr(obj, "shape", None)
    if shape is not None:
        return f"<{type(obj).__module__}.{type(obj).__name__} shape={tuple(shape)} dtype={getattr(obj, 'dtype', '?')}>"
    return f"<{type(obj).__name__}>"


def open_image(
    obj: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: tuple[int, int] | None = None
) -> LoadedImage:
    """Load, orient and convert ``obj`` to RGB.

    ``draft_size`` (``(width, height)``) lets JPEG files decode at a reduced scale that is still at least that large
    (the opt-in fast mode); the caller must compute geometry from the original size (see :func:`peek_size`).
    """
    source = describe(obj)
    if isinstance(obj, (str, os.PathLike)):
        image = _open_path(os.fspath(obj), source, max_pixels, draft_size)
    elif isinstance(obj, Image.Image):
        image = obj
        _check_size(image.size[0], image.size[1], source, max_pixels)
        _load(image, source)
    elif isinstance(obj, np.ndarray):
        image = _from_hwc_array(obj, source, max_pixels)
    elif _is_torch_tensor(obj):
        image = _from_chw_tensor(obj, source, max_pixels)
    else:
        raise ImageError(
            source,
            f"unsupported input type {type(obj).__name__}; pass a PIL image, a path, "
            "an HWC uint8 numpy array or a CHW uint8 torch tensor",
        )
    try:
        if image.getexif().get(_ORIENTATION, 1) not in (0, 1):  # exif_transpose copies even when upright
            image = ImageOps.exif_transpose(image)
    except Exception as exc:  # corrupt EXIF blocks should not lose the image
        warnings.warn(f"{source}: ignoring unreadable EXIF orientation ({exc})", stacklevel=2)
    return LoadedImage(to_rgb(image, source), source)


def load_pixels(
    obj: Any,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    reuse: bool = False,
):
    """Like :func:`open_image`, but return ``(hwc_uint8_tensor, source)`` ready for tiling.

    Baseline JPEG files whose PIL mode is RGB or L are decoded by libjpeg-turbo directly (simplejpeg, or torchvision
    for EXIF-rotated files; bit-identical to PIL's decoder, without PIL's slow export to arrays); a file without a
    proper end marker takes the PIL path, which rejects truncated data. CHW uint8 RGB tensors are used without a
    copy. ``reuse=True`` may decode into a per-thread buffer that the next such call overwrites (for callers that
    consume the pixels at once): a large image then costs no page faults on fresh memory.
    """
    import torch

    if draft_size is not None and isinstance(obj, (str, os.PathLike)):
        full = peek_size(obj, max_pixels=max_pixels)
        if full is None or full[0] < 2 * draft_size[0] or full[1] < 2 * draft_size[1]:
            draft_size = None  # a reduced JPEG decode (1/2, 1/4, 1/8) would not fit: decode normally
    if draft_size is None and isinstance(obj, (str, os.PathLike)):
        fast = _decode_jpeg(os.fspath(obj), max_pixels, reuse=reuse)
        if fast is not None:
            return fast, describe(obj)
    if _is_torch_tensor(obj) and obj.dtype == torch.uint8 and obj.ndim == 3 and obj.shape[0] == 3:
        _check_size(obj.shape[2], obj.shape[1], describe(obj), max_pixels)
        return obj.detach().cpu().permute(1, 2, 0), describe(obj)
    loaded = open_image(obj, max_pixels=max_pixels, draft_size=draft_size)
    from anyres.tiling import from_pil

    return from_pil(loaded.image), loaded.source


def _decode_jpeg(path: str, max_pixels: int, decoder: str | None = None, reuse: bool = False):
    """HWC uint8 RGB tensor of a baseline JPEG file (RGB or grey), decoded with libjpeg-turbo's exact settings (islow
    IDCT, fancy upsampling: Pillow's pixels); ``None`` when the file should take the PIL path. ``decoder`` forces
    ``"simplejpeg"`` or ``"torchvision"`` (tests); by default simplejpeg decodes upright files (it is the faster
    binding) and torchvision the EXIF-rotated ones (it applies the orientation)."""
    source = path
    try:
        with _open_file(path, source, max_pixels) as im:
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
            upright = im.getexif().get(_ORIENTATION, 1) in (0, 1)
            width, height = im.size
        with open(path, "rb") as fh:
            data = fh.read()
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError):
        return None  # let the PIL path produce the precise error
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return None  # possibly truncated: PIL raises a clear error for it
    import torch

    if decoder is None:
        decoder = "simplejpeg" if upright else "torchvision"
    if decoder == "simplejpeg" and upright:
        try:
            import simplejpeg

            out = _reused_buffer((height, width, 3)) if reuse else None
            array = simplejpeg.decode_jpeg(
                data, colorspace="RGB", fastdct=False, fastupsample=False, buffer=out
            )
        except (ImportError, ValueError):  # missing binding, or data it rejects: try torchvision
            array = None
        if array is not None:
            return torch.from_numpy(array)
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    try:
        chw = decode_jpeg(
            torch.frombuffer(bytearray(data), dtype=torch.uint8),
            mode=ImageReadMode.RGB,
            apply_exif_orientation=True,
        )
    except RuntimeError:
        return None
    return chw.permute(1, 2, 0).contiguous()


def _reused_buffer(shape: tuple[int, int, int]) -> np.ndarray:
    """The per-thread decode buffer (one of :mod:`anyres.resample`'s reused buffers, outside the malloc heap)."""
    from anyres.resample import scratch

    return scratch.get("decode", shape)


def peek_size(obj: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int] | None:
    """``(width, height)`` of a file after EXIF orientation, from its header only; ``None`` for in-memory inputs.

    Raises :class:`ImageError` for a missing, empty or non-regular file, an unreadable header, or a size over
    ``max_pixels``."""
    if not isinstance(obj, (str, os.PathLike)):
        return None
    source = describe(obj)
    try:
        with _open_file(os.fspath(obj), source, max_pixels) as im:
            width, height = im.size
            orientation = _header_orientation(im, os.fspath(obj))
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(source, f"cannot read image header ({exc})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def check_regular_file(path: str | os.PathLike[str], source: str | None = None) -> int:
    """Size in bytes of the regular file at ``path`` (symlinks followed), checked with one ``os.stat`` before
    anything opens it: a FIFO, device, directory or socket would block or stream forever, so it raises
    :class:`ImageError`, as does a missing file."""
    source = os.fspath(path) if source is None else source
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError(source, "file does not exist") from None
    except OSError as exc:
        raise ImageError(source, f"cannot access file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _NOT_REGULAR if test(info.st_mode)), "not a plain file")
        raise ImageError(source, f"not a regular file ({kind}); pass the path of an image file")
    return info.st_size


def to_rgb(image: Image.Image, source: str = "<image>") -> Image.Image:
    """Convert a PIL image of any supported mode to 8-bit RGB (see the module docstring for the rules)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _PIL_TO_RGB:
        return image.convert("RGB")
    if mode == "P":
        if "transparency" in image.info:
            return _composite_on_white(image.convert("RGBA"))
        return image.convert("RGB")
    if mode in _ALPHA_MODES:
        return _composite_on_white(image.convert("RGBA"))
    if mode in _SIXTEEN_BIT:
        arr = np.asarray(image)
        if arr.dtype.byteorder == ">" or arr.dtype.kind != "u":
            arr = arr.astype(np.int64)
        grey = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    raise ImageError(source, f"unsupported image mode {mode!r}; convert it to RGB first")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _check_size(width: int, height: int, source: str, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(source, f"image is empty ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise ImageError(
            source,
            f"image has {width * height:,} pixels ({width}x{height}), over the limit of {max_pixels:,}; "
            f"{_RAISE_LIMIT}",
        )


#: What an over-limit error tells the user to change (PIL's own ``Image.MAX_IMAGE_PIXELS`` does not apply).
_RAISE_LIMIT = (
    "if the image is intended, raise max_pixels (the strategy parameter, e.g. "
    "get_strategy(name, max_pixels=...), or max_pixels in the processor's single_image / multi_image config); "
    "it is the decompression-bomb guard"
)


def _header_orientation(im: Image.Image, path: str) -> int:
    """The EXIF orientation of an opened file without decoding its pixels.

    PIL's ``getexif()`` on a PNG whose ``eXIf`` chunk was not seen before the image data decodes the whole image to
    look for one after it (0.2 s for 12 MP); the chunk list is walked instead, reading chunk headers only.
    """
    if im.format == "PNG" and "exif" not in im.info:
        data = _png_trailing_exif(path)
        if data is None:
            return 1
        exif = Image.Exif()
        exif.load(data)
        return exif.get(_ORIENTATION, 1)
    return im.getexif().get(_ORIENTATION, 1)


def _png_trailing_exif(path: str) -> bytes | None:
    """The payload of the first ``eXIf`` chunk of a PNG file (``None`` if it has none), seeking over other chunks."""
    import struct

    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind == b"eXIf":
                data = f.read(length)
                return data if len(data) == length else None
            if kind == b"IEND":
                return None
            f.seek(length + 4, os.SEEK_CUR)  # chunk data and CRC


def _open_file(path: str, source: str, max_pixels: int) -> Image.Image:
    """A lazily opened image file (header read, nothing decoded), refused before any open unless it is a
    non-empty regular file, and refused unless its size is within ``max_pixels``."""
    if check_regular_file(path, source) == 0:
        raise ImageError(source, "file is empty (0 bytes)")
    image = _pil_open(path, source, max_pixels)
    try:
        _check_size(image.size[0], image.size[1], source, max_pixels)
    except ImageError:
        image.close()
        raise
    return image


def _pil_open(path: str, source: str, max_pixels: int) -> Image.Image:
    """``Image.open`` whose decompression-bomb guard is ``max_pixels`` rather than PIL's ``MAX_IMAGE_PIXELS``.

    Opening reads the header only. A file PIL refuses as over its own limit is reopened with that global limit
    set to ``max_pixels`` for the header read only, under a lock, and then restored; the caller checks the size
    against ``max_pixels`` before decoding anything."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and max_pixels <= limit:  # over PIL's limit, hence over ours
            raise ImageError(
                source, f"image is over the limit of {max_pixels:,} pixels ({exc}); {_RAISE_LIMIT}"
            ) from None
    with _PIL_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(
                source, f"image is over the limit of {max_pixels:,} pixels ({exc}); {_RAISE_LIMIT}"
            ) from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _load(image: Image.Image, source: str) -> None:
    """Decode a lazily opened PIL image now, so that a truncated or corrupt file raises :class:`ImageError`."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            source, f"cannot decode image ({exc}); the file is unreadable or truncated"
        ) from None


def _open_path(path: str, source: str, max_pixels: int, draft_size: tuple[int, int] | None) -> Image.Image:
    try:
        image = _open_file(path, source, max_pixels)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            source, f"cannot decode image ({exc}); the file is unreadable or truncated"
        ) from None
    try:
        if draft_size is not None and image.format == "JPEG":
            if image.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):  # draft_size is for the upright image
                draft_size = (draft_size[1], draft_size[0])
            image.draft("RGB", draft_size)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            source, f"cannot decode image ({exc}); the file is unreadable or truncated"
        ) from None
    _load(image, source)
    return image


def _from_hwc_array(arr: np.ndarray, source: str, max_pixels: int) -> Image.Image:
    if arr.dtype != np.uint8:
        raise ImageError(source, f"numpy images must be uint8 HWC, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageError(source, f"numpy images must be HWC with 1, 3 or 4 channels, got shape {arr.shape}")
    _check_size(arr.shape[1], arr.shape[0], source, max_pixels)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    return Image.fromarray(np.ascontiguousarray(arr if mode != "L" else arr[:, :, 0]), mode)


def _is_torch_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "permute")


def _from_chw_tensor(tensor: Any, source: str, max_pixels: int) -> Image.Image:
    import torch

    if tensor.dtype != torch.uint8:
        raise ImageError(source, f"tensor images must be uint8 CHW, got dtype {tensor.dtype}")
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
        raise ImageError(
            source, f"tensor images must be CHW with 1, 3 or 4 channels, got shape {tuple(tensor.shape)}"
        )
    return _from_hwc_array(tensor.detach().cpu().permute(1, 2, 0).numpy(), source, max_pixels)
