"""``onevision data check`` / ``data stats`` and the parallel header reads of raw planning."""

from __future__ import annotations

import json

from onevision.cli import main
from onevision.errors import MediaError
from onevision.train.data import load_samples, plan_samples
from onevision.train.lengths import measure_samples

from .conftest import RECIPE, loose


def _source(mixture, tmp_path):
    """The synthetic single-image records plus one bad JSON line, one invalid record and one missing image."""
    src = tmp_path / "mixed.jsonl"
    lines = (mixture.parent / "single.jsonl").read_text().splitlines()
    lines.insert(2, "{broken")
    lines.append(json.dumps({"id": "no-answer", "conversations": [{"from": "human", "value": "hi"}]}))
    lines.append(json.dumps({"id": "lost", "image": "missing.jpg", "conversations": [
        {"from": "human", "value": "<image>\nwhat?"}, {"from": "gpt", "value": "x"}]}))  # fmt: skip
    src.write_text("\n".join(lines) + "\n")
    return src


def test_parallel_measurement_matches_the_sequential_plan(mixture, encoder, tmp_path, capsys):
    recipe = loose(mixture, f"data.path={_source(mixture, tmp_path)}")
    samples, stats = load_samples(recipe)
    ahead = measure_samples(samples, recipe, encoder, processes=2, chunk=4, progress=True)  # 4 forked chunks
    assert "measuring samples" in capsys.readouterr().err
    lost = next(i for i, s in enumerate(samples) if s.id == "lost")
    assert isinstance(ahead[lost], MediaError) and "missing.jpg" in str(ahead[lost])
    sequential, seq_stats = plan_samples(samples, recipe, encoder, load_samples(recipe)[1], log=False)
    parallel, par_stats = plan_samples(samples, recipe, encoder, stats, log=False, measured=ahead)
    assert parallel == sequential and par_stats == seq_stats


def test_data_check_reports_modalities_histogram_and_first_offending_ids(mixture, tmp_path, capsys):
    src = _source(mixture, tmp_path)
    root = mixture.parent
    args = ["data", "check", str(src), "--image-root", str(root / "images"), "--recipe", RECIPE,
            "--set", "init_from=null", "--set", "data.synthetic=null"]  # fmt: skip
    assert main(args) == 1  # something was dropped
    out = capsys.readouterr().out
    assert "records: 18; kept 15" in out and "per modality: image 15" in out
    assert "token length: min " in out and "128-255" in out
    assert f"invalid JSON line: 1 (first: {src}:3)" in out
    assert f"invalid record: 1 (first: {src}#" in out
    assert "bad or missing media: 1 (first: lost)" in out


def test_data_stats_gives_the_token_budget_per_source(mixture, capsys):
    root = mixture.parent
    args = ["data", "stats", "--recipe", RECIPE, "--set", f"data.path={mixture}", "--set", f"data.image_root={root / 'images'}",
            "--set", f"data.video_root={root / 'videos'}", "--set", "init_from=null", "--set", "data.synthetic=null"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (
        f"| {root / 'single.jsonl'} | image | 15 |" in out
        and f"| {root / 'video.jsonl'} | video | 4 |" in out
    )
    assert "per epoch: 7 optimizer steps, global batch 4 samples" in out and "dropped: none" in out


def test_the_data_tools_build_no_weights_and_measure_as_training_does(mixture, encoder, tmp_path):
    """``build_sample_encoder`` (what ``onevision data`` and ``onevision plan`` use) measures and encodes exactly as
    the trained model's encoder, from a model on the meta device: built from a config, or from a finished stage."""
    import torch

    from onevision.train.build import STAGE_FILE, build_encoder, build_model, build_sample_encoder, save_model
    from onevision.train.prepare import prepare_data

    recipe = loose(mixture)
    full, stats = prepare_data(recipe, encoder, is_main=False)
    stage = tmp_path / "stage"
    save_model(recipe, build_model(recipe), encoder, stage, None)
    (stage / STAGE_FILE).write_text("{}")
    staged = loose(mixture, f"init_from={stage}")
    model = build_model(staged, weights=False)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {p.device.type for p in build_model(recipe, weights=False).parameters()} == {"meta"}
    for light in (build_sample_encoder(recipe), build_encoder(staged, model)):
        meta, meta_stats = prepare_data(recipe, light, is_main=False)
        assert meta.lengths == full.lengths and meta_stats == stats
        for i in (0, len(full) - 1):
            a, b = full[i], meta[i]
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)
