"""Session fixtures: one tiny HF ``LlavaOnevisionForConditionalGeneration`` (the parity oracle) built offline from
configs with the §5.6 geometry, saved with ``save_pretrained``, and the onevision pipeline loaded from it."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TILE, PATCH = 64, 8
PINPOINTS = [[TILE * i, TILE * j] for i in range(1, 7) for j in range(1, 7)]


def random_image(width: int, height: int, seed: int) -> Image.Image:
    """A smooth random RGB image (gradients + noise), so resampling differences stay realistic."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack(
        [
            xx * 255 / max(width - 1, 1),
            yy * 255 / max(height - 1, 1),
            (xx + yy) * 127 / max(width + height - 2, 1),
        ],
        axis=-1,
    )
    noisy = base + rng.normal(0, 25, size=base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def random_frames(num: int, height: int, width: int, seed: int) -> np.ndarray:
    return (np.random.RandomState(seed).rand(num, height, width, 3) * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tokenizer():
    from onevision.testing import tiny_tokenizer

    return tiny_tokenizer()


def _hf_config(tokenizer, *, vision_layers: int = 2, tie: bool = False):
    from onevision.testing import tiny_hf_config

    return tiny_hf_config(tokenizer, vision_layers=vision_layers, tie_word_embeddings=tie)


def hf_processor(tokenizer, backend: str = "pil"):
    """The HF processor for the tiny geometry (PIL image backend: pixel-exact with anyres)."""
    from transformers import (
        LlavaOnevisionImageProcessor,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    common = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "size": {"height": TILE, "width": TILE}}
    cls = LlavaOnevisionImageProcessorPil if backend == "pil" else LlavaOnevisionImageProcessor
    return LlavaOnevisionProcessor(
        image_processor=cls(**common, image_grid_pinpoints=PINPOINTS),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(**common),
        num_image_tokens=(TILE // PATCH) ** 2,
        vision_feature_select_strategy="full",
    )


@pytest.fixture(scope="session")
def hf_model(tokenizer):
    from transformers import LlavaOnevisionForConditionalGeneration

    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(_hf_config(tokenizer)).eval()
    with torch.no_grad():  # non-trivial newline and norm weights, so a wrong placement cannot hide
        model.model.image_newline.normal_(0, 1.0)
    return model


@pytest.fixture(scope="session")
def hf_proc(tokenizer):
    return hf_processor(tokenizer, "pil")


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory, hf_model, tokenizer) -> Path:
    d = tmp_path_factory.mktemp("hf-tiny")
    hf_model.save_pretrained(d)
    hf_processor(tokenizer, "torchvision").save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def pipe(hf_dir):
    import onevision

    return onevision.load(str(hf_dir))


@pytest.fixture(scope="session")
def image_a() -> Image.Image:
    return random_image(200, 130, seed=1)  # 13 tiles, 724 tokens (algorithms reference §5.6)


@pytest.fixture(scope="session")
def image_b() -> Image.Image:
    return random_image(60, 90, seed=2)


@pytest.fixture(scope="session")
def frames8() -> np.ndarray:
    return random_frames(8, 48, 80, seed=3)


def chatml(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
