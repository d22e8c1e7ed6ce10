"""Parity with transformers (the oracle): canvas, grid, token counts, pixel values and packed features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import anyres
from anyres import ImageSize
from onevision.testing import TinySpec

from .conftest import natural_image
from .test_geometry import ONEVISION_TABLE

#: the reference tower geometry (384 px tiles, patch 14) with tiny widths: ``pack_image_features`` reads the geometry
REFERENCE_TOWER = TinySpec(
    image_size=384,
    patch_size=14,
    vision_width=8,
    vision_layers=1,
    vision_heads=1,
    llm_width=16,
    llm_layers=1,
    llm_heads=2,
    llm_kv_heads=1,
)


def _sizes(count: int = 240, seed: int = 1234) -> list[ImageSize]:
    """>= 200 random sizes, 1..5000 px per side, a third with aspect ratios up to 1:20, plus the reference tables."""
    rng = np.random.default_rng(seed)
    sizes = []
    for i in range(count):
        if i % 3 == 0:
            long = int(rng.integers(20, 5001))
            short = max(1, long // int(rng.integers(2, 21)))
            h, w = (long, short) if i % 2 else (short, long)
        else:
            h, w = int(rng.integers(1, 5001)), int(rng.integers(1, 5001))
        sizes.append(ImageSize(h, w))
    sizes += [ImageSize(h, w) for (w, h), _ in ONEVISION_TABLE]
    sizes += [
        ImageSize(1, 1),
        ImageSize(16, 16),
        ImageSize(767, 768),
        ImageSize(1750, 1500),
        ImageSize(2400, 64),
    ]
    return sizes


SIZES = _sizes()


def test_enough_sizes_and_extreme_aspects():
    assert len(SIZES) >= 200
    assert max(max(s) / min(s) for s in SIZES) >= 19


def test_canvas_and_grid_match_transformers():
    from transformers.image_processing_utils import select_best_resolution
    from transformers.models.llava_onevision.modeling_llava_onevision import get_anyres_image_grid_shape

    strategy = anyres.get_strategy("anyres_max_9")
    pins = [[p.height, p.width] for p in strategy.pinpoints]
    for size in SIZES:
        layout = strategy.layout(size)
        assert tuple(layout.canvas) == tuple(select_best_resolution(tuple(size), pins)), size
        assert tuple(layout.grid) == tuple(get_anyres_image_grid_shape(tuple(size), pins, 384)), size


def test_onevision_token_counts_match_processor(hf_onevision_processor):
    strategy = anyres.get_strategy("anyres_max_9")
    for size in SIZES:
        expected = hf_onevision_processor._get_number_of_features(size.height, size.width, 384, 384)
        assert strategy.num_tokens(size) == expected, size


@pytest.mark.parametrize("n", [4, 16])
def test_onevision_counts_for_other_caps(hf_onevision_processor, n):
    strategy = anyres.get_strategy(f"anyres_max_{n}")
    old = hf_onevision_processor.vision_aspect_ratio
    hf_onevision_processor.vision_aspect_ratio = f"anyres_max_{n}"
    try:
        for size in SIZES[:60]:
            assert strategy.num_tokens(size) == hf_onevision_processor._get_number_of_features(
                *size, 384, 384
            )
    finally:
        hf_onevision_processor.vision_aspect_ratio = old


def test_next_token_counts_match_processor(hf_next_processor):
    strategy = anyres.get_strategy("anyres")  # CLIP-336 with CLS, 5 pinpoints, no cap
    for size in SIZES:
        expected = (
            hf_next_processor._get_number_of_features(size.height, size.width, 336, 336) - 1
        )  # "default"
        assert strategy.num_tokens(size) == expected, size


def test_processor_expansion_counts_real_call(hf_onevision_processor):
    """The full public processor call (not just the helper) expands <image> to our count, single and nested."""
    img = natural_image(480, 640)
    single = hf_onevision_processor(text="<image>", images=[img], return_tensors="pt")
    image_id = hf_onevision_processor.tokenizer.convert_tokens_to_ids("<image>")
    assert (
        int((single["input_ids"] == image_id).sum())
        == anyres.get_strategy("anyres_max_9").num_tokens(ImageSize(480, 640))
        == 2929
    )
    nested = hf_onevision_processor(
        text="<image><image>", images=[[img, natural_image(300, 200)]], return_tensors="pt"
    )
    pad = anyres.get_strategy("pad")
    assert int((nested["input_ids"] == image_id).sum()) == 2 * pad.num_tokens(ImageSize(480, 640)) == 1460


PIXEL_SIZES = [
    ImageSize(480, 640),
    ImageSize(640, 480),
    ImageSize(1080, 1920),
    ImageSize(37, 1000),
    ImageSize(777, 333),
    ImageSize(5, 3000),
    ImageSize(2000, 100),
    ImageSize(1, 1),
    ImageSize(384, 384),
    ImageSize(767, 768),
    ImageSize(1153, 944),
    ImageSize(300, 4500),
]
PIXEL_SIZES += [ImageSize(int(h), int(w)) for h, w in np.random.default_rng(7).integers(16, 2600, (12, 2))]
ONE_LEVEL = 1 / 127.5 + 1e-6  # one uint8 level after SigLIP normalisation


def _hf_pixels(processor, image, nested=False):
    out = processor([[image]] if not nested else [[image, image]], return_tensors="pt")
    return torch.as_tensor(out["pixel_values"][0])


@pytest.mark.parametrize("size", PIXEL_SIZES, ids=str)
def test_pixel_values_match_pil_processor(hf_onevision_processor, size):
    """The exact default: bit-identical resampling, so only float rounding of the normalisation differs."""
    img = natural_image(size.height, size.width, seed=size.height * 7 + size.width)
    ours = anyres.get_strategy("anyres_max_9").preprocess(img)
    ref = _hf_pixels(hf_onevision_processor.image_processor, img)
    assert ours.pixel_values.dtype == torch.float32
    assert ours.pixel_values.shape == ref.shape == (ours.layout.num_tiles, 3, 384, 384)
    assert (ours.pixel_values - ref).abs().max().item() <= ONE_LEVEL / 1000


@pytest.mark.parametrize("size", [ImageSize(300, 500), ImageSize(777, 333), ImageSize(97, 2001)], ids=str)
def test_default_is_exact_even_on_white_noise(hf_onevision_processor, size):
    from PIL import Image

    rng = np.random.default_rng(size.width)
    img = Image.fromarray(rng.integers(0, 256, (size.height, size.width, 3), dtype=np.uint8))
    ours = anyres.get_strategy("anyres_max_9").preprocess(img)
    ref = _hf_pixels(hf_onevision_processor.image_processor, img)
    assert (ours.pixel_values - ref).abs().max().item() < 1e-6


@pytest.mark.parametrize("size", PIXEL_SIZES[:8], ids=str)
def test_torch_backend_deviation_is_bounded(hf_onevision_processor, size):
    """The opt-in torch resize: within one level almost everywhere; sharp edges may differ a few levels."""
    img = natural_image(size.height, size.width, seed=size.height * 7 + size.width)
    ours = anyres.get_strategy("anyres_max_9", resize_backend="torch").preprocess(img).pixel_values
    ref = _hf_pixels(hf_onevision_processor.image_processor, img)
    levels = ((ours - ref).abs() * 127.5).round()
    assert ours.shape == ref.shape
    assert (levels > 1).float().mean().item() < 1e-3
    assert levels.mean().item() < 0.1
    assert levels.max().item() <= 16


def test_pad_pixels_match_nested_multi_image_mode(hf_onevision_processor):
    img = natural_image(300, 500)
    ours = anyres.get_strategy("pad").preprocess(img).pixel_values
    ref = torch.as_tensor(
        hf_onevision_processor.image_processor([[img, img]], return_tensors="pt")["pixel_values"][0]
    )
    assert ours.shape == (1, 3, 384, 384)
    assert (ours - ref[:1]).abs().max().item() < 1e-6


@pytest.fixture(scope="module")
def hf_model():
    from transformers import LlavaOnevisionModel

    torch.manual_seed(0)
    config = REFERENCE_TOWER.hf_config(vocab_size=32, image_token_id=30, video_token_id=31)
    return LlavaOnevisionModel(config).eval()


def test_pack_matches_llava_onevision_model(hf_model):
    strategy = anyres.get_strategy("anyres_max_9")
    gen = torch.Generator().manual_seed(0)
    dim = 16
    newline = torch.randn(dim, generator=gen)
    checked_capped = 0
    for size in [*SIZES[::4], ImageSize(1080, 1920), ImageSize(3024, 4032), ImageSize(1153, 944)]:
        layout = strategy.layout(size)
        feats = torch.randn(layout.num_tiles, 729, dim, generator=gen)
        with torch.no_grad():
            ref, _lens = hf_model.pack_image_features(
                [feats], torch.tensor([list(size)]), image_newline=newline
            )
        ours = strategy.pack(feats, layout, newline)
        assert ours.shape == ref[0].shape == (layout.num_tokens, dim)
        assert (ours - ref[0]).abs().max().item() <= 1e-6, size
        checked_capped += layout.is_capped
    assert checked_capped >= 10


def test_pack_writes_into_a_caller_buffer(hf_model):
    strategy = anyres.get_strategy("anyres_max_9")
    layout = strategy.layout(ImageSize(1080, 1920))
    feats = torch.randn(layout.num_tiles, 729, 16)
    newline = torch.randn(16)
    buffer = torch.zeros(layout.num_tokens + 10, 16)
    strategy.pack(feats, layout, newline, out=buffer[5 : 5 + layout.num_tokens])
    assert torch.equal(buffer[5 : 5 + layout.num_tokens], strategy.pack(feats, layout, newline))
    assert buffer[:5].abs().sum() == 0 and buffer[-5:].abs().sum() == 0


def test_pad_pack_matches_hf_single_patch_path(hf_model):
    pad = anyres.get_strategy("pad")
    layout = pad.layout(ImageSize(300, 500))
    feats = torch.randn(1, 729, 16)
    newline = torch.randn(16)
    ref, _ = hf_model.pack_image_features([feats], torch.tensor([[300, 500]]), image_newline=newline)
    ours = pad.pack(feats, layout, newline)
    assert ours.shape == (730, 16)
    assert torch.equal(ours, ref[0])


def test_next_pack_matches_llava_next_model():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextModel

    spec = REFERENCE_TOWER.replace(image_size=336, llm_kv_heads=2)  # CLIP-L/336 geometry
    vision = CLIPVisionConfig(**spec.vision_kwargs(), projection_dim=8)
    text = LlamaConfig(**spec.llm_kwargs(vocab_size=32))
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    )
    model = LlavaNextModel(config).eval()
    strategy = anyres.get_strategy("anyres")
    newline = torch.randn(16)
    for size in SIZES[::6]:
        layout = strategy.layout(size)
        feats = torch.randn(layout.num_tiles, 577, 16)  # CLS + 24x24 as a CLIP tower returns them
        with torch.no_grad():
            ref, _ = model.pack_image_features([feats[:, 1:]], torch.tensor([list(size)]), "default", newline)
        ours = strategy.pack(feats, layout, newline)  # has_cls=True: drops CLS itself
        assert ours.shape[0] == layout.num_tokens
        assert (ours - ref[0]).abs().max().item() <= 1e-6, size
