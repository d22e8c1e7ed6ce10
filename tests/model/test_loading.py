"""Loading without copies: meta build + one materialisation per weight, checked against the eager loading path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import onevision
from onevision.errors import ConfigError, InputError
from tests.model.conftest import _hf_config, chatml, hf_processor, random_image

REPO = Path(__file__).resolve().parents[2]


def _eager_load(directory: Path, fmt: str):
    """The loading path before meta builds: a real fp32 model, the whole state dict read, ``load_state_dict``."""
    from onevision.bundle import _grow_vocab, build_bundle
    from onevision.checkpoints.hf import HF_TO_NATIVE, _hf_processor_dict, hf_to_config
    from onevision.checkpoints.io import read_config, read_state_dict
    from onevision.checkpoints.mapping import remap
    from onevision.config import OneVisionConfig
    from onevision.llm import load_tokenizer
    from onevision.model import fast_init

    if fmt == "onevision":
        config, state = OneVisionConfig.from_dict(read_config(directory)), read_state_dict(directory)
    else:
        config = hf_to_config(read_config(directory), _hf_processor_dict(directory))
        state = remap(read_state_dict(directory), HF_TO_NATIVE, str(directory))
    with fast_init():
        bundle = build_bundle(config, tokenizer=load_tokenizer(str(directory)))
    assert not any(p.is_meta for p in bundle.model.parameters())
    bundle.model.load_checkpoint_state(_grow_vocab(state, bundle.model.state_dict()), str(directory))
    return bundle.model.eval()


def _inputs(pipe):
    image = random_image(150, 90, seed=3)
    return dict(pipe.processor(text=chatml("<image>\nWhat is this?"), images=[image]))


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.fixture(scope="module")
def native_dir(tmp_path_factory, hf_dir):
    d = tmp_path_factory.mktemp("native")
    onevision.load(str(hf_dir)).save(str(d))
    return d


@pytest.mark.parametrize("fmt", ["hf", "onevision"])
def test_meta_load_equals_eager_load_exactly(fmt, hf_dir, native_dir):
    d = hf_dir if fmt == "hf" else native_dir
    pipe = onevision.load(str(d))
    model = pipe.model
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    old = _eager_load(d, fmt)
    inputs = _inputs(pipe)
    assert torch.equal(_logits(model, inputs), _logits(old, inputs))
    # buffers no checkpoint stores were computed as in a normal build
    old_buffers = dict(old.named_buffers())
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, old_buffers[name]), name


def test_sharded_native_checkpoint_loads_lazily(tmp_path, native_dir):
    pipe = onevision.load(str(native_dir))
    pipe.model.save_pretrained(tmp_path, max_shard_bytes=200_000)
    pipe.processor.tokenizer.save_pretrained(str(tmp_path))
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    again = onevision.load(str(tmp_path))
    inputs = _inputs(pipe)
    assert torch.equal(_logits(again.model, inputs), _logits(pipe.model, inputs))
    model = onevision.OneVisionModel.from_pretrained(tmp_path)
    assert torch.equal(_logits(model, inputs), _logits(pipe.model, inputs))


def test_tied_embeddings_stay_tied(tokenizer, tmp_path):
    from transformers import LlavaOnevisionForConditionalGeneration

    torch.manual_seed(2)
    LlavaOnevisionForConditionalGeneration(_hf_config(tokenizer, tie=True)).save_pretrained(tmp_path)
    hf_processor(tokenizer).save_pretrained(tmp_path)
    for dtype in (None, torch.bfloat16):
        lm = onevision.load(str(tmp_path), dtype=dtype).model.language_model
        head, embed = lm.lm_head.weight, lm.get_input_embeddings().weight
        assert head is embed and head.data_ptr() == embed.data_ptr()
        assert not head.is_meta and head.dtype == (dtype or torch.float32)


def _no_fp32_copies(monkeypatch):
    """Fail on any whole-module cast (``Module.to`` / ``.float()`` / ``.half()`` all go through ``_apply``) and
    record every fp32 tensor of >= 1024 elements made by ``Tensor.to`` off the meta device."""
    made: list[tuple[int, ...]] = []

    def no_apply(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} was cast as a whole")

    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        out = real_to(self, *args, **kwargs)
        real = not out.is_meta and out.data_ptr() != self.data_ptr()
        if real and out.dtype == torch.float32 and out.numel() >= 1024:
            made.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch.nn.Module, "_apply", no_apply)
    monkeypatch.setattr(torch.Tensor, "to", to)
    return made


def test_bf16_load_allocates_no_fp32_model(tmp_path, native_dir, monkeypatch):
    reference = onevision.load(str(native_dir), dtype=torch.bfloat16)
    reference.model.save_pretrained(tmp_path)
    reference.processor.tokenizer.save_pretrained(str(tmp_path))
    made = _no_fp32_copies(monkeypatch)
    pipe = onevision.load(str(tmp_path), dtype=torch.bfloat16)  # a bf16 checkpoint, loaded as bf16
    monkeypatch.undo()
    assert made == []
    assert {p.dtype for p in pipe.model.parameters()} == {torch.bfloat16}
    # fp32 checkpoint -> bf16: each weight is cast alone, never the model
    _no_fp32_copies(monkeypatch)
    cast = onevision.load(str(native_dir), dtype=torch.bfloat16)
    monkeypatch.undo()
    for (name, a), b in zip(cast.model.named_parameters(), reference.model.parameters()):
        assert a.dtype == torch.bfloat16 and torch.equal(a, b), name


def test_device_and_device_map(native_dir):
    base = onevision.load(str(native_dir))
    inputs = _inputs(base)
    expected = _logits(base.model, inputs)
    maps = [
        {"device": "cpu"},
        {"device_map": "cpu"},
        {
            "device_map": {
                "vision_tower": "cpu",
                "projector": "cpu",
                "language_model": "cpu",
                "image_newline": "cpu",
            }
        },
        {"device_map": "auto", "max_memory": {"cpu": "2GiB"}},
    ]
    for options in maps:
        model = onevision.load(str(native_dir), **options).model
        assert model.device == torch.device("cpu")
        assert torch.equal(_logits(model, inputs), expected), options
    with pytest.raises(InputError, match="not both"):
        onevision.load(str(native_dir), device="cpu", device_map="cpu")
    with pytest.raises(ConfigError, match="no module holding"):
        onevision.load(str(native_dir), device_map={"vision_tower": "cpu"})


def test_meta_device_load_reads_no_weight(native_dir, monkeypatch):
    """``device="meta"``: the model's structure, config and processor, and not one weight read from the file."""
    from onevision.checkpoints import io

    full = onevision.load(str(native_dir))
    real_init = io._Shard.__init__

    def no_reads(self, path):
        real_init(self, path)
        self.handle = _NoTensorReads(self.handle)

    monkeypatch.setattr(io._Shard, "__init__", no_reads)
    meta = onevision.load(str(native_dir), device="meta", dtype=torch.bfloat16)
    assert {t.device.type for t in [*meta.model.parameters(), *meta.model.buffers()]} == {"meta"}
    shapes = {k: tuple(v.shape) for k, v in full.model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in meta.model.state_dict().items()} == shapes
    assert meta.model.language_model.dtype == torch.bfloat16
    assert meta.processor.config == full.processor.config


class _NoTensorReads:
    def __init__(self, handle):
        self.handle = handle

    def get_tensor(self, key):
        raise AssertionError(f"a meta-device load read {key}")

    def __getattr__(self, name):
        return getattr(self.handle, name)


def _disk_map(model) -> dict[str, str]:
    """Vision tower, projector and the first decoder block in memory; every other block and the head on disk."""
    n = len(model.language_model.model.layers)
    placement = {"vision_tower": "cpu", "projector": "cpu", "image_newline": "cpu"}
    placement.update({"language_model.model.embed_tokens": "cpu", "language_model.model.norm": "cpu"})
    placement["language_model.model.rotary_emb"] = "cpu"
    placement["language_model.model.layers.0"] = "cpu"
    placement.update({f"language_model.model.layers.{i}": "disk" for i in range(1, n)})
    placement["language_model.lm_head"] = "disk"
    return placement


def _disk_params(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.is_meta]


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_disk_offload_reads_safetensors_in_place(native_dir, tmp_path, dtype):
    base = onevision.load(str(native_dir), dtype=dtype)
    inputs = _inputs(base)
    placement = _disk_map(base.model)
    pipe = onevision.load(str(native_dir), dtype=dtype, device_map=placement)
    off = _disk_params(pipe.model)
    # the offloaded blocks hold no memory: their parameters stay on the meta device between forwards
    assert off and all(n.startswith(("language_model.model.layers.1", "language_model.lm_head")) for n in off)
    assert torch.equal(_logits(pipe.model, inputs), _logits(base.model, inputs))
    # generation runs through the hooks too, with the same tokens
    ids = pipe.model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(ids, base.model.generate(**inputs, max_new_tokens=4, do_sample=False))
    # safetensors weights are read where they are: nothing was written anywhere
    assert list(tmp_path.iterdir()) == []


def test_disk_offload_auto_map_over_max_memory(native_dir):
    base = onevision.load(str(native_dir))
    inputs = _inputs(base)
    size = sum(p.numel() * p.element_size() for p in base.model.parameters())
    pipe = onevision.load(str(native_dir), device_map="auto", max_memory={"cpu": size // 2})
    assert _disk_params(pipe.model), "half the memory must put some modules on disk"
    assert torch.equal(_logits(pipe.model, inputs), _logits(base.model, inputs))


def test_disk_offload_of_bin_weights_needs_a_folder_of_ours(native_dir, tmp_path):
    from safetensors.torch import load_file

    base = onevision.load(str(native_dir))
    inputs = _inputs(base)
    binary = tmp_path / "bin"
    base.save(str(binary))
    state = {}
    for f in sorted(binary.glob("*.safetensors")):
        state.update(load_file(str(f)))
        f.unlink()
    torch.save(state, binary / "pytorch_model.bin")  # torch's zip format: memory-mapped on load
    placement = _disk_map(base.model)
    with pytest.raises(ConfigError, match="offload_folder"):
        onevision.load(str(binary), device_map=placement)
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        onevision.load(str(binary), device_map=placement, offload_folder=str(user))
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    folder = tmp_path / "offload"
    for _ in range(2):  # a folder written before is ours to reuse
        pipe = onevision.load(str(binary), device_map=placement, offload_folder=str(folder))
        assert torch.equal(_logits(pipe.model, inputs), _logits(base.model, inputs))
    index = json.loads((folder / "index.json").read_text())
    assert set(index) == set(_disk_params(pipe.model))
    assert all((folder / f"{name}.dat").is_file() for name in index)


def test_attn_implementation(hf_dir):
    pipe = onevision.load(str(hf_dir), attn_implementation="eager")
    assert pipe.model.language_model.config._attn_implementation == "eager"
    assert pipe.model.vision_tower.model.config._attn_implementation == "eager"
    inputs = _inputs(pipe)
    sdpa = onevision.load(str(hf_dir), attn_implementation="sdpa")
    assert (_logits(pipe.model, inputs) - _logits(sdpa.model, inputs)).abs().max() <= 1e-4


def _measure(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run ``script`` in a fresh interpreter (repository on the path, one thread, offline, plus ``env``); its
    last stdout line is a JSON record."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "PATH": "/usr/bin:/bin",
            **(env or {}),
        },
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write_big_hf_checkpoint(directory, tokenizer, *, tied: bool = True, vocab_size: int = 65536) -> int:
    """A ~280 MB random bf16 HF checkpoint (wide LLM; large vocabulary, or more layers with a small one); returns
    its weight bytes."""
    from onevision.testing import TINY, random_hf_checkpoint

    layers = 8 if vocab_size >= 65536 else 14
    spec = TINY.replace(vision_width=256, vision_heads=4, llm_width=1024, llm_layers=layers, llm_heads=8)
    config = spec.replace(tie_word_embeddings=tied).hf_config(
        vocab_size=vocab_size,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
    )
    random_hf_checkpoint(directory, config, tokenizer, dtype=torch.bfloat16)
    return sum(p.stat().st_size for p in Path(directory).glob("*.safetensors"))


_PEAK = """
import json, sys
import torch, onevision, transformers
from transformers import Qwen2ForCausalLM, SiglipVisionModel  # imports before measuring
from onevision.testing import peak_rss_reset, peak_rss
before = peak_rss_reset()
pipe = onevision.load(sys.argv[1], dtype=torch.bfloat16)
n = sum(p.numel() * p.element_size() for p in pipe.model.parameters())
print(json.dumps({"growth": peak_rss() - before, "params": n}))
"""


def test_peak_memory_stays_near_checkpoint_size(tmp_path, tokenizer):
    size = _write_big_hf_checkpoint(tmp_path, tokenizer)
    assert size > 250e6
    result = _measure(_PEAK, str(tmp_path))
    assert abs(result["params"] - size) < 0.01 * size  # bf16 params, the tied head counted once
    # the eager path needed ~3x (fp32 build + cast + full state dict); here: the weights, one tensor, slack
    assert result["growth"] <= 1.15 * size + 96e6, (result, size)


_OFFLOADED = """
import json, sys
import torch, onevision, transformers
from transformers import Qwen2ForCausalLM, SiglipVisionModel  # imports before measuring
from onevision.testing import peak_rss_reset, peak_rss
before = peak_rss_reset()
placement = {"vision_tower": "cpu", "projector": "cpu", "image_newline": "cpu", "language_model": "disk"}
placement["language_model.model.embed_tokens"] = "cpu"
pipe = onevision.load(sys.argv[1], device_map=placement)
resident = sum(p.numel() * p.element_size() for p in pipe.model.parameters() if not p.is_meta)
print(json.dumps({"growth": peak_rss() - before, "resident": resident}))
"""

_BIN = """
import json, sys
import torch
from onevision.checkpoints.io import open_state_dict
from onevision.testing import peak_rss_reset, peak_rss
before = peak_rss_reset()
state = open_state_dict(sys.argv[1])
print(json.dumps({"growth": peak_rss() - before, "tensors": len(state)}))
"""


def test_disk_offload_keeps_only_the_resident_weights_in_memory(tmp_path, tokenizer):
    size = _write_big_hf_checkpoint(tmp_path, tokenizer, tied=False)
    result = _measure(_OFFLOADED, str(tmp_path))
    assert result["resident"] < 0.6 * size  # the decoder blocks and the head stay on disk
    assert result["growth"] <= 1.15 * result["resident"] + 96e6, (result, size)


def test_bin_checkpoints_are_memory_mapped(tmp_path, tokenizer):
    from safetensors.torch import load_file

    big = tmp_path / "big"
    size = _write_big_hf_checkpoint(big, tokenizer)
    state = {}
    for f in sorted(big.glob("*.safetensors")):
        state.update(load_file(str(f)))
    binary = tmp_path / "bin"
    binary.mkdir()
    torch.save(state, binary / "pytorch_model.bin")
    del state
    result = _measure(_BIN, str(binary))
    assert result["tensors"] > 10
    assert result["growth"] <= 0.1 * size, (result, size)  # read whole, it would be the full size


def test_mapped_weights_are_private(tmp_path, native_dir):
    """Weights are views of the memory-mapped files: saving over those files and writing the weights in place
    (training) must leave both sides intact."""
    import shutil

    shutil.copytree(native_dir, tmp_path / "m")
    pipe = onevision.load(str(tmp_path / "m"))
    inputs = _inputs(pipe)
    before = _logits(pipe.model, inputs)
    pipe.save(str(tmp_path / "m"))  # replaces the very files the weights are mapped from
    assert torch.equal(_logits(pipe.model, inputs), before)
    weight = pipe.model.language_model.get_input_embeddings().weight
    with torch.no_grad():
        weight.add_(1.0)
    stored = onevision.load(str(tmp_path / "m")).model.language_model.get_input_embeddings().weight
    assert torch.equal(stored + 1.0, weight)


_CONVERT_PEAK = """
import json, sys
import torch, onevision, transformers
from transformers import Qwen2ForCausalLM, SiglipVisionModel  # imports before measuring
from onevision.checkpoints import convert
from onevision.testing import peak_rss_reset, peak_rss
before = peak_rss_reset()
convert(sys.argv[1], sys.argv[2], to=sys.argv[3])
print(json.dumps({"growth": peak_rss() - before}))
"""


@pytest.mark.parametrize("target", ["onevision", "hf"])
def test_convert_never_holds_two_copies(tmp_path, tokenizer, target):
    """Converting a 280 MB checkpoint grows RSS by about one checkpoint (mapped weights read once while
    written), never by two full copies."""
    src = tmp_path / "src"
    size = _write_big_hf_checkpoint(src, tokenizer)
    growth = _measure(_CONVERT_PEAK, str(src), str(tmp_path / "dst"), target)["growth"]
    assert growth <= 1.15 * size + 96e6, (growth, size)  # two copies would be >= 2x
    assert sum(p.stat().st_size for p in (tmp_path / "dst").glob("*.safetensors")) > 0.9 * size


_FROM_CONFIG_PEAK = """
import json, sys
import torch, onevision, transformers
from transformers import Qwen2ForCausalLM, SiglipVisionModel  # imports before measuring
from onevision.config import LLMConfig, OneVisionConfig, ProjectorConfig, VisionConfig
from onevision.testing import peak_rss, peak_rss_reset, tiny_tokenizer
tokenizer = tiny_tokenizer()
config = OneVisionConfig(
    vision=VisionConfig(backend="transformers", arch="siglip", pretrained=sys.argv[1] + "/vision"),
    projector=ProjectorConfig("mlp2x_gelu"),
    llm=LLMConfig(model_type="qwen2", pretrained=sys.argv[1] + "/llm"),
)
before = peak_rss_reset()
pipe = onevision.from_config(config, tokenizer=tokenizer, dtype=torch.bfloat16)
dtypes = sorted({str(p.dtype) for p in pipe.model.parameters()})
print(json.dumps({"growth": peak_rss() - before, "dtypes": dtypes}))
"""


def test_from_config_loads_pretrained_components_without_an_fp32_detour(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    vision = SiglipVisionConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=64,
        patch_size=8,
    )
    SiglipVisionModel(vision).to(torch.bfloat16).save_pretrained(tmp_path / "vision")
    llm = Qwen2Config(
        vocab_size=65536, hidden_size=1024, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    Qwen2ForCausalLM(llm).to(torch.bfloat16).save_pretrained(tmp_path / "llm")
    size = sum(p.stat().st_size for p in tmp_path.rglob("*.safetensors"))
    assert size > 250e6
    result = _measure(_FROM_CONFIG_PEAK, str(tmp_path))
    assert result["dtypes"] == ["torch.bfloat16"]
    assert result["growth"] <= 1.15 * size + 96e6, (result, size)  # an fp32 build + cast would be >= 2x
