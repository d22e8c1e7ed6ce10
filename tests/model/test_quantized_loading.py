"""Quantized inference (issue #18): ``onevision.load(path, quantization=int8|nf4)`` and ``--quantization``."""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from PIL import Image

import onevision
from onevision.errors import CheckpointError, ConfigError
from onevision.quantization import model_bytes
from onevision.testing import tiny_pipeline

#: max |logit error| / std of the logits (measured on this tiny model: see the printed figures)
TOLERANCE = {"int8": 0.15, "nf4": 0.6}
LAYER = {"int8": bnb.nn.Linear8bitLt, "nf4": bnb.nn.Linear4bit}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("quant") / "native"
    tiny_pipeline(seed=3).save(str(d))
    return d


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.new("RGB", (90, 60), (10, 120, 230))


def _logits(pipe, image):
    inputs = pipe.processor("<image>\nwhat is this?", images=[image])
    with torch.no_grad():
        return pipe.model(**inputs).logits


@pytest.mark.parametrize("method", ["int8", "nf4"])
def test_quantized_loading_generates_with_logits_close_to_the_full_model(checkpoint, image, method):
    full = onevision.load(str(checkpoint))
    quant = onevision.load(str(checkpoint), quantization=method)
    lm = quant.model.language_model
    assert isinstance(lm.model.layers[0].mlp.down_proj, LAYER[method])
    assert not isinstance(lm.lm_head, LAYER[method])  # the output head stays in the compute dtype
    assert not any(isinstance(m, LAYER[method]) for m in quant.model.vision_tower.modules())  # default skip
    assert model_bytes(quant.model) < model_bytes(full.model)
    ref, got = _logits(full, image), _logits(quant, image)
    error = ((got - ref).abs().max() / ref.std()).item()
    print(f"{method}: max |logit error| = {error:.4f} x std of the logits")
    assert 0 < error < TOLERANCE[method]
    answer = quant.generate("what?", images=[image], max_new_tokens=6)
    assert isinstance(answer, str) and answer


def test_the_vision_tower_can_be_quantized_too(checkpoint, image):
    pipe = onevision.load(str(checkpoint), quantization="int8", quantization_skip=())
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in pipe.model.vision_tower.modules())
    assert isinstance(pipe.generate("what?", images=[image], max_new_tokens=3), str)


def test_a_quantized_model_is_never_saved_as_a_full_checkpoint(checkpoint, tmp_path):
    pipe = onevision.load(str(checkpoint), quantization="nf4")
    with pytest.raises(CheckpointError, match="quantized"):
        pipe.save(str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"quantization='int4'"):
        onevision.load(str(checkpoint), quantization="int4")


def test_chat_takes_quantization(checkpoint, image, tmp_path, capsys):
    from onevision.cli import main

    image.save(tmp_path / "a.png")
    code = main(["chat", "--model", str(checkpoint), "--quantization", "int8", "--image", str(tmp_path / "a.png"),
                 "--max-new-tokens", "3", "what?"])  # fmt: skip
    assert code == 0 and capsys.readouterr().out.strip()


def test_serve_takes_quantization():
    from onevision.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "m=/some/dir", "--quantization", "nf4"])
    assert args.quantization == "nf4"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--model", "m=/some/dir", "--quantization", "int4"])


@pytest.mark.parametrize("method", ["int8", "nf4"])
def test_streamed_quantization_equals_quantizing_after_the_load(checkpoint, image, method):
    """Quantizing each layer as its weights are read gives exactly the model quantized after a full load."""
    from onevision.quantization import quantize_model

    streamed = onevision.load(str(checkpoint), quantization=method)
    after = onevision.load(str(checkpoint))
    quantize_model(after.model, method, skip=("vision",))
    after.model.eval()  # the new layers are built in training mode (int8 keeps other state when training)
    assert not any(m.training for m in streamed.model.modules())
    assert streamed.model.quantization == after.model.quantization
    assert torch.equal(_logits(streamed, image), _logits(after, image))


_QUANT_PEAK = """
import json, sys
import torch, onevision, transformers, bitsandbytes
from transformers import Qwen2ForCausalLM, SiglipVisionModel  # imports before measuring
from onevision.testing import peak_rss_reset, peak_rss
from onevision.quantization import model_bytes, quantize_model
before = peak_rss_reset()
if sys.argv[2] == "streamed":
    pipe = onevision.load(sys.argv[1], quantization="nf4", dtype=torch.float32)
else:  # what the load did before: the whole model in the compute dtype, then quantized
    pipe = onevision.load(sys.argv[1], dtype=torch.float32)
    quantize_model(pipe.model, "nf4", skip=("vision",))
print(json.dumps({"growth": peak_rss() - before, "resident": model_bytes(pipe.model)}))
"""


def test_a_quantized_load_never_holds_the_full_precision_model(tmp_path, tokenizer):
    """A ~265 MB bf16 checkpoint, mostly LLM linear layers, loaded as nf4 with fp32 compute in fresh processes:
    quantizing layer by layer as the weights are read peaks far below loading the fp32 model (~530 MB) first.
    glibc's malloc is told to return freed blocks (a fixed mmap threshold), so the peak measures what is held,
    not the allocator's retained free lists."""
    from tests.model.test_loading import _measure, _write_big_hf_checkpoint

    size = _write_big_hf_checkpoint(tmp_path, tokenizer, vocab_size=4096)
    assert size > 250e6
    malloc = {"MALLOC_MMAP_THRESHOLD_": "131072"}
    streamed = _measure(_QUANT_PEAK, str(tmp_path), "streamed", env=malloc)
    after = _measure(_QUANT_PEAK, str(tmp_path), "after", env=malloc)
    print(f"nf4 load (fp32 compute) of a {size / 1e6:.0f} MB bf16 checkpoint: peak RSS growth "
          f"{streamed['growth'] / 1e6:.0f} MB streamed vs {after['growth'] / 1e6:.0f} MB loading first; resident "
          f"{streamed['resident'] / 1e6:.0f} MB")  # fmt: skip
    assert streamed["resident"] == after["resident"] < 0.4 * size
    # the file's pages as they are read, the quantized model, one layer in fp32, slack
    assert streamed["growth"] <= size + streamed["resident"] + 0.1 * size + 64e6, (streamed, size)
    assert streamed["growth"] < 0.7 * after["growth"], (streamed, after)
