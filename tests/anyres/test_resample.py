"""The exact resampler against Pillow itself: bit-identical on random sizes, scales, orders and content."""

from __future__ import annotations

import dataclasses
import functools
import io

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
    assert out.dtype == torch.float32 and tuple(out.shape) == (height, width, 3)
    assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= 255
    return out.to(torch.uint8).numpy()


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


def test_exact_fix_up_path_alone_is_exact(monkeypatch):
    """Flag every output as near a rounding boundary: the exact float64 recomputation alone must match Pillow."""
    plan = resample._plan.__wrapped__

    @functools.cache
    def everything_risky(*args):
        return dataclasses.replace(plan(*args), threshold=0.0)

    monkeypatch.setattr(resample, "_plan", everything_risky)
    rng = np.random.default_rng(5)
    for h, w, oh, ow in [(200, 300, 50, 77), (300, 200, 40, 64), (100, 100, 250, 300), (480, 640, 384, 384)]:
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for name in FILTERS:
            assert np.array_equal(_ours(arr, oh, ow, name), _pillow(arr, oh, ow, name))


def test_one_pass_serves_several_sizes():
    arr = np.asarray(natural_image(900, 1700, seed=3))
    src = torch.from_numpy(arr.copy())
    got = {}

    def sink_for(key, width):
        rows = got.setdefault(key, [])
        return lambda y0, block: rows.append((y0, block[:, : width * 3].clone()))

    sizes = {"base": (384, 384), "canvas": (768, 1450), "same": (900, 1700)}
    done = resample.stream(src, [(h, w, "bicubic", sink_for(k, w)) for k, (h, w) in sizes.items()])
    assert done == [True, True, True]
    for key, (h, w) in sizes.items():
        out = torch.cat([block for _, block in sorted(got[key], key=lambda item: item[0])]).view(h, w, 3)
        assert np.array_equal(out.to(torch.uint8).numpy(), _pillow(arr, h, w, "bicubic"))


def test_unsupported_filters_and_precision_fall_back(monkeypatch):
    src = torch.zeros((10, 10, 3), dtype=torch.uint8)
    assert resample.resize(src, 5, 5, "lanczos") is None
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "medium")
    assert resample.resize(src, 5, 5, "bicubic") is None


def test_preprocess_uses_exact_engine_and_stays_identical(hf_onevision_processor):
    """A size where the base tile comes from the exact engine (width shrinks >= 3.5x), through the public API."""
    img = natural_image(1080, 1920, seed=11)
    assert tiling.suits_exact_engine((1080, 1920), (384, 384), "bicubic")
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
def test_torchvision_jpeg_decode_is_bit_identical_to_pillow(tmp_path, options, mode):
    """The exact mode decodes JPEG files with torchvision: it must give Pillow's pixels exactly."""
    for h, w in [(37, 23), (480, 640), (333, 1001), (1, 1)]:
        img = natural_image(h, w, seed=h)
        path = tmp_path / "x.jpg"
        path.write_bytes(_jpeg(img if mode == "RGB" else img.convert("L"), **options))
        decoded = _decode_jpeg(str(path), 1 << 30)
        assert decoded is not None
        assert np.array_equal(decoded.numpy(), np.asarray(open_image(path).image))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_torchvision_decode_applies_exif_orientation_like_pillow(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    natural_image(60, 90).save(path, exif=exif, quality=90)
    decoded = _decode_jpeg(str(path), 1 << 30)
    assert decoded is not None
    assert np.array_equal(decoded.numpy(), np.asarray(open_image(path).image))
