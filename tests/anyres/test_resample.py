"""The exact resampler against Pillow itself: bit-identical on random sizes, scales, orders and content."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import anyres
from anyres import resample, tiling
from anyres.images import _decode_jpeg, open_image

from .conftest import natural_image

FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def _pillow(arr: np.ndarray, height: int, width: int, name: str) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize((width, height), FILTERS[name]))


def _ours(arr: np.ndarray, height: int, width: int, name: str) -> np.ndarray:
    out = resample.resize(tiling.as_tensor(arr), height, width, name)
    assert out is not None
    assert out.dtype == torch.uint8 and tuple(out.shape) == (height, width, 3)
    return out.numpy()


def _image(rng: np.random.Generator, height: int, width: int, kind: int) -> np.ndarray:
    if kind == 0:  # white noise: every rounding case
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if kind == 1:  # black and white: maximal overshoot, so clipping after each pass matters
        return (rng.integers(0, 2, (height, width, 3)) * 255).astype(np.uint8)
    return np.asarray(natural_image(height, width, seed=int(rng.integers(1 << 16))))


def _cases(count: int, seed: int) -> list[tuple[int, int, int, int, str, int]]:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(1, 260, 2))
        mode = i % 4
        if mode == 0:  # strong down-scaling (long filters)
            oh, ow = max(1, h // int(rng.integers(2, 12))), max(1, w // int(rng.integers(2, 12)))
        elif mode == 1:  # up and down
            oh, ow = (int(v) for v in rng.integers(1, 400, 2))
        elif mode == 2:  # one axis only
            oh, ow = (h, int(rng.integers(1, 300))) if i % 8 == 2 else (int(rng.integers(1, 300)), w)
        else:  # tall: Pillow 13 runs the vertical pass first
            h = int(rng.integers(100, 500))
            oh, ow = max(1, h // int(rng.integers(3, 9))), max(1, w - int(rng.integers(0, 8)))
        cases.append((h, w, oh, ow, "bicubic" if i % 3 else "bilinear", i % 3))
    return cases


def test_pillow_pass_order_is_recognised():
    assert resample._pillow_order() in ("legacy", "pillow13")


@pytest.mark.parametrize(("h", "w", "oh", "ow", "name", "kind"), _cases(120, 2024))
def test_bit_identical_to_pillow(h, w, oh, ow, name, kind):
    rng = np.random.default_rng(h * 1000 + w)
    arr = _image(rng, h, w, kind)
    assert np.array_equal(_ours(arr, oh, ow, name), _pillow(arr, oh, ow, name))


@pytest.mark.parametrize(
    ("h", "w", "oh", "ow"),
    [
        (1080, 1920, 384, 384),
        (1920, 1080, 384, 384),
        (3024, 4032, 384, 384),
        (700, 1001, 384, 384),
        (97, 2001, 384, 384),
    ],
    ids=str,
)
def test_bit_identical_on_photo_sizes(h, w, oh, ow):
    arr = np.asarray(natural_image(h, w, seed=h + w))
    for name in FILTERS:
        assert np.array_equal(_ours(arr, oh, ow, name), _pillow(arr, oh, ow, name))


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 120),
    w=st.integers(1, 120),
    oh=st.integers(1, 160),
    ow=st.integers(1, 160),
    name=st.sampled_from(sorted(FILTERS)),
    seed=st.integers(0, 2**16),
)
def test_bit_identical_property(h, w, oh, ow, name, seed):
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert np.array_equal(_ours(arr, oh, ow, name), _pillow(arr, oh, ow, name))


@pytest.mark.parametrize(
    ("h", "w", "sizes"),
    [
        (900, 1700, [(384, 384), (768, 1450), (900, 1700)]),  # base + canvas share the first pass; same size
        (1000, 301, [(384, 384), (999, 300), (120, 301)]),  # the base runs vertical first on Pillow 13
        (50, 2000, [(384, 384), (40, 1999)]),  # up-scaling rows, shrinking columns
        (
            517,
            613,
            [(100, 90), (300, 200), (30, 600)],
        ),  # three horizontal-first outputs: two share, one alone
    ],
    ids=str,
)
def test_resize_many_equals_pillow_for_every_size(h, w, sizes):
    arr = np.asarray(natural_image(h, w, seed=3))
    for name in FILTERS:
        got = resample.resize_many(tiling.as_tensor(arr), sizes, name)
        assert len(got) == len(sizes)
        for out, (oh, ow) in zip(got, sizes):
            assert np.array_equal(out.numpy(), _pillow(arr, oh, ow, name)), (oh, ow, name)


@pytest.mark.parametrize("seed", range(4))
def test_resize_padded_equals_pillow_on_the_built_canvas(seed):
    """``expand2square`` then resize, with the canvas never built: landscape (padding rows), portrait (padding
    columns), off-centre placements, random colours, noise and black/white content."""
    rng = np.random.default_rng(seed)
    checked = 0
    for i in range(30):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        ch, cw = h + int(rng.integers(0, 60)), w + int(rng.integers(0, 60))
        if i % 3 == 0:
            ch = cw = max(h, w)
        top, left = int(rng.integers(0, ch - h + 1)), int(rng.integers(0, cw - w + 1))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        arr = _image(rng, h, w, i % 2)
        oh, ow = int(rng.integers(1, 400)), int(rng.integers(1, 400))
        canvas = Image.new("RGB", (cw, ch), fill)
        canvas.paste(Image.fromarray(arr), (left, top))
        for name in FILTERS:
            got = resample.resize_padded(arr, (ch, cw), (top, left), fill, oh, ow, name)
            if (
                got is None
            ):  # vertical first on Pillow 13, or an axis left as is: the caller builds the canvas
                continue
            checked += 1
            assert np.array_equal(got.numpy(), _pillow(np.asarray(canvas), oh, ow, name)), (
                h,
                w,
                ch,
                cw,
                oh,
                ow,
            )
    assert checked >= 30


def test_strided_and_array_inputs():
    arr = np.asarray(natural_image(120, 90, seed=4))
    flipped = torch.from_numpy(arr.copy()).flip(1)  # not contiguous
    ref = _pillow(np.ascontiguousarray(flipped.numpy()), 50, 40, "bicubic")
    assert np.array_equal(resample.resize(flipped, 50, 40, "bicubic").numpy(), ref)
    assert np.array_equal(resample.resize(arr, 50, 40, "bicubic").numpy(), _pillow(arr, 50, 40, "bicubic"))


def test_kernels_work_without_a_writable_numba_cache():
    """No cache location (read-only install): numba refuses ``cache=True`` at decoration; the kernels must still
    compile and stay exact."""
    code = (
        "import numpy as np; from PIL import Image; from anyres import resample; "
        "a = np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8); "
        "ref = np.asarray(Image.fromarray(a).resize((33, 41), Image.Resampling.BICUBIC)); "
        "assert np.array_equal(resample.resize(a, 41, 33, 'bicubic').numpy(), ref); print('ok')"
    )
    env = dict(
        os.environ, NUMBA_CACHE_LOCATOR_CLASSES="ZipCacheLocator"
    )  # only for zipped sources: none here
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_unsupported_filters_and_missing_numba_fall_back(monkeypatch):
    src = torch.zeros((10, 10, 3), dtype=torch.uint8)
    assert resample.resize(src, 5, 5, "lanczos") is None
    assert resample.resize(src.float(), 5, 5, "bicubic") is None
    assert not resample.available("lanczos")
    monkeypatch.setattr(resample.kernels, "AVAILABLE", False)
    assert resample.resize(src, 5, 5, "bicubic") is None
    assert resample.resize_many(src, [(5, 5), (3, 4)], "bicubic") == [None, None]


def test_preprocess_uses_exact_engine_and_stays_identical(hf_onevision_processor):
    """A size where the base tile comes from the exact engine (width shrinks >= 3.5x), through the public API."""
    img = natural_image(1080, 1920, seed=11)
    assert resample.available("bicubic")
    ours = anyres.get_strategy("anyres_max_9").preprocess(img).pixel_values
    ref = torch.as_tensor(
        hf_onevision_processor.image_processor([[img]], return_tensors="pt")["pixel_values"][0]
    )
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-6


def _jpeg(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize(
    "options",
    [
        {"quality": 90},
        {"quality": 100, "subsampling": 0},
        {"quality": 60, "subsampling": 1},
        {"quality": 30, "subsampling": 2},
        {"quality": 85, "progressive": True},
        {"quality": 75, "optimize": True},
    ],
    ids=str,
)
@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("decoder", ["simplejpeg", "torchvision"])
def test_jpeg_decoders_are_bit_identical_to_pillow(tmp_path, options, mode, decoder):
    """The exact mode decodes JPEG files with simplejpeg or torchvision: both must give Pillow's pixels exactly."""
    for h, w in [(37, 23), (480, 640), (333, 1001), (1, 1)]:
        img = natural_image(h, w, seed=h)
        path = tmp_path / "x.jpg"
        path.write_bytes(_jpeg(img if mode == "RGB" else img.convert("L"), **options))
        decoded = _decode_jpeg(str(path), 1 << 30, decoder=decoder)
        assert decoded is not None and decoded.dtype == torch.uint8 and decoded.is_contiguous()
        assert np.array_equal(decoded.numpy(), np.asarray(open_image(path).image))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_torchvision_decode_applies_exif_orientation_like_pillow(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    natural_image(60, 90).save(path, exif=exif, quality=90)
    decoded = _decode_jpeg(str(path), 1 << 30)  # the default choice: torchvision for rotated files
    assert decoded is not None
    assert np.array_equal(decoded.numpy(), np.asarray(open_image(path).image))
    if orientation == 1:
        forced = _decode_jpeg(str(path), 1 << 30, decoder="simplejpeg")
        assert np.array_equal(forced.numpy(), decoded.numpy())
