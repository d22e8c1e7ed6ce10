"""Named model architectures as data (open_clip style): list_models, get_model_config, add_model_config."""

from __future__ import annotations

import json

import pytest

import onevision
from onevision import model_configs
from onevision.errors import ConfigError, UnknownComponentError
from onevision.testing import tiny_config


def test_shipped_configs_are_listed_and_valid():
    assert onevision.list_models() == [
        "llava-next-vicuna-7b",
        "llava-onevision-qwen2-0.5b",
        "llava-onevision-qwen2-7b",
        "llava15-hd-vicuna-7b",
        "tiny",
    ]
    next_ = onevision.get_model_config("llava-next-vicuna-7b")
    assert (next_.vision.arch, next_.llm.model_type, next_.processor.visual.image.strategy) == (
        "clip",
        "llama",
        "anyres",
    )
    assert onevision.get_model_config("tiny") is not onevision.get_model_config("tiny")  # fresh copies
    assert "SigLIP" in model_configs.describe_model("tiny")


def test_tiny_data_matches_the_tiny_factory():
    data, factory = onevision.get_model_config("tiny"), tiny_config()
    assert (data.vision, data.projector, data.llm) == (factory.vision, factory.projector, factory.llm)
    assert data.processor.visual.image == factory.processor.visual.image


def test_add_model_config_from_a_file_a_directory_and_a_mapping(tmp_path):
    body = model_configs.model_config_dict("tiny")
    body["llm"]["config"]["num_hidden_layers"] = 1
    (tmp_path / "tiny-1l.json").write_text(json.dumps(body))
    (tmp_path / "tiny-yaml.yaml").write_text("projector: {type: linear}\n")
    try:
        assert onevision.add_model_config(tmp_path / "tiny-1l.json") == ["tiny-1l"]
        assert onevision.get_model_config("tiny-1l").llm.config["num_hidden_layers"] == 1
        assert onevision.add_model_config(tmp_path) == ["tiny-1l", "tiny-yaml"]
        assert onevision.get_model_config("tiny-yaml").projector.type == "linear"
        assert onevision.add_model_config({"vision": {"arch": "clip"}}, name="mine") == ["mine"]
        with pytest.raises(ConfigError, match=r"model config bad: .*vision\.archh: unknown key"):
            onevision.add_model_config({"vision": {"archh": "clip"}}, name="bad")
        with pytest.raises(ConfigError, match="needs name"):
            onevision.add_model_config({})
    finally:
        for name in ("tiny-1l", "tiny-yaml", "mine"):
            model_configs._CONFIGS.pop(name, None)
    assert "bad" not in onevision.list_models()
    with pytest.raises(UnknownComponentError, match="tiny"):
        onevision.get_model_config("huge")
