"""Issue #13, data points: synthetic data never touches user files (3), bad JSONL lines and media paths outside
the data roots are counted skips or strict errors (8), the planner names non-regular files and never opens them
(4)."""

from __future__ import annotations

import json
import logging
import os
import re

import pytest

from onevision.train.data import (
    BadLine,
    DataError,
    MediaError,
    Sample,
    Turn,
    load_samples,
    read_records,
    visual_token_counts,
)
from onevision.train.recipe import load_recipe

from .conftest import data_overrides

TURNS = (Turn("user", "<image>\nq"), Turn("assistant", "a"))
CONV = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]


@pytest.fixture(scope="module")
def ov_recipe(tiny_data):
    return load_recipe("tiny/stage2_ov", ["init_from=null", *data_overrides(tiny_data)])


def _strategies(recipe):
    return {m: recipe.image_strategy(m) for m in ("image", "multi_image")}


# ---------------------------------------------------------------------------------------------------------------
# 4. the planner: non-regular files


@pytest.mark.timeout(
    30
)  # opening a FIFO blocks until a writer appears: a regression hangs visibly, not forever
def test_planner_says_not_a_regular_file_for_fifos_and_directories_and_never_opens_them(ov_recipe, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    strategies = _strategies(ov_recipe)
    for path, kind in ((fifo, "a FIFO"), (folder, "a directory")):
        sample = Sample(id="x", modality="image", turns=TURNS, images=(str(path),), source="d.json#0")
        with pytest.raises(MediaError, match="not a regular file") as err:
            visual_token_counts(sample, ov_recipe, strategies)
        assert str(path) in str(err.value) and kind in str(err.value)
        assert "does not exist" not in str(err.value)
    missing = Sample(id="m", modality="image", turns=TURNS, images=(str(tmp_path / "nope.png"),))
    with pytest.raises(MediaError, match=r"nope\.png: file does not exist"):
        visual_token_counts(missing, ov_recipe, strategies)
    video_fifo = tmp_path / "pipe.mp4"
    os.mkfifo(video_fifo)
    clip = Sample(id="v", modality="video", turns=TURNS, video=str(video_fifo), source="d.json#1")
    with pytest.raises(MediaError, match=r"pipe\.mp4.*not a regular file \(a FIFO"):
        visual_token_counts(clip, ov_recipe, strategies)


# ---------------------------------------------------------------------------------------------------------------
# 8a. an invalid JSONL line is one bad record, not a failed file


def _jsonl_with_bad_lines(path):
    lines = [
        json.dumps({"id": "a", "conversations": CONV}),
        '{"id": "b", "conversations": [',  # cut off
        json.dumps({"id": "c", "conversations": CONV}),
        "",  # blank lines are not records
        "not json at all",
        json.dumps({"id": "d", "conversations": CONV}),
    ]
    data = ("\n".join(lines) + "\n").encode() + b'{"id": "\xff\xfe"}\n'  # a line that is not UTF-8
    path.write_bytes(data)
    return path


def test_invalid_jsonl_lines_are_skipped_counted_and_named(tmp_path, caplog):
    data = _jsonl_with_bad_lines(tmp_path / "d.jsonl")
    bad: list[BadLine] = []
    with caplog.at_level(logging.WARNING, logger="onevision.train"):
        records = read_records(data, on_bad_line=bad.append)
    assert [r["id"] for _, r in records] == ["a", "c", "d"]
    assert [(b.path, b.line) for b in bad] == [(str(data), 2), (str(data), 5), (str(data), 7)]
    assert bad[2].reason == "not UTF-8 text"
    assert all(f"{data}:{n}: invalid JSON line" in caplog.text for n in (2, 5, 7))
    assert [r["id"] for _, r in read_records(data)] == ["a", "c", "d"]  # existing callers: no callback needed
    with pytest.raises(DataError, match=re.escape(f"{data}:2: invalid JSON line") + r".*data\.strict"):
        read_records(data, strict=True)

    # through a mixture, and threaded by load_samples into its stats
    (tmp_path / "mix.yaml").write_text("datasets:\n  - json_path: d.jsonl\n    sampling_strategy: all\n")
    lenient = load_recipe("tiny/stage2_ov", ["init_from=null", f"data.path={tmp_path / 'mix.yaml'}"])
    samples, stats = load_samples(lenient)
    assert [s.id for s in samples] == ["a", "c", "d"]
    assert stats.records == 6 and stats.dropped == {"invalid JSON line": 3}
    strict = load_recipe(
        "tiny/stage2_ov", ["init_from=null", f"data.path={tmp_path / 'mix.yaml'}", "data.strict=true"]
    )
    with pytest.raises(DataError, match=r"d\.jsonl:2: invalid JSON line"):
        load_samples(strict)


def test_a_deeply_nested_jsonl_line_is_one_bad_line(tmp_path):
    data = tmp_path / "deep.jsonl"
    data.write_text(json.dumps({"id": "ok", "conversations": CONV}) + "\n" + "[" * 100_000 + "\n")
    bad: list[BadLine] = []
    assert [r["id"] for _, r in read_records(data, on_bad_line=bad.append)] == ["ok"]
    assert [(b.line, b.reason) for b in bad] == [(2, "nested too deeply")]
