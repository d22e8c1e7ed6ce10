"""Checkpoints: native round trip, every HF key layout, key-mismatch errors, sharding, conversion CLI."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

import onevision
from onevision.checkpoints import read_state_dict, save_native
from onevision.errors import CheckpointError, ConfigError, KeyMismatchError
from onevision.testing import tiny_pipeline
from tests.model.conftest import _hf_config, chatml


def _logits(pipe, image):
    inputs = pipe.processor(text=chatml("<image>\nWhat?"), images=[image])
    with torch.no_grad():
        return pipe.model(**inputs).logits


@pytest.fixture(scope="module")
def native_dir(pipe, tmp_path_factory):
    d = tmp_path_factory.mktemp("native")
    save_native(pipe, d)
    return d


def test_native_round_trip_is_exact_and_pickle_free(pipe, native_dir, image_a):
    files = {p.name for p in native_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl", ".pth")) for name in files)
    config = json.loads((native_dir / "config.json").read_text())
    assert config["format"] == "onevision" and config["vision"]["pretrained"] is None
    assert config["processor"]["visual"]["image"]["strategy"] == "anyres_max_9"
    assert config["processor"]["visual"]["tile_size"] == 64
    assert onevision.detect_format(str(native_dir)) == "onevision"
    from onevision.processor import OneVisionProcessor

    standalone = OneVisionProcessor.from_pretrained(str(native_dir))  # no model needed to count or encode
    assert standalone.max_length == pipe.processor.max_length == 8192  # the budget is stored resolved
    assert dataclasses.replace(standalone.config, max_length=None) == pipe.processor.config
    loaded = onevision.load(str(native_dir))
    state, original = loaded.model.state_dict(), pipe.model.state_dict()
    assert state.keys() == original.keys() and all(torch.equal(state[k], original[k]) for k in state)
    assert torch.equal(_logits(loaded, image_a), _logits(pipe, image_a))


def test_sharded_save_loads(pipe, tmp_path, image_a):
    save_native(pipe, tmp_path, max_shard_bytes=100_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert torch.equal(_logits(onevision.load(str(tmp_path)), image_a), _logits(pipe, image_a))


def test_a_folder_reads_the_files_its_index_lists_and_nothing_else(tmp_path):
    save_file({"a": torch.zeros(2)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.ones(3)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    save_file({"stray": torch.ones(1)}, str(tmp_path / "optimizer_backup.safetensors"))
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert sorted(read_state_dict(tmp_path)) == ["a", "b"]
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing: \['model-00002-of-00002.safetensors'\]"):
        read_state_dict(tmp_path)


def test_several_weight_files_without_an_index_are_refused(tmp_path):
    save_file({"a": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    save_file({"a": torch.ones(2)}, str(tmp_path / "model_old.safetensors"))
    with pytest.raises(CheckpointError, match=r"2 \*\.safetensors files \(model\.safetensors, model_old"):
        read_state_dict(tmp_path)
    (tmp_path / "model_old.safetensors").unlink()
    assert torch.equal(read_state_dict(tmp_path)["a"], torch.zeros(2))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no weights"):
        read_state_dict(empty)


def _rewrite_keys(src_dir, dst_dir, rule):
    import shutil

    shutil.copytree(src_dir, dst_dir)
    state = load_file(str(src_dir / "model.safetensors"))
    save_file(
        {rule(k): v for k, v in state.items()}, str(dst_dir / "model.safetensors"), metadata={"format": "pt"}
    )
    return dst_dir


def _legacy(key):  # layout (1): the llava-hf conversion script's names
    return (
        "vision_tower.vision_model." + key[len("vision_tower.") :] if key.startswith("vision_tower.") else key
    )


def _in_memory(key):  # layout (3): the names of the model's own state_dict
    for old, new in (
        ("language_model.model.", "model.language_model."),
        ("language_model.lm_head.", "lm_head."),
        ("vision_tower.", "model.vision_tower."),
        ("multi_modal_projector.", "model.multi_modal_projector."),
        ("image_newline", "model.image_newline"),
    ):
        if key.startswith(old):
            return new + key[len(old) :]
    raise AssertionError(key)


@pytest.mark.parametrize("layout", ["legacy_hub", "in_memory"])
def test_every_hf_key_layout_loads(layout, hf_dir, hf_model, tmp_path, pipe, image_a):
    from transformers import LlavaOnevisionForConditionalGeneration

    rule = {"legacy_hub": _legacy, "in_memory": _in_memory}[layout]
    d = _rewrite_keys(hf_dir, tmp_path / layout, rule)
    keys = load_file(str(d / "model.safetensors")).keys()
    assert any(
        k.startswith({"legacy_hub": "vision_tower.vision_model.", "in_memory": "model.vision_tower."}[layout])
        for k in keys
    )
    ours = onevision.load(str(d))
    assert torch.equal(_logits(ours, image_a), _logits(pipe, image_a))
    theirs = LlavaOnevisionForConditionalGeneration.from_pretrained(d).eval()  # transformers loads it too
    assert all(
        torch.equal(a, b) for a, b in zip(theirs.state_dict().values(), hf_model.state_dict().values())
    )


def test_missing_and_unexpected_weights_are_listed(hf_dir, tmp_path):
    state = load_file(str(hf_dir / "model.safetensors"))
    import shutil

    d = tmp_path / "broken"
    shutil.copytree(hf_dir, d)
    state.pop("multi_modal_projector.linear_2.bias")
    state["language_model.model.layers.0.extra.weight"] = torch.zeros(2)
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(KeyMismatchError) as err:
        onevision.load(str(d))
    assert err.value.missing == ["projector.2.bias"]
    assert err.value.unexpected == ["language_model.model.layers.0.extra.weight"]
    assert "projector.2.bias" in str(err.value) and "extra.weight" in str(err.value)
    state["mystery.weight"] = torch.zeros(1)
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(KeyMismatchError, match=r"mystery\.weight"):
        onevision.load(str(d))


def test_tied_embeddings_round_trip(tokenizer, tmp_path, image_a):
    from transformers import LlavaOnevisionForConditionalGeneration

    from onevision.checkpoints import export_hf
    from tests.model.conftest import hf_processor

    torch.manual_seed(1)
    hf = LlavaOnevisionForConditionalGeneration(_hf_config(tokenizer, tie=True)).eval()
    hf.save_pretrained(tmp_path / "hf")
    hf_processor(tokenizer).save_pretrained(tmp_path / "hf")
    assert "language_model.lm_head.weight" not in load_file(str(tmp_path / "hf" / "model.safetensors"))
    pipe = onevision.load(str(tmp_path / "hf"))
    lm = pipe.model.language_model
    assert lm.lm_head.weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()
    inputs = hf_processor(tokenizer)(text=chatml("<image>\nWhat?"), images=[image_a], return_tensors="pt")
    with torch.no_grad():
        ref = hf(**inputs).logits
        assert (_logits(pipe, image_a) - ref).abs().max() <= 1e-5
    save_native(pipe, tmp_path / "native")
    assert "language_model.lm_head.weight" not in read_state_dict(tmp_path / "native")
    export_hf(onevision.load(str(tmp_path / "native")), tmp_path / "back")
    back = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert (back(**inputs).logits - ref).abs().max() <= 1e-5


def test_bin_weights_load_with_weights_only(hf_dir, tmp_path, pipe, image_a):
    import shutil

    d = tmp_path / "bin"
    shutil.copytree(hf_dir, d)
    state = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    torch.save(state, d / "pytorch_model.bin")
    assert torch.equal(_logits(onevision.load(str(d)), image_a), _logits(pipe, image_a))
    torch.save({"weights": state, "evil": object()}, d / "pytorch_model.bin")
    with pytest.raises(Exception, match=r"(?i)weights_only|unsupported|global"):
        onevision.load(str(d))


def test_unknown_formats_and_options_are_rejected(tmp_path, hf_dir):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="neither"):
        onevision.load(str(tmp_path))
    with pytest.raises(ConfigError, match=re.escape("['rounding'] do not apply to hf")):
        onevision.load(str(hf_dir), rounding="llava")
    with pytest.raises(CheckpointError, match="not a local directory"):
        onevision.load(str(tmp_path / "missing" / "dir"))


def test_original_tokenizer_gets_media_tokens_and_the_vocab_grows(hf_dir, hf_model, tmp_path):
    """An original checkpoint whose tokenizer has no <image>/<video> (the reference uses -200) and a full vocab."""
    from onevision.testing import tiny_tokenizer
    from tests.model.test_parity_hf import write_original_checkpoint

    plain = tiny_tokenizer(media_tokens=False)
    vocab = hf_model.config.text_config.vocab_size
    assert "<image>" not in plain.get_vocab() and len(plain) == vocab
    out = write_original_checkpoint(hf_dir, hf_model, plain, tmp_path / "orig")
    pipe = onevision.load(str(out))
    assert pipe.processor.image_token_id == vocab and pipe.processor.video_token_id == vocab + 1
    assert pipe.model.language_model.get_input_embeddings().weight.shape[0] == vocab + 2
    assert pipe.model.config.image_token_id == vocab
    inputs = pipe.processor(text=chatml("Hello there"))
    with torch.no_grad():
        ours = pipe.model(**inputs).logits
        ref = hf_model(input_ids=inputs.input_ids).logits
    assert (ours[..., :vocab] - ref).abs().max() <= 1e-5
    save_native(pipe, tmp_path / "native")  # the grown model saves and reloads as a native checkpoint
    again = onevision.load(str(tmp_path / "native"))
    assert again.processor.image_token_id == vocab
    with torch.no_grad():
        assert torch.equal(again.model(**inputs).logits, pipe.model(**inputs).logits)


def test_convert_cli_round_trip(hf_dir, tmp_path, pipe, image_a, capsys):
    from transformers import LlavaOnevisionForConditionalGeneration

    from onevision.cli import main

    assert main(["convert", str(hf_dir), str(tmp_path / "ov"), "--to", "onevision"]) == 0
    assert "wrote onevision" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "ov"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    back = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path / "hf")
    original = load_file(str(hf_dir / "model.safetensors"))
    exported = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert original.keys() == exported.keys() and all(torch.equal(original[k], exported[k]) for k in original)
    assert back.config.image_token_index == pipe.processor.image_token_id
    assert main(["convert", str(hf_dir), str(hf_dir)]) == 2
    assert "same directory" in capsys.readouterr().err


def test_model_save_pretrained_from_pretrained_round_trip(tmp_path, image_a, frames8):
    """``OneVisionModel.save_pretrained`` / ``from_pretrained``: model only (config + safetensors), exact, offline."""
    from onevision.model import OneVisionModel

    pipe = tiny_pipeline(seed=3)
    model, proc = pipe.model, pipe.processor
    with torch.no_grad():
        model.image_newline.normal_()  # not the init value, so a missed tensor cannot hide
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors"}
    loaded = OneVisionModel.from_pretrained(tmp_path / "m")
    assert type(loaded) is OneVisionModel and not loaded.training
    assert loaded.config.processor == model.config.processor
    loaded.save_pretrained(tmp_path / "again")  # save -> load -> save: the same config.json
    assert (tmp_path / "again" / "config.json").read_text() == (tmp_path / "m" / "config.json").read_text()
    assert (loaded.image_token_id, loaded.video_token_id) == (model.image_token_id, model.video_token_id)
    state, original = loaded.state_dict(), model.state_dict()
    assert state.keys() == original.keys() and all(torch.equal(state[k], original[k]) for k in state)
    inputs = proc(
        text=chatml("<image>\n<video>\nWhat?"), images=[image_a], videos=[frames8], padding_side="left"
    )
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)
    # dtype is kept (and can be overridden); a whole native checkpoint loads too; other formats are refused
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16", max_shard_bytes=100_000)
    assert (tmp_path / "bf16" / "model.safetensors.index.json").is_file()
    assert OneVisionModel.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16
    assert OneVisionModel.from_pretrained(tmp_path / "bf16", dtype=torch.float32).dtype == torch.float32
    model.to(torch.float32)
    pipe.save(str(tmp_path / "full"))
    full, now = OneVisionModel.from_pretrained(tmp_path / "full").state_dict(), model.state_dict()
    assert full.keys() == now.keys() and all(torch.equal(full[k], now[k]) for k in now)


def test_model_from_pretrained_refuses_other_formats(hf_dir):
    from onevision.model import OneVisionModel

    with pytest.raises(CheckpointError, match=r"onevision\.load"):
        OneVisionModel.from_pretrained(hf_dir)
