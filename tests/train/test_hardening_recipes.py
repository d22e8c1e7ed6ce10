"""Issue #13 point 6: recipe YAML is read defensively and every number is range-checked.

Alias bombs are refused before anything expands them, a repeated key is an error naming both lines, a
non-finite or out-of-range number names its dotted key, and ``onevision train --dry-run`` exits non-zero on an
invalid recipe.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import typing

import pytest

import onevision
from onevision.cli import main
from onevision.train.recipe import NUMERIC_RANGES, Recipe, RecipeError, list_recipes, load_recipe

BASE = "name: b\noutput_dir: out\ndata: {path: d.json, modalities: [image, text]}\nmodel: {preset: tiny}\n"


def _write(path, text):
    path.write_text(text)
    return path


def _bomb(levels: int = 9, indent: str = "  ") -> str:
    """A "billion laughs" mapping: each level is a list of nine aliases to the previous one (9**levels leaves)."""
    names = [f"l{i}" for i in range(levels)]
    lines = [f"{indent}{names[0]}: &{names[0]} [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in itertools.pairwise(names):
        lines.append(f"{indent}{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# 1. alias bombs


def test_alias_bomb_in_a_recipe_file_is_refused_quickly(tmp_path):
    text = BASE.replace("model: {preset: tiny}\n", "model:\n  preset: tiny\n  options:\n")
    bomb = _write(tmp_path / "bomb.yaml", text + _bomb(9, indent="    "))
    start = time.perf_counter()
    with pytest.raises(RecipeError, match="alias bomb") as err:
        load_recipe(bomb)
    assert time.perf_counter() - start < 0.5
    assert str(err.value).startswith(f"{bomb}: model.options.l")


def test_alias_bomb_in_an_extends_parent_or_an_override_is_refused(tmp_path):
    parent = _write(tmp_path / "parent.yaml", "laughs:\n" + _bomb(9))
    child = _write(tmp_path / "child.yaml", "extends: parent.yaml\n" + BASE)
    start = time.perf_counter()
    with pytest.raises(RecipeError, match="alias bomb") as err:
        load_recipe(child)
    assert str(err.value).startswith(f"{parent}: laughs.l")
    flow = "{a: &a [x, x, x, x, x, x, x, x, x], " + ", ".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    base = _write(tmp_path / "base.yaml", BASE)
    with pytest.raises(RecipeError, match=r"^command line: model\.options\.\w: expands to more than"):
        load_recipe(base, [f"model.options={flow}}}"])
    assert time.perf_counter() - start < 1.0


def test_self_referencing_alias_is_refused(tmp_path):
    loop = _write(tmp_path / "loop.yaml", BASE + "optim:\n  betas: &b [0.9, *b]\n")
    with pytest.raises(RecipeError, match=r"loop\.yaml:\d+: optim\.betas\[1\]: an alias refers to the node"):
        load_recipe(loop)


def test_ordinary_anchors_and_merge_keys_still_work(tmp_path):
    text = BASE + (
        "optim:\n  lr: &lr 3.0e-4\n  weight_decay: 0.1\n"
        "components:\n  projector: {trainable: full, lr: *lr}\n  llm: &frozen {trainable: frozen, lr_scale: 2}\n"
        "  vision:\n    <<: *frozen\n    lr_scale: 0.5\n"
    )
    r = load_recipe(_write(tmp_path / "ok.yaml", text))
    assert (r.optim.lr, r.optim.weight_decay, r.component_lr("projector")) == (3e-4, 0.1, 3e-4)
    assert (r.components.vision.trainable, r.components.vision.lr_scale, r.components.llm.lr_scale) == (
        "frozen",
        0.5,
        2.0,
    )


# ---------------------------------------------------------------------------------------------------------------
# 2. duplicate keys


def test_duplicate_key_names_the_key_and_both_lines(tmp_path):
    top = _write(tmp_path / "top.yaml", BASE + "name: again\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(top)
    assert str(err.value) == f"{top}:5: duplicate key 'name' (first at line 1)" and err.value.key == "name"
    nested = _write(
        tmp_path / "nested.yaml", BASE + "optim:\n  lr: 1.0e-4\n  warmup_ratio: 0.1\n  lr: 2.0e-4\n"
    )
    with pytest.raises(RecipeError) as err:
        load_recipe(nested)
    assert str(err.value) == f"{nested}:8: duplicate key 'optim.lr' (first at line 6)"
    deep = _write(
        tmp_path / "deep.yaml",
        BASE + "visual:\n  image:\n    params: {max_num: 4, max_num: 9}\n",
    )
    with pytest.raises(RecipeError, match=r"deep\.yaml:7: duplicate key 'visual\.image\.params\.max_num'"):
        load_recipe(deep)


def test_duplicate_key_in_a_parent_or_an_override_value(tmp_path):
    parent = _write(tmp_path / "parent.yaml", BASE + "train:\n  grad_accum: 2\n  grad_accum: 4\n")
    child = _write(tmp_path / "child.yaml", "extends: parent.yaml\nname: c\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(child)
    assert str(err.value) == f"{parent}:7: duplicate key 'train.grad_accum' (first at line 6)"
    clean = _write(tmp_path / "clean.yaml", BASE)
    with pytest.raises(RecipeError, match=r"^command line: duplicate key 'optim\.lr' \(first at line 1\)$"):
        load_recipe(clean, ["optim={lr: 1.0e-4, lr: 2.0e-4}"])


# ---------------------------------------------------------------------------------------------------------------
# 3. numbers: finite and in range, named by dotted key


@pytest.mark.parametrize(
    ("yaml_line", "message"),
    [
        ("optim: {lr: .nan}", "optim.lr: must be a finite number > 0, got nan"),
        ("optim: {lr: .inf}", "optim.lr: must be a finite number > 0, got inf"),
        ("optim: {lr: 'nan'}", "optim.lr: must be a finite number > 0, got nan"),
        ("optim: {lr: -.inf}", "optim.lr: must be a finite number > 0, got -inf"),
        ("optim: {eps: 0}", "optim.eps: must be a finite number > 0, got 0.0"),
        ("optim: {weight_decay: -0.1}", "optim.weight_decay: must be a finite number >= 0, got -0.1"),
        ("optim: {weight_decay: .nan}", "optim.weight_decay: must be a finite number >= 0, got nan"),
        ("optim: {max_grad_norm: -1}", "optim.max_grad_norm: must be a finite number >= 0"),
        ("optim: {max_grad_norm: .inf}", "optim.max_grad_norm: must be a finite number >= 0"),
        ("optim: {warmup_ratio: 1.5}", "optim.warmup_ratio: must be a finite number in [0, 1], got 1.5"),
        ("optim: {warmup_ratio: .nan}", "optim.warmup_ratio: must be a finite number in [0, 1], got nan"),
        ("optim: {warmup_steps: -1}", "optim.warmup_steps: must be an integer >= 0, got -1"),
        ("optim: {min_lr_ratio: .nan}", "optim.min_lr_ratio: must be a finite number in [0, 1], got nan"),
        ("optim: {betas: [0.9, 1.0]}", "optim.betas[1]: must be a finite number in [0, 1), got 1.0"),
        ("optim: {betas: [.nan, 0.99]}", "optim.betas[0]: must be a finite number in [0, 1), got nan"),
        ("train: {grad_accum: 0}", "train.grad_accum: must be an integer >= 1, got 0"),
        ("train: {micro_batch_size: -2}", "train.micro_batch_size: must be an integer >= 1, got -2"),
        ("train: {epochs: 0}", "train.epochs: must be an integer >= 1, got 0"),
        ("train: {epochs: .inf}", "train.epochs: expected an integer, got inf"),
        ("train: {max_steps: 0}", "train.max_steps: must be an integer >= 1 (or null for whole epochs)"),
        ("checkpoint: {keep_last: 0}", "checkpoint.keep_last: must be an integer >= 1, got 0"),
        ("checkpoint: {every_steps: 0}", "checkpoint.every_steps: must be an integer >= 1, got 0"),
        ("logging: {every_steps: 0}", "logging.every_steps: must be an integer >= 1, got 0"),
        ("components: {vision: {lr_scale: 0}}", "components.vision.lr_scale: must be a finite number > 0"),
        ("components: {vision: {lr_scale: .nan}}", "components.vision.lr_scale: must be a finite number > 0"),
        ("components: {llm: {lr: .nan}}", "components.llm.lr: must be a finite number > 0, got nan"),
        (
            "components: {llm: {weight_decay: -1}}",
            "components.llm.weight_decay: must be a finite number >= 0",
        ),
        ("engine: {timeout_s: 0}", "engine.timeout_s: must be an integer >= 1, got 0"),
        ("seed: -1", "seed: must be an integer in [0, 4294967295] (NumPy seeds are 32-bit), got -1"),
        ("visual: {tile_size: 0}", "visual.tile_size: must be an integer >= 1, got 0"),
        (
            "visual: {video: {video_fps: .nan}}",
            "visual.video.video_fps: must be a finite number > 0, got nan",
        ),
        ("visual: {video: {frames_upbound: -1}}", "visual.video.frames_upbound: must be an integer >= 0"),
        ("visual: {video: {pool_stride: 0}}", "visual.video.pool_stride: must be an integer >= 1, got 0"),
        ("data: {path: d.json, num_workers: -1}", "data.num_workers: must be an integer >= 0, got -1"),
        ("data: {path: d.json, lookahead: 0}", "data.lookahead: must be an integer >= 1, got 0"),
        (
            "data: {path: d, synthetic: {image_sizes: [[64, 0]]}}",
            "data.synthetic.image_sizes[0][1]: must be an integer >= 1, got 0",
        ),
        (
            "data: {path: d, synthetic: {num_samples: 0}}",
            "data.synthetic.num_samples: must be an integer >= 1",
        ),
    ],
)
def test_non_finite_or_out_of_range_numbers_name_the_key(tmp_path, yaml_line, message):
    _write(tmp_path / "base.yaml", BASE)
    recipe = _write(tmp_path / "recipe.yaml", f"extends: base.yaml\n{yaml_line}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe)
    assert str(err.value).startswith(f"{recipe}: {message}")


def test_numbers_at_their_bounds_and_the_off_values_are_accepted(tmp_path):
    base = _write(tmp_path / "base.yaml", BASE)
    r = load_recipe(
        base,
        [
            "optim.max_grad_norm=0",
            "optim.warmup_ratio=1",
            "optim.weight_decay=0",
            "optim.betas=[0, 0.999]",
            "seed=0",
            "visual.video.frames_upbound=0",
        ],
    )
    assert (r.optim.max_grad_norm, r.optim.warmup_ratio, r.optim.betas, r.seed) == (0.0, 1.0, [0.0, 0.999], 0)
    assert load_recipe(base, ["optim.max_grad_norm=null", "train.max_steps=null"]).optim.max_grad_norm is None
    with pytest.raises(RecipeError, match=r"^command line: optim\.lr: must be a finite number > 0, got nan$"):
        load_recipe(base, ["optim.lr=nan"])


def _numeric_fields(cls: type, prefix: str = "") -> list[str]:
    """Dotted patterns (``[]`` per list level) of every int/float field reachable from ``cls``."""
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp, pattern = typing.get_type_hints(cls)[f.name], f"{prefix}{f.name}"
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if args and typing.get_origin(tp) is not list and len(args) == 1:
            tp = args[0]  # X | None
        while typing.get_origin(tp) is list:
            tp, pattern = typing.get_args(tp)[0], f"{pattern}[]"
        if dataclasses.is_dataclass(tp):
            out += _numeric_fields(tp, f"{pattern}.")
        elif tp in (int, float):
            out.append(pattern)
    return out


def test_every_numeric_schema_field_has_a_range():
    fields = _numeric_fields(Recipe)
    assert "optim.lr" in fields and "data.synthetic.image_sizes[][]" in fields and "optim.betas[]" in fields
    assert [f for f in fields if f not in NUMERIC_RANGES] == []
    assert [k for k in NUMERIC_RANGES if k not in fields] == []


def test_recipe_listing_skips_a_bomb_description(tmp_path, monkeypatch):
    _write(tmp_path / "ok.yaml", "description: fine\n")
    _write(tmp_path / "bomb.yaml", "laughs:\n" + _bomb(9) + "description: *l8\n")
    monkeypatch.setattr("onevision.train.recipe.recipes_root", lambda: tmp_path)
    start = time.perf_counter()
    assert list_recipes() == [("bomb", ""), ("ok", "fine")]
    assert time.perf_counter() - start < 0.5


# ---------------------------------------------------------------------------------------------------------------
# 4. --dry-run exit status


def test_dry_run_exits_non_zero_on_an_invalid_recipe(tmp_path, capsys):
    base = _write(tmp_path / "base.yaml", BASE)
    assert main(["train", str(base), "--dry-run", "--no-model"]) == 0
    assert capsys.readouterr().out.startswith(f"# b ({base})")
    assert main(["train", str(base), "optim.lr=.nan", "--dry-run", "--no-model"]) == 2
    err = capsys.readouterr().err
    assert err == "onevision train: error: command line: optim.lr: must be a finite number > 0, got nan\n"
    nan_file = _write(tmp_path / "nan.yaml", "extends: base.yaml\noptim: {warmup_ratio: .nan}\n")
    assert main(["train", str(nan_file), "--dry-run"]) == 2
    assert f"{nan_file}: optim.warmup_ratio: must be a finite number in [0, 1]" in capsys.readouterr().err


def test_dry_run_exits_non_zero_when_the_model_builder_rejects_the_recipe(tmp_path, capsys):
    base = _write(tmp_path / "base.yaml", BASE.replace("{preset: tiny}", "{preset: huge}"))
    assert main(["train", str(base), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(f"# b ({base})") and "token budget:" in out  # what it could resolve is still shown
    assert "trainable parameters: invalid recipe" in out
    known = ", ".join(onevision.list_models())  # the named model configs
    assert err == f"onevision train: error: {base}: model.preset: unknown preset 'huge'; known: {known}\n"
