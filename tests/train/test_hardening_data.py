"""Issue #13, data points: synthetic data never touches user files (3), bad JSONL lines and media paths outside
the data roots are counted skips or strict errors (8), the planner names non-regular files and never opens them
(4)."""

from __future__ import annotations

import os

import pytest

from onevision.train.data import MediaError, Sample, Turn, visual_token_counts
from onevision.train.recipe import load_recipe

from .conftest import data_overrides

TURNS = (Turn("user", "<image>\nq"), Turn("assistant", "a"))


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
