"""`onevision demo --quick` end to end: data, four stages for two variants, evaluation, report and chat."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    from onevision.cli import main

    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--output", str(out)]) == 0
    return out / "report"


def test_report_files(demo_report):
    for name in (
        "metrics.json",
        "results.md",
        "loss_curves.png",
        "layout.png",
        "examples.md",
        "chat_examples.txt",
        "predictions_anyres_max_9.jsonl",
        "predictions_pad.jsonl",
    ):
        assert (demo_report / name).is_file(), name
        assert (demo_report / name).stat().st_size > 0, name
    chat = (demo_report / "chat_examples.txt").read_text()
    assert chat.count("(exit 0)") == 3  # one image, two images, one video
    assert "--video" in chat and chat.count("--image") >= 3


def test_every_stage_wrote_a_loadable_model(demo_report):
    runs = demo_report.parent / "runs"
    for variant in ("anyres_max_9", "pad"):
        for stage in ("stage1", "stage1_5", "stage2_si", "stage2_ov"):
            info = json.loads((runs / variant / stage / "stage.json").read_text())
            assert info["steps"] > 0
            assert (runs / variant / stage / "config.json").is_file()


def test_accuracy_beats_chance_on_coarse_single_image_questions(demo_report):
    metrics = json.loads((demo_report / "metrics.json").read_text())
    for variant in ("anyres_max_9", "pad"):
        results = metrics["results"][variant]
        assert set(results) >= {
            "single image / coarse",
            "single image / detail",
            "multi-image / coarse",
            "video / coarse",
        }
        coarse = results["single image / coarse"]
        assert coarse["n"] >= 60
        assert coarse["accuracy"] > coarse["chance"] + 0.1, (variant, coarse)
