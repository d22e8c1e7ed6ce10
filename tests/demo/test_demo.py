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
    assert chat.count("(exit 0;") == 3  # one image, two or three images, one video
    assert "--video" in chat and chat.count("--image") >= 3


def test_every_stage_wrote_a_loadable_model(demo_report):
    from onevision.demo.run import STAGES, stage_dir

    out = demo_report.parent
    dirs = {stage_dir(out, v, s) for v in ("anyres_max_9", "pad") for s in STAGES}
    assert len(dirs) == 1 + 2 * 3  # stage 1 is shared by both variants
    assert json.loads((out / "runs" / "random" / "stage.json").read_text())["stage"] == "init"
    for directory in dirs:
        info = json.loads((directory / "stage.json").read_text())
        assert info["steps"] > 0, directory
        assert (directory / "config.json").is_file()


def test_accuracy_beats_chance_and_anyres_sees_the_detail(demo_report):
    """The short run's bar: above chance on the coarse questions (every variant, in the mean over modalities, and
    clearly on single images) and on the detail question with AnyRes-Max. (The full run's much stronger numbers,
    over three seeds, are in docs/demo.md.)"""
    metrics = json.loads((demo_report / "metrics.json").read_text())
    results = metrics["results"]
    coarse = ("single image / coarse", "multi-image / coarse", "video / coarse")
    for variant in ("anyres_max_9", "pad"):
        assert set(results[variant]) == {*coarse, "single image / detail"}
        assert all(results[variant][key]["n"] >= 30 for key in results[variant])
        single = results[variant]["single image / coarse"]
        assert single["accuracy"] > single["chance"] + 0.1, (variant, single)
        mean = sum(results[variant][k]["accuracy"] - results[variant][k]["chance"] for k in coarse) / 3
        assert mean > 0.1, (variant, results[variant])
    detail = results["anyres_max_9"]["single image / detail"]
    assert detail["accuracy"] > detail["chance"] + 0.1, detail
