"""Image inputs: every accepted type, mode conversions, EXIF orientation, and typed errors for bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import anyres
from anyres import ImageError, ImageSize
from anyres.images import open_image, to_rgb

from .conftest import natural_image

STRATEGY = anyres.get_strategy("anyres_max_9", tile_size=64, patch_size=8)


def test_all_input_types_give_identical_pixels(tmp_path):
    img = natural_image(90, 130)
    path = tmp_path / "img.png"
    img.save(path)
    arr = np.asarray(img)
    chw = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    results = [STRATEGY.preprocess(x).pixel_values for x in (img, str(path), path, arr, chw)]
    for other in results[1:]:
        assert torch.equal(results[0], other)
    assert STRATEGY.preprocess(img).layout.image_size == ImageSize(90, 130)


def test_batch_form_equals_single_form_and_is_contiguous():
    images = [natural_image(90, 130), natural_image(300, 40, seed=2), natural_image(64, 64, seed=3)]
    batch = STRATEGY.preprocess_batch(images)
    singles = [STRATEGY.preprocess(im) for im in images]
    assert batch.pixel_values.shape[0] == sum(t.layout.num_tiles for t in singles) == sum(batch.num_tiles)
    for part, single in zip(batch.split(), singles):
        assert torch.equal(part.pixel_values, single.pixel_values)
        assert part.layout == single.layout
    assert batch.num_tokens == [t.layout.num_tokens for t in singles]


@pytest.mark.parametrize("name", ["pad", "hd", "anyres", "anyres_max_9"])
def test_compiled_path_equals_pillow_and_torch_fallback(monkeypatch, name):
    """numba kernels (resampling, tile write) against the fallback Pillow resize + torch tile write."""
    strategy = anyres.get_strategy(name)
    images = [
        natural_image(700, 1001, seed=1),
        natural_image(97, 2001, seed=2),
        natural_image(333, 250, seed=3),
    ]
    compiled = strategy.preprocess_batch(images).pixel_values
    from anyres import kernels

    monkeypatch.setattr(kernels, "AVAILABLE", False)
    fallback = strategy.preprocess_batch(images).pixel_values
    assert compiled.shape == fallback.shape
    assert (compiled - fallback).abs().max().item() < 1e-6


def test_only_large_tile_buffers_ask_for_huge_pages(monkeypatch):
    from anyres import tiling

    calls = []
    monkeypatch.setattr(
        tiling, "_madvise", lambda: lambda addr, length, advice: calls.append((addr, length, advice))
    )
    out = tiling.empty_tiles(31, 384)  # 55 MB: always a fresh mapping, so worth huge pages
    assert out.shape == (31, 3, 384, 384) and out.dtype == torch.float32
    ((addr, length, advice),) = calls
    page = 2 << 20
    assert advice == 14 and addr % page == 0 and length % page == 0 and length > 0
    assert out.data_ptr() <= addr and addr + length <= out.data_ptr() + out.numel() * 4
    calls.clear()
    tiling.empty_tiles(16, 384)  # 28 MB: glibc reuses freed heap memory without faults; left alone
    assert calls == []


def test_base_tile_first_then_row_major_grid():
    # a 2x2-tile image whose quadrants are solid colours: tile order must be TL, TR, BL, BR after the base
    arr = np.zeros((128, 128, 3), dtype=np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        arr[r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64] = colours[k]
    tiles = STRATEGY.preprocess(arr)
    assert tiles.layout.grid == (2, 2)
    pixels = (tiles.pixel_values * 0.5 + 0.5) * 255
    for k, colour in enumerate(colours):
        centre = pixels[1 + k, :, 32, 32].round().tolist()
        assert centre == list(colour)


def test_exif_orientation_is_applied(tmp_path):
    img = natural_image(60, 200)  # landscape pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display: portrait
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif)
    assert open_image(path).image.size == (60, 200)
    assert STRATEGY.preprocess(path).layout.image_size == ImageSize(200, 60)
    fast = anyres.get_strategy("anyres_max_9", tile_size=64, patch_size=8, resize_backend="torch")
    assert fast.preprocess(path).layout.image_size == ImageSize(200, 60)


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("LA", (4, 4), (0, 128))
    assert to_rgb(half).getpixel((0, 0)) == (127, 127, 127)
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([200, 100, 50] + [0] * 765)
    assert to_rgb(pal).getpixel((0, 0)) == (200, 100, 50)
    pal.info["transparency"] = 0
    assert to_rgb(pal).getpixel((0, 0)) == (255, 255, 255)


def test_grey_cmyk_and_16_bit_modes():
    assert to_rgb(Image.new("L", (2, 2), 77)).getpixel((0, 0)) == (77, 77, 77)
    assert to_rgb(Image.new("CMYK", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    sixteen = Image.fromarray(np.full((2, 2), 40000, dtype=np.uint16))
    assert sixteen.mode.startswith("I;16")
    assert to_rgb(sixteen).getpixel((0, 0)) == (40000 >> 8,) * 3  # 156, not PIL's clipped 255


def _jpeg_bytes(size=(200, 150)) -> bytes:
    buf = io.BytesIO()
    natural_image(size[1], size[0]).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("backend", ["pil", "torch"])
def test_bad_files_raise_image_error_naming_the_file(tmp_path, backend):
    strategy = anyres.get_strategy("anyres_max_9", tile_size=64, patch_size=8, resize_backend=backend)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(_jpeg_bytes()[:600])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all")
    missing = tmp_path / "missing.jpg"
    cases = {empty: "empty", truncated: "truncated", garbage: "cannot", missing: "does not exist"}
    for path, reason in cases.items():
        with pytest.raises(ImageError, match=reason) as err:
            strategy.preprocess(path)
        assert str(path) in str(err.value)
        assert isinstance(err.value, ValueError)


def test_pixel_limit_guards_against_decompression_bombs(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (400, 300)).save(path)
    strategy = anyres.get_strategy("anyres_max_9", tile_size=64, patch_size=8, max_pixels=100_000)
    with pytest.raises(ImageError, match="over the limit of 100,000"):
        strategy.preprocess(path)
    with pytest.raises(ImageError, match="over the limit"):
        strategy.preprocess(Image.new("RGB", (400, 300)))


def test_bad_in_memory_inputs():
    with pytest.raises(ImageError, match="empty"):
        STRATEGY.preprocess(np.zeros((0, 10, 3), dtype=np.uint8))
    with pytest.raises(ImageError, match="uint8"):
        STRATEGY.preprocess(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(ImageError, match="channels"):
        STRATEGY.preprocess(np.zeros((10, 10, 2), dtype=np.uint8))
    with pytest.raises(ImageError, match="CHW"):
        STRATEGY.preprocess(torch.zeros((10, 10, 3), dtype=torch.uint8))
    with pytest.raises(ImageError, match="unsupported input type"):
        STRATEGY.preprocess(12345)
    with pytest.raises(ImageError, match="unsupported image mode 'F'"):
        STRATEGY.preprocess(Image.new("F", (8, 8)))


def test_fast_mode_decodes_large_jpegs_at_reduced_size(tmp_path):
    path = tmp_path / "large.jpg"
    natural_image(3000, 4000).save(path, quality=90)
    exact = anyres.get_strategy("pad").preprocess(path)
    fast = anyres.get_strategy("pad", fast=True).preprocess(path)
    assert fast.layout == exact.layout  # geometry always comes from the full-size header
    levels = (fast.pixel_values - exact.pixel_values).abs() * 127.5
    # documented deviation (docs/anyres.md): a 1/8-scale DCT decode, then the same pad + resize; the content is the
    # same picture (strong correlation) but sharp synthetic edges move by a fraction of a pixel
    assert levels.mean().item() < 10.0
    corr = torch.corrcoef(torch.stack([fast.pixel_values.flatten(), exact.pixel_values.flatten()]))[0, 1]
    assert corr.item() > 0.95


def _png_with_trailing_exif(path, size=(40, 24), orientation=6):
    """A PNG whose eXIf chunk comes after the image data (allowed by the PNG spec; PIL only sees it on load)."""
    import struct
    import zlib

    Image.new("RGB", size, (200, 10, 10)).save(path)
    data = path.read_bytes()
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + payload) & 0xFFFFFFFF)
    iend = data.rindex(b"IEND") - 4
    path.write_bytes(data[:iend] + chunk + data[iend:])


def test_peek_size_sees_a_png_exif_chunk_after_the_image_data(tmp_path):
    from anyres.images import open_image, peek_size

    path = tmp_path / "late-exif.png"
    _png_with_trailing_exif(path)
    decoded = open_image(path).image.size
    assert decoded == (24, 40)  # PIL applies the trailing orientation on decode
    assert peek_size(path) == decoded


def test_peek_size_never_decodes_a_png(tmp_path, monkeypatch):
    from PIL import PngImagePlugin

    from anyres.images import peek_size

    plain, late = tmp_path / "plain.png", tmp_path / "late.png"
    Image.new("RGB", (30, 20)).save(plain)
    _png_with_trailing_exif(late)

    def no_decode(self):
        raise AssertionError("peek_size decoded the image")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decode)
    assert peek_size(plain) == (30, 20) and peek_size(late) == (24, 40)
