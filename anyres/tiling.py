"""Pixel side: resize, pad and tile an RGB image in uint8, then normalise once into a preallocated float buffer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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


def resize(image: Image.Image, height: int, width: int, resample: str) -> Image.Image:
    """PIL resize to ``(height, width)`` (a copy when the size is unchanged, exactly like PIL itself)."""
    return image.resize((width, height), RESAMPLE[resample])


def grid_canvas(image: Image.Image, layout: Layout, resample: str) -> np.ndarray:
    """The black-padded ``canvas`` (HWC uint8) with the aspect-preserving resize pasted at the layout's offsets."""
    canvas = np.zeros((layout.canvas.height, layout.canvas.width, 3), dtype=np.uint8)
    rh, rw = layout.resized
    top, left = layout.offsets
    canvas[top : top + rh, left : left + rw] = np.asarray(resize(image, rh, rw, resample))
    return canvas


def square_pad(image: Image.Image, layout: Layout, fill: Sequence[int]) -> np.ndarray:
    """Pad to a square of side ``max(H, W)`` with ``fill`` colour (``expand2square``), HWC uint8."""
    canvas = np.empty((layout.canvas.height, layout.canvas.width, 3), dtype=np.uint8)
    canvas[...] = np.asarray(fill, dtype=np.uint8)
    h, w = layout.image_size
    top, left = layout.offsets
    canvas[top : top + h, left : left + w] = np.asarray(image)
    return canvas


def write_tiles(out, base: np.ndarray, canvas: np.ndarray | None, tile: int) -> None:
    """Copy the base tile and the grid tiles (row-major) of ``canvas`` into ``out`` ``[N, 3, tile, tile]``.

    One strided uint8 -> float32 copy per source; normalisation happens afterwards in place, once.
    """
    import torch

    out[0].copy_(torch.from_numpy(base).permute(2, 0, 1))
    if canvas is not None:
        rows, cols = canvas.shape[0] // tile, canvas.shape[1] // tile
        src = torch.from_numpy(canvas).view(rows, tile, cols, tile, 3).permute(0, 2, 4, 1, 3)
        out[1:].view(rows, cols, 3, tile, tile).copy_(src)


def normalize_(out, mean: Sequence[float], std: Sequence[float]) -> None:
    """In place: ``(x / 255 - mean) / std`` per channel on ``[N, 3, H, W]`` float32."""
    import torch

    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(1, 3, 1, 1)
    out.mul_(scale).add_(shift)
