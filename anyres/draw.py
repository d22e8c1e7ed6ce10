"""Draw a :class:`~anyres.geometry.Layout` over its image: canvas, tile grid, removed padding, cap and newlines."""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw

from anyres.geometry import ImageSize, Layout
from anyres.images import open_image
from anyres.strategies import Strategy, get_strategy

_TILE = (255, 200, 0)
_REMOVED = (255, 0, 0, 90)
_NEWLINE = (0, 170, 255)
_PAD = (40, 40, 40)


def draw_layout(image: Any, strategy: Strategy | str, *, max_side: int = 768) -> Image.Image:
    """A picture of how ``strategy`` sees ``image``.

    Left: the base (global) tile. Right: the canvas with the resized image, the tile grid (yellow), feature rows
    and columns removed as padding (red), the newline column (blue; one cell per kept row) and a caption with the
    grid, the unpadded and capped feature shapes and the exact token count.
    """
    strat = get_strategy(strategy) if isinstance(strategy, str) else strategy
    loaded = open_image(image, max_pixels=strat.max_pixels)

    layout = strat.layout(ImageSize.from_pil(loaded.image.size))
    base, canvas = strat.render(loaded.image, layout)
    bases = [] if base is None else list(base) if isinstance(base, (list, tuple)) else [base]
    base_img = Image.fromarray(bases[0].contiguous().numpy()) if bases else None
    if canvas is None:
        if base_img is None:
            raise ValueError(f"{type(strat).__name__}.render returned neither base tiles nor a canvas")
        main = base_img
        scale = max_side / max(main.size)
        main = main.resize((round(main.width * scale), round(main.height * scale)))
        panel = _with_newline_column(main, rows=1, cell=max(8, main.height // 8), count=layout.newlines)
        return _caption(panel, layout)
    main = Image.fromarray(canvas.numpy())
    scale = max_side / max(main.size)
    main = main.resize((max(1, round(main.width * scale)), max(1, round(main.height * scale))))
    draw = ImageDraw.Draw(main, "RGBA")
    s = layout.tokens_per_side
    cell_h = main.height / layout.stitched.rows
    cell_w = main.width / layout.stitched.cols
    top, left = layout.unpad_offsets
    h, w = layout.unpadded
    # removed padding (feature rows / columns outside the unpadded region)
    if top:
        draw.rectangle([0, 0, main.width, top * cell_h], fill=_REMOVED)
        draw.rectangle([0, (top + h) * cell_h, main.width, main.height], fill=_REMOVED)
    if left:
        draw.rectangle([0, 0, left * cell_w, main.height], fill=_REMOVED)
        draw.rectangle([(left + w) * cell_w, 0, main.width, main.height], fill=_REMOVED)
    for r in range(1, layout.grid.rows):
        y = r * s * cell_h
        draw.line([0, y, main.width, y], fill=_TILE, width=3)
    for c in range(1, layout.grid.cols):
        x = c * s * cell_w
        draw.line([x, 0, x, main.height], fill=_TILE, width=3)
    draw.rectangle([0, 0, main.width - 1, main.height - 1], outline=_TILE, width=3)
    panel = _with_newline_column(
        main, rows=layout.capped.rows, cell=max(4, main.width // 40), count=layout.newlines
    )
    if base_img is None:  # a grid-only layout
        return _caption(panel, layout)
    thumb = base_img.resize((max(64, main.height // 3),) * 2)
    out = Image.new("RGB", (thumb.width + 16 + panel.width, max(thumb.height, panel.height)), (255, 255, 255))
    out.paste(thumb, (0, 0))
    ImageDraw.Draw(out).rectangle([0, 0, thumb.width - 1, thumb.height - 1], outline=_TILE, width=2)
    out.paste(panel, (thumb.width + 16, 0))
    return _caption(out, layout)


def _with_newline_column(main: Image.Image, *, rows: int, cell: int, count: int) -> Image.Image:
    if not count:
        return main
    panel = Image.new("RGB", (main.width + cell + 6, main.height), (255, 255, 255))
    panel.paste(main, (0, 0))
    draw = ImageDraw.Draw(panel)
    step = main.height / max(rows, 1)
    for r in range(rows):
        y0 = round(r * step)
        y1 = max(y0, round((r + 1) * step) - (2 if step >= 3 else 1))  # a gap shows one token per row
        draw.rectangle([main.width + 6, y0, main.width + 6 + cell, y1], fill=_NEWLINE)
    return panel


def _caption(img: Image.Image, layout: Layout) -> Image.Image:
    lines = [
        f"{layout.strategy}: image {layout.image_size.height}x{layout.image_size.width} (HxW) -> "
        f"canvas {layout.canvas.height}x{layout.canvas.width}",
    ]
    if layout.grid.count:
        cap = f", capped to {layout.capped.rows}x{layout.capped.cols}" if layout.is_capped else ""
        lines.append(
            f"grid {layout.grid.rows}x{layout.grid.cols} tiles + base; features {layout.stitched.rows}x"
            f"{layout.stitched.cols}, unpadded {layout.unpadded.rows}x{layout.unpadded.cols}{cap}"
        )
        lines.append(
            f"tokens = {layout.base_tokens} base + {layout.grid_tokens} grid + {layout.newlines} newlines "
            f"= {layout.num_tokens}"
        )
    else:
        lines.append(f"tokens = {layout.base_tokens} + {layout.newlines} newline = {layout.num_tokens}")
    line_h = 14
    out = Image.new("RGB", (max(img.width, 560), img.height + line_h * len(lines) + 10), (255, 255, 255))
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(lines):
        draw.text((4, img.height + 5 + i * line_h), text, fill=(0, 0, 0))
    return out
