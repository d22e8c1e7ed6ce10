"""Pixel side: resize, pad and tile an RGB image in uint8, then normalise once into a preallocated float buffer.

Sources are PIL images (the exact default: every resize is PIL's own, bit-identical to transformers' PIL image
processors) or HWC ``uint8`` tensors (``resize_backend="torch"``: torch's antialiased uint8 kernels on channels-last
memory for down-scaling, several times faster, documented deviation). Results are HWC uint8 tensors, written into
the float output once and normalised in place.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from anyres.geometry import Layout

RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_TORCH_MODES = {"bicubic": "bicubic", "bilinear": "bilinear"}


def from_pil(image: Image.Image) -> torch.Tensor:
    """HWC uint8 tensor of an RGB PIL image (one copy out of PIL's memory)."""
    return as_tensor(np.asarray(image))


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """Zero-copy tensor view of a (possibly read-only) uint8 array; it is only ever read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array": we never write through it
        return torch.from_numpy(array)


def resize(
    image: Image.Image | torch.Tensor, height: int, width: int, resample: str, backend: str = "pil"
) -> torch.Tensor:
    """Resize a PIL image or an HWC uint8 tensor to ``(height, width)``; returns HWC uint8.

    ``backend="pil"`` (the default) is bit-identical to transformers' PIL image processors. ``backend="torch"``
    uses torch's antialiased uint8 kernels for down-scaling (several times faster; PIL may run its two separable
    passes in the other order, so sharp edges can differ by a few levels); up-scaling always uses PIL.
    """
    if isinstance(image, Image.Image):
        if image.size == (width, height):
            return from_pil(image)
        if (
            backend == "torch"
            and resample in _TORCH_MODES
            and height <= image.height
            and width <= image.width
        ):
            return resize(from_pil(image), height, width, resample, backend)
        return from_pil(image.resize((width, height), RESAMPLE[resample]))
    if tuple(image.shape[:2]) == (height, width):
        return image
    mode = _TORCH_MODES.get(resample) if backend == "torch" else None
    if mode is None or height > image.shape[0] or width > image.shape[1]:
        pil = Image.fromarray(np.ascontiguousarray(image.numpy()), "RGB")
        return from_pil(pil.resize((width, height), RESAMPLE[resample]))
    if not image.is_contiguous():
        image = image.contiguous()
    chw = image.permute(2, 0, 1)[None]  # channels-last NCHW view: the fast uint8 path
    out = torch.nn.functional.interpolate(
        chw, size=(height, width), mode=mode, antialias=True, align_corners=False
    )
    return out[0].permute(1, 2, 0)


def grid_canvas(
    image: Image.Image | torch.Tensor, layout: Layout, resample: str, backend: str = "pil"
) -> torch.Tensor:
    """The black-padded ``canvas`` (HWC uint8) with the aspect-preserving resize pasted at the layout's offsets."""
    canvas = torch.zeros((layout.canvas.height, layout.canvas.width, 3), dtype=torch.uint8)
    rh, rw = layout.resized
    top, left = layout.offsets
    canvas[top : top + rh, left : left + rw] = resize(image, rh, rw, resample, backend)
    return canvas


def square_pad(
    image: Image.Image | torch.Tensor, layout: Layout, fill: Sequence[int]
) -> Image.Image | torch.Tensor:
    """Pad to a square of side ``max(H, W)`` with ``fill`` colour (``expand2square``), same type as the input."""
    top, left = layout.offsets
    if isinstance(image, Image.Image):
        canvas_img = Image.new("RGB", (layout.canvas.width, layout.canvas.height), tuple(fill))
        canvas_img.paste(image, (left, top))
        return canvas_img
    canvas = torch.empty((layout.canvas.height, layout.canvas.width, 3), dtype=torch.uint8)
    canvas[...] = torch.tensor(list(fill), dtype=torch.uint8)
    h, w = layout.image_size
    canvas[top : top + h, left : left + w] = image
    return canvas


def image_size(image: Image.Image | torch.Tensor) -> tuple[int, int]:
    """``(height, width)`` of a PIL image or an HWC tensor."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    return int(image.shape[0]), int(image.shape[1])


def write_tiles(out: torch.Tensor, base: torch.Tensor, canvas: torch.Tensor | None, tile: int) -> None:
    """Copy the base tile and the grid tiles (row-major) of ``canvas`` into ``out`` ``[N, 3, tile, tile]``.

    One strided uint8 -> float32 copy per source; normalisation happens afterwards in place, once.
    """
    out[0].copy_(base.permute(2, 0, 1))
    if canvas is not None:
        rows, cols = canvas.shape[0] // tile, canvas.shape[1] // tile
        src = canvas.view(rows, tile, cols, tile, 3).permute(0, 2, 4, 1, 3)
        out[1:].view(rows, cols, 3, tile, tile).copy_(src)


def normalize_(out: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> None:
    """In place: ``(x / 255 - mean) / std`` per channel on ``[N, 3, H, W]`` float32."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(1, 3, 1, 1)
    out.mul_(scale).add_(shift)
