"""The demo dataset: deterministic, in the real data formats, and honest about what resolution reveals."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest

import anyres
from onevision.demo.data import (
    ANSWERS,
    COLOURS,
    PATTERNS,
    QUESTIONS,
    DemoDataSpec,
    generate,
    iter_eval,
    pattern_bits,
    pattern_envelope,
)

TINY = DemoDataSpec(
    seed=3, train_single=9, train_multi=3, train_video=4, train_captions=3, eval_per_question=3
)


def _digest(root) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in {".jsonl", ".png", ".yaml"}):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("demo"), TINY)


def test_same_seed_same_files(dataset, tmp_path):
    again = generate(tmp_path / "again", TINY)
    assert _digest(dataset) == _digest(again)
    other = generate(tmp_path / "other", DemoDataSpec(**{**TINY.__dict__, "seed": 4}))
    assert _digest(other) != _digest(dataset)


def test_llava_jsonl_and_mixtures(dataset):
    single = [json.loads(line) for line in (dataset / "train_single.jsonl").read_text().splitlines()]
    assert len(single) == 9
    for record in single:
        assert (dataset / "images" / record["image"]).is_file()
        human, gpt = record["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\n")
        assert gpt["value"] in ANSWERS[record["question_type"]]
    multi = [json.loads(line) for line in (dataset / "train_multi.jsonl").read_text().splitlines()]
    assert all(
        len(r["image"]) in (2, 3) and r["conversations"][0]["value"].count("<image>") == len(r["image"])
        for r in multi
    )
    video = [json.loads(line) for line in (dataset / "train_video.jsonl").read_text().splitlines()]
    assert all((dataset / "videos" / r["video"]).stat().st_size > 0 for r in video)
    assert "train_video.jsonl" in (dataset / "onevision.yaml").read_text()
    kinds = {r["question_type"] for r in iter_eval(dataset)}
    assert kinds == set(QUESTIONS)


def test_held_out_single_image_answers_are_balanced(tmp_path):
    root = generate(tmp_path, DemoDataSpec(**{**TINY.__dict__, "eval_per_question": 12}))
    answers: dict[str, Counter] = {"pattern": Counter(), "colour": Counter()}
    for record in iter_eval(root):
        if record["question_type"] in answers:
            answers[record["question_type"]][record["conversations"][1]["value"]] += 1
    assert answers["pattern"] == Counter({p: 4 for p in PATTERNS})
    assert answers["colour"] == Counter({c: 3 for c in COLOURS})


def test_videos_decode_to_the_encoded_events(dataset):
    import video

    record = json.loads((dataset / "eval_video.jsonl").read_text().splitlines()[0])  # a first_colour question
    clip = video.load(dataset / "videos" / record["video"], video.Sampling(num_frames=TINY.video_frames))
    assert clip.frames.shape == (TINY.video_frames, TINY.video_size, TINY.video_size, 3)
    centre = clip.frames[:, TINY.video_size // 2, TINY.video_size // 2].astype(int)
    lit = [i for i, px in enumerate(centre) if np.abs(px - 128).max() > 40]
    assert lit, "the square must flash at least once"
    expected = {"red": 0, "green": 1, "blue": 2, "yellow": None}[record["conversations"][1]["value"]]
    first = centre[lit[0]]
    if expected is not None:
        assert int(np.argmax(first)) == expected


def test_patterns_vanish_at_base_resolution_but_not_in_tiles():
    """The same scene under each pattern: within one uint8 level at base resolution, very different in the tiles."""
    from onevision.train import load_recipe

    spec = DemoDataSpec()
    visual = load_recipe("demo/stage1.yaml").visual
    pad = anyres.get_strategy("pad", tile_size=visual.tile_size, patch_size=visual.patch_size)
    tiled = anyres.get_strategy("anyres_max_9", tile_size=visual.tile_size, patch_size=visual.patch_size)
    scene = np.full((spec.image_size, spec.image_size, 3), 128, np.int16)
    scene[30:90, 40:100] = COLOURS["red"]  # a big square
    scene[8:20, 70:124] = COLOURS["yellow"]  # a shape reaching into the pattern's border ramp
    envelope = pattern_envelope(spec.image_size)
    base, full = [], []
    for pattern in PATTERNS:
        stripes = np.rint(pattern_bits(pattern, spec.image_size) * envelope * spec.pattern_contrast)
        striped = scene + stripes.astype(np.int16)
        assert striped.min() >= 0 and striped.max() <= 255  # no clipping
        image = striped.astype(np.uint8)
        base.append(pad.preprocess(image).pixel_values)
        full.append(tiled.preprocess(image).pixel_values[1:])  # the grid tiles (the base tile is first)
    assert tiled.layout(anyres.ImageSize(spec.image_size, spec.image_size)).grid == (2, 2)
    for i in range(3):
        for j in range(i + 1, 3):
            levels = (base[i] - base[j]).abs() * 127.5  # uint8 levels in the base-resolution view
            assert levels.max().item() <= 1.01  # ... at most one level, in the border ramp only
            assert (levels > 0.5).float().mean().item() < 0.02
            assert (full[i] - full[j]).abs().max().item() * 127.5 > 2 * spec.pattern_contrast - 2
