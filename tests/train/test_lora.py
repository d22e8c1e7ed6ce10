"""LoRA / QLoRA stages (issue #18): recipes, the adapter directory, loading, merging, curriculum, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import onevision
from onevision.checkpoints.adapter import ADAPTER_WEIGHTS, MANIFEST, TRAINED_WEIGHTS
from onevision.errors import CheckpointError, ComponentError, RecipeError
from onevision.train.engine import train
from onevision.train.recipe import load_recipe

from .conftest import data_overrides


def _recipe(name: str, out: Path, tiny_data: Path, *extra: str):
    return load_recipe(
        name, [f"output_dir={out}", "logging.progress=false", *data_overrides(tiny_data), *extra]
    )


@pytest.fixture(scope="module")
def lora_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "stage"
    result = train(_recipe("lora/tiny", out, tiny_data))
    return out, result


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.new("RGB", (70, 50), (200, 40, 90))


def _logits(pipe, image):
    inputs = pipe.processor("<image>\nwhat is this?", images=[image])
    with torch.no_grad():
        return pipe.model(**inputs).logits


def test_a_lora_stage_from_a_recipe_writes_a_small_adapter_directory(lora_run, capsys):
    out, result = lora_run
    assert result.steps == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", ADAPTER_WEIGHTS, TRAINED_WEIGHTS, MANIFEST, "stage.json"} <= files
    assert "model.safetensors" not in files and "config.json" not in files  # an adapter, not a full model
    stage = json.loads((out / "stage.json").read_text())
    assert stage["steps"] == 3 and stage["name"] == "tiny-lora"
    manifest = json.loads((out / MANIFEST).read_text())
    base = Path(manifest["base"]["path"])
    assert base == (out / "base").resolve() and len(manifest["base"]["sha256"]) == 64
    adapter_bytes = (out / ADAPTER_WEIGHTS).stat().st_size + (out / TRAINED_WEIGHTS).stat().st_size
    assert adapter_bytes < 0.2 * (base / "model.safetensors").stat().st_size
    lora = load_file(str(out / ADAPTER_WEIGHTS))
    assert lora and all(".lora_A." in k or ".lora_B." in k for k in lora)
    assert all(k.startswith("language_model.") for k in lora)  # only the LLM trains LoRA in this recipe
    assert any(
        bool(v.abs().sum() > 0) for k, v in lora.items() if ".lora_B." in k
    )  # B left zero-init: trained
    trained = load_file(str(out / TRAINED_WEIGHTS))
    assert {k.split(".")[0] for k in trained} == {"projector", "image_newline"}


def test_the_parameter_table_shows_lora_parameters_per_component(tiny_data, tmp_path):
    from onevision.lora import lora_parameters
    from onevision.train.build import build_model
    from onevision.train.optim import apply_trainable, build_param_groups, format_table

    recipe = _recipe(
        "lora/tiny",
        tmp_path / "t",
        tiny_data,
        "components.vision.trainable=lora",
        "components.vision.lora.r=4",
        "components.vision.lora.dropout=0",
    )
    model = build_model(recipe)
    rows = apply_trainable(
        model.component_parameters(),
        recipe,
        all_parameters=list(model.parameters()),
        lora=lora_parameters(model),
    )
    by = {r.component: r for r in rows}
    assert by["llm"].mode == "lora" and 0 < by["llm"].trained < by["llm"].params / 5
    assert by["vision"].mode == "lora" and 0 < by["vision"].trained < by["vision"].params
    assert by["projector"].trained == by["projector"].params
    lines = format_table(rows).splitlines()
    llm = next(line for line in lines if line.startswith("llm"))
    assert " lora " in llm and f"{by['llm'].trained:,}" in llm
    groups = {g["name"]: g for g in build_param_groups(model.component_parameters(), recipe)}
    assert groups["vision"]["lr"] == pytest.approx(0.2 * groups["llm"]["lr"])  # the 5x lower vision LR stays
    trained_ids = {id(p) for g in groups.values() for p in g["params"]}
    trained = [n for n, p in model.named_parameters() if id(p) in trained_ids]
    assert trained == [n for n, p in model.named_parameters() if p.requires_grad]
    llm_trained = [n for n in trained if n.startswith("language_model.")]
    assert llm_trained and all(".lora_A." in n or ".lora_B." in n for n in llm_trained)
    assert model.language_model.model.embed_tokens.weight.requires_grad is False


def test_adapter_load_equals_merged_logits_and_differs_from_the_base(lora_run, image):
    out, _ = lora_run
    adapter = onevision.load(str(out))
    merged = onevision.load(str(out), merge=True)
    base = onevision.load(str(out / "base"))
    from peft.tuners.tuners_utils import BaseTunerLayer

    assert any(isinstance(m, BaseTunerLayer) for m in adapter.model.modules())
    assert not any(isinstance(m, BaseTunerLayer) for m in merged.model.modules())
    la, lm, lb = _logits(adapter, image), _logits(merged, image), _logits(base, image)
    assert (la - lm).abs().max().item() <= 1e-5
    assert (la - lb).abs().max().item() > 1e-3
    assert isinstance(adapter.generate("what?", images=[image], max_new_tokens=4), str)


def test_merge_never_changes_a_weight_the_adapter_did_not_train(lora_run, tmp_path, capsys):
    from onevision.cli import main

    out, _ = lora_run
    assert main(["merge", str(out), str(tmp_path / "merged")]) == 0
    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    base = load_file(str(out / "base" / "model.safetensors"))
    assert merged.keys() == base.keys()
    targets = set(json.loads((out / "adapter_config.json").read_text())["target_modules"])
    trained = set(load_file(str(out / TRAINED_WEIGHTS)))
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed == {f"{t}.weight" for t in targets} | trained
    vision = [k for k in base if k.startswith("vision_tower.")]
    assert vision and all(torch.equal(base[k], merged[k]) for k in vision)  # frozen tower bit-identical
    embed = "language_model.model.embed_tokens.weight"
    assert torch.equal(base[embed], merged[embed])
    assert (tmp_path / "merged" / "stage.json").is_file()  # the merged model is a stage, too
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("keep me")
    capsys.readouterr()
    assert main(["merge", str(out), str(tmp_path / "busy")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "busy" in err[0] and "not an empty directory" in err[0]
    assert (tmp_path / "busy" / "x.txt").read_text() == "keep me"


def test_the_merged_model_exports_to_hf_and_loads_in_plain_transformers(lora_run, tmp_path, image):
    from transformers import LlavaOnevisionForConditionalGeneration

    out, _ = lora_run
    from onevision.checkpoints import convert

    assert convert(str(out), str(tmp_path / "hf"), to="hf") == tmp_path / "hf"
    merged = onevision.load(str(out), merge=True)
    theirs = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    inputs = merged.processor("<image>\nwhat is this?", images=[image])
    layout = inputs["image_layouts"][0]
    with torch.no_grad():
        ours = merged.model(**inputs).logits
        hf = theirs(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"].unsqueeze(0),
            image_sizes=torch.tensor([[layout.image_size.height, layout.image_size.width]]),
        ).logits
    assert (ours - hf).abs().max().item() <= 1e-5


def test_the_next_stage_starts_from_an_adapter_stage_merged_on_the_fly(lora_run, tiny_data, tmp_path, image):
    from onevision.train.build import build_model

    out, _ = lora_run
    recipe = _recipe("tiny/stage2_si", tmp_path / "next", tiny_data, f"init_from={out}")
    model = build_model(recipe)
    assert getattr(model, "lora", None) is None
    merged = onevision.load(str(out), merge=True).model.state_dict()
    assert all(torch.equal(v, merged[k]) for k, v in model.state_dict().items())


def test_qlora_trains_on_cpu_and_its_adapter_loads(tiny_data, tmp_path, image):
    import bitsandbytes as bnb

    from onevision.train.build import build_model

    recipe = _recipe("lora/tiny_qlora", tmp_path / "q", tiny_data)
    model = build_model(recipe)
    layer = model.language_model.model.layers[0].self_attn.q_proj
    assert (
        isinstance(layer.base_layer, bnb.nn.Linear4bit)
        and layer.lora_A["default"].weight.dtype == torch.float32
    )
    assert not any(
        isinstance(m, bnb.nn.Linear4bit) for m in model.vision_tower.modules()
    )  # quantization_skip
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.projector.modules())  # trained fully
    result = train(recipe)
    assert result.steps == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    lora = load_file(str(tmp_path / "q" / ADAPTER_WEIGHTS))
    assert any(bool(v.abs().sum() > 0) for k, v in lora.items() if ".lora_B." in k)
    pipe = onevision.load(str(tmp_path / "q"), quantization="nf4")
    assert isinstance(
        pipe.model.language_model.model.layers[0].self_attn.q_proj.base_layer, bnb.nn.Linear4bit
    )
    assert isinstance(pipe.generate("what?", images=[image], max_new_tokens=4), str)


def test_a_qlora_stage_on_a_checkpoint_quantizes_its_layers_as_they_are_read(
    tiny_data, tmp_path, monkeypatch
):
    """``init_from`` a native stage: the QLoRA build loads it quantized layer by layer (the after-load
    quantization is never called) and gets the same quantized base as loading in full precision first."""
    import onevision.quantization as quantization
    from onevision.testing import tiny_pipeline
    from onevision.train import lora_stage
    from onevision.train.build import build_model
    from onevision.train.lora_recipe import quantization_skip

    stage = tmp_path / "stage1"
    tiny_pipeline(seed=3).save(str(stage))
    (stage / "stage.json").write_text("{}")
    recipe = _recipe("lora/tiny_qlora", tmp_path / "q", tiny_data, f"init_from={stage}")

    def after_load(*args, **kwargs):
        raise AssertionError("quantized after loading")

    with monkeypatch.context() as patch:
        patch.setattr(quantization, "quantize_model", after_load)
        streamed = build_model(recipe)
    assert streamed.quantization.method == "nf4" and streamed.quantization.layers > 0
    first = onevision.load(str(stage))
    lora_stage.prepare_model(recipe, first.model, first.processor, stage)  # loads, then quantizes
    assert first.model.quantization.layers == streamed.quantization.layers
    assert set(quantization_skip(recipe)) >= {"vision", "projector"}
    a, b = streamed.state_dict(), first.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        if ".lora_" not in key:  # the adapters start from their own random draws
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_dry_run_of_a_lora_recipe_writes_nothing(tiny_data, tmp_path):
    from onevision.train.dryrun import dry_run_report

    text, error = dry_run_report(_recipe("lora/tiny", tmp_path / "dry", tiny_data))
    assert error is None and "lora" in text
    assert not (tmp_path / "dry").exists()


# ----------------------------------------------------------------------------------------------------------------
# bad input: one line naming the field or file


def test_rank_zero_and_lora_on_the_newline_are_recipe_errors(tiny_data, tmp_path):
    with pytest.raises(RecipeError, match=r"components\.llm\.lora\.r: must be an integer >= 1, got 0$"):
        _recipe("lora/tiny", tmp_path / "r", tiny_data, "components.llm.lora.r=0")
    with pytest.raises(RecipeError, match=r"components\.newline\.trainable: lora needs linear layers"):
        _recipe("lora/tiny", tmp_path / "n", tiny_data, "components.newline.trainable=lora")


def test_lora_with_no_matching_target_module_names_the_field(tiny_data, tmp_path):
    from onevision.train.build import build_model

    recipe = _recipe("lora/tiny", tmp_path / "t", tiny_data, "components.llm.lora.target_modules=[qkv_nope]")
    with pytest.raises(ComponentError) as err:
        build_model(recipe)
    message = str(err.value)
    assert "\n" not in message and "components.llm.lora.target_modules" in message and "qkv_nope" in message
    assert "q_proj" in message  # the names it could have used


def test_an_adapter_whose_base_checksum_differs_is_refused(lora_run, tmp_path):
    import shutil

    out, _ = lora_run
    copy = tmp_path / "adapter"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("base", "checkpoints"))
    other = tmp_path / "other-base"
    shutil.copytree(out / "base", other)
    state = load_file(str(other / "model.safetensors"))
    state["image_newline"] = state["image_newline"] + 1
    from safetensors.torch import save_file

    save_file(state, str(other / "model.safetensors"))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["base"]["path"] = str(other)
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError) as err:
        onevision.load(str(copy))
    message = str(err.value)
    assert "\n" not in message and str(copy / MANIFEST) in message and "SHA-256" in message


@pytest.mark.parametrize("name", ["lora/tiny", "lora/tiny_qlora"])
def test_an_interrupted_lora_stage_resumes_to_the_same_adapter(name, tiny_data, tmp_path):

    def run(out, stop_after=None):
        return train(_recipe(name, out, tiny_data, "checkpoint.every_steps=2"), stop_after=stop_after)

    run(tmp_path / "whole")
    first = run(tmp_path / "cut", stop_after=2)
    assert first.steps == 2 and not (tmp_path / "cut" / "stage.json").exists()
    second = run(tmp_path / "cut")
    assert second.resumed_from is not None and second.steps == 3
    whole = load_file(str(tmp_path / "whole" / ADAPTER_WEIGHTS))
    cut = load_file(str(tmp_path / "cut" / ADAPTER_WEIGHTS))
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)


def test_a_qlora_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    from safetensors.torch import save_file

    from onevision.train.lora_stage import resume_load_options

    model = torch.nn.Linear(4, 4)
    assert resume_load_options(model, tmp_path) == {}  # not quantized: accelerate's strict load
    model.quantization = "nf4"  # what quantize_model records
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    assert resume_load_options(model, tmp_path) == {"strict": False}
    save_file({"other.weight": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: its tensors differ from this model's"):
        resume_load_options(model, tmp_path)
