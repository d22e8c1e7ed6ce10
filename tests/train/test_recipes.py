"""Every shipped recipe loads and validates; composition, overrides and errors behave as documented."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from onevision.train.recipe import RecipeError, find_recipe, list_recipes, load_recipe, recipes_root

SHIPPED = [name for name, _ in list_recipes()]


def test_ships_the_documented_recipes():
    expected = {
        f"onevision/qwen2_{s}/{st}"
        for s in ("0.5b", "7b")
        for st in ("stage1", "stage1_5", "stage2_si", "stage2_ov")
    }
    expected |= {
        "llava15_hd/vicuna7b_pretrain",
        "llava15_hd/vicuna7b_finetune",
        "llava_next/vicuna7b_clip336_anyres",
    }
    expected |= {f"tiny/{st}" for st in ("stage1", "stage1_5", "stage2_si", "stage2_ov")}
    assert expected <= set(SHIPPED)
    assert all(desc for _, desc in list_recipes()), "every recipe has a description"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_validates(name):
    recipe = load_recipe(name)
    assert recipe.name and recipe.output_dir and recipe.source.endswith(".yaml")
    for modality in ("image", "multi_image"):
        assert recipe.image_strategy(modality).num_tokens((480, 640)) > 0
    if recipe.engine.backend in ("zero2", "zero3"):
        cfg = json.loads(recipe.deepspeed_config_path().read_text())
        assert "optimizer" not in cfg and "scheduler" not in cfg
        assert cfg["zero_optimization"]["stage"] == int(recipe.engine.backend[-1])


@pytest.mark.parametrize("size", ["0.5b", "7b"])
def test_onevision_reference_hyperparameters(size):
    """Algorithms reference §8.1."""
    s1 = load_recipe(f"onevision/qwen2_{size}/stage1")
    assert s1.optim.lr == 1e-3 and s1.model.template == "plain"
    assert [c for c in ("vision", "projector", "llm", "newline") if s1.component(c).trainable == "full"] == [
        "projector"
    ]
    assert s1.image_strategy().num_tokens((1000, 750)) == 729  # one flat SigLIP tile
    assert (
        s1.model.language_model == {"0.5b": "Qwen/Qwen2-0.5B-Instruct", "7b": "Qwen/Qwen2-7B-Instruct"}[size]
    )
    for stage in ("stage1_5", "stage2_si", "stage2_ov"):
        r = load_recipe(f"onevision/qwen2_{size}/{stage}")
        assert r.optim.lr == 1e-5 and r.component_lr("vision") == 2e-6 and r.component_lr("llm") == 1e-5
        assert r.component_lr("newline") == 1e-5 and r.component_lr("projector") == 1e-5
        assert (
            r.data.model_max_length == 32768 and r.optim.warmup_ratio == 0.03 and r.optim.schedule == "cosine"
        )
        assert r.train.precision == "bf16" and r.train.gradient_checkpointing and r.train.epochs == 1
        assert r.engine.backend == "zero3" and r.model.template == "qwen_1_5"
        assert r.init_from and r.init_from.endswith(
            {"stage1_5": "stage1", "stage2_si": "stage1_5", "stage2_ov": "stage2_si"}[stage]
        )
    a4 = load_recipe(f"onevision/qwen2_{size}/stage1_5").image_strategy()
    assert a4.strategy_name == "anyres" and len(a4.pinpoints) == 5
    assert a4.num_tokens((384, 384)) == 1513 and a4.num_tokens((1000, 750)) == 2943  # §5.3
    si = load_recipe(f"onevision/qwen2_{size}/stage2_si").image_strategy()
    assert (
        si.strategy_name == "anyres_max_9" and len(si.pinpoints) == 36 and si.num_tokens((768, 1024)) == 4725
    )
    ov = load_recipe(f"onevision/qwen2_{size}/stage2_ov")
    assert set(ov.data.modalities) == {"image", "multi_image", "video", "text"}
    assert ov.visual.video.frames_upbound == 32 and ov.visual.video.newline_position == "one_token"
    assert ov.image_strategy("multi_image").num_tokens((500, 300)) == 730


def test_hd_and_next_recipes_use_their_strategies():
    hd = load_recipe("llava15_hd/vicuna7b_finetune")
    assert (
        hd.image_strategy().strategy_name == "hd"
        and hd.visual.tile_size == 224
        and hd.model.template == "vicuna_v1"
    )
    assert hd.model.language_model == "lmsys/vicuna-7b-v1.5"
    nxt = load_recipe("llava_next/vicuna7b_clip336_anyres")
    assert (
        nxt.image_strategy().strategy_name == "anyres"
        and nxt.image_strategy().num_tokens((1000, 750)) == 2352
    )


def _write(path, text):
    path.write_text(text)
    return path


def test_extends_and_overrides_compose(tmp_path):
    _write(
        tmp_path / "base.yaml",
        "name: b\noutput_dir: out\ndata: {path: d.json, model_max_length: 100}\n"
        "optim: {lr: 1e-4, warmup_ratio: 0.1}\nmodel: {preset: tiny}\n",
    )
    child = _write(tmp_path / "child.yaml", "extends: base.yaml\nname: c\noptim: {lr: 3e-4}\n")
    r = load_recipe(child, ["optim.warmup_ratio=0.2", "train.grad_accum=4", "data.modalities=[image, text]"])
    assert (r.name, r.optim.lr, r.optim.warmup_ratio, r.train.grad_accum) == ("c", 3e-4, 0.2, 4)
    assert r.data.model_max_length == 100 and r.data.modalities == ["image", "text"]
    assert isinstance(r.optim.lr, float)  # PyYAML reads 3e-4 as a string; the schema converts it


def test_unknown_key_names_file_key_and_closest(tmp_path):
    base = _write(
        tmp_path / "base.yaml", "name: b\noutput_dir: out\ndata: {path: d.json}\nmodel: {preset: tiny}\n"
    )
    child = _write(tmp_path / "child.yaml", "extends: base.yaml\noptim: {learning_rate: 1e-4, lrr: 2}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(child)
    msg = str(err.value)
    assert str(child) in msg and "optim.learning_rate" in msg and "unknown key" in msg
    with pytest.raises(
        RecipeError, match=r"command line: data\.modalites: unknown key; did you mean data\.modalities"
    ):
        load_recipe(base, ["data.modalites=[image]"])
    with pytest.raises(RecipeError, match=r"did you mean 'cosine'"):
        load_recipe(base, ["optim.schedule=cosin"])
    with pytest.raises(RecipeError, match=r"train\.grad_accum: expected an integer"):
        load_recipe(base, ["train.grad_accum=two"])
    bad_parent = _write(tmp_path / "p.yaml", "name: p\nmodle: {preset: tiny}\n")
    kid = _write(tmp_path / "k.yaml", "extends: p.yaml\noutput_dir: o\ndata: {path: x}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(kid)
    assert str(bad_parent) in str(err.value) and "did you mean model" in str(err.value)


def test_semantic_errors(tmp_path):
    base = _write(
        tmp_path / "b.yaml",
        "name: b\noutput_dir: out\ndata: {path: d.json}\nmodel: {preset: tiny}\n"
        "visual: {video: {newline_position: one_token}}\n",
    )
    with pytest.raises(RecipeError, match="newline_position"):
        load_recipe(base, ["visual.video.newline_position=null"])
    with pytest.raises(RecipeError, match="nothing is trainable"):
        load_recipe(base, ["components.projector.trainable=frozen"])
    with pytest.raises(RecipeError, match=r"visual\.image: invalid strategy"):
        load_recipe(base, ["visual.image.strategy=anyres_max_0"])
    with pytest.raises(RecipeError, match="backend 'single' runs one process"):
        load_recipe(base, ["engine.num_processes=2"])
    cyc = _write(tmp_path / "c1.yaml", "extends: c2.yaml\n")
    _write(tmp_path / "c2.yaml", "extends: c1.yaml\n")
    with pytest.raises(RecipeError, match="circular extends"):
        load_recipe(cyc)


def test_deepspeed_config_with_optimizer_is_rejected(tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"optimizer": {"type": "AdamW"}, "zero_optimization": {"stage": 3}}))
    base = _write(
        tmp_path / "b.yaml",
        "name: b\noutput_dir: out\ndata: {path: d.json}\nmodel: {preset: tiny}\n"
        f"engine: {{backend: zero3, num_processes: 2, deepspeed_config: {ds}}}\n"
        "visual: {video: {newline_position: one_token}}\n",
    )
    with pytest.raises(RecipeError, match="defines its own optimizer"):
        load_recipe(base)


def test_interpolation_and_hash(tmp_path):
    base = _write(
        tmp_path / "b.yaml",
        "name: b\noutput_dir: runs/${name}\ndata: {path: d.json}\nmodel: {preset: tiny}\n"
        "visual: {video: {newline_position: one_token}}\n",
    )
    r = load_recipe(base)
    assert r.output_dir == "runs/b"
    assert load_recipe(base, ["checkpoint.every_steps=7"]).hash() == r.hash()
    assert load_recipe(base, ["optim.lr=0.5"]).hash() != r.hash()


def test_find_recipe_by_name_and_suggestion():
    assert find_recipe("tiny/stage1") == recipes_root() / "tiny" / "stage1.yaml"
    with pytest.raises(FileNotFoundError, match="did you mean tiny/stage1"):
        find_recipe("tiny/stag1")


def test_cli_recipes_lists_shipped_recipes():
    out = subprocess.run(
        [sys.executable, "-m", "onevision.cli", "recipes"], capture_output=True, text=True, check=True
    )
    for name in ("onevision/qwen2_7b/stage2_ov", "tiny/stage1", "llava15_hd/vicuna7b_finetune"):
        assert name in out.stdout


def test_cli_reports_recipe_errors_in_one_line():
    out = subprocess.run(
        [sys.executable, "-m", "onevision.cli", "train", "tiny/stage1", "optim.lrr=1", "--dry-run"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "optim.lrr: unknown key; did you mean optim.lr?" in out.stderr and "Traceback" not in out.stderr


def test_wheel_maps_recipes_into_the_package():
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert (
        project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]["recipes"]
        == "onevision/_recipes"
    )
