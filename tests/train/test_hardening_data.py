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
    MediaPathError,
    Sample,
    Turn,
    load_samples,
    parse_record,
    read_records,
    visual_token_counts,
)
from onevision.train.recipe import RecipeError, SyntheticData, load_recipe
from onevision.train.synthetic import MARKER, SyntheticDataError, ensure_synthetic_dataset

from .conftest import data_overrides

SMALL = SyntheticData(num_samples=8, seed=3, video_frames=2)
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


# ---------------------------------------------------------------------------------------------------------------
# 8b. media paths stay inside their data roots


def _rec(image=None, video=None):
    tags = "<image> " * len(image) if isinstance(image, list) else ""
    out = {
        "id": "r",
        "conversations": [{"from": "human", "value": tags + "q"}, {"from": "gpt", "value": "a"}],
    }
    if image is not None:
        out["image"] = image
    if video is not None:
        out["video"] = video
    return out


def _layout(tmp_path):
    """``data/images`` (a real file, a symlink out of the root, a subdirectory), a secret next to it, and
    ``linked`` (a symlink to the whole images directory, as users keep roots on other disks)."""
    images = tmp_path / "data" / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.png").write_bytes(b"png")
    (images / "sub" / "b.png").write_bytes(b"png")
    secret = tmp_path / "secret.txt"
    secret.write_text("key")
    (images / "escape.png").symlink_to(secret)
    (tmp_path / "linked").symlink_to(images, target_is_directory=True)
    return images, secret


def test_media_paths_are_confined_to_their_roots(tmp_path, monkeypatch):
    images, secret = _layout(tmp_path)
    root = str(images)
    ok = parse_record(_rec(["a.png", "sub/b.png", "sub/../a.png"]), source="d#0", image_root=root)
    assert ok.images == (f"{root}/a.png", f"{root}/sub/b.png", f"{root}/sub/../a.png")  # joined as before
    linked = parse_record(_rec("a.png"), source="d#1", image_root=str(tmp_path / "linked"))
    assert linked.images == (f"{tmp_path}/linked/a.png",)  # a symlinked root is the root
    refused = {
        "../../secret.txt": "leaves data.image_root",
        "sub/../../../secret.txt": "leaves data.image_root",
        str(secret): "is absolute",
        "escape.png": "through a symbolic link",
    }
    for path, why in refused.items():
        with pytest.raises(MediaPathError, match=why) as err:
            parse_record(_rec(["a.png", path]), source="d.json#4", image_root=root)
        assert "d.json#4" in str(err.value) and repr(path) in str(err.value)
        assert "data.allow_outside_roots" in str(err.value)
        trusted = parse_record(_rec(["a.png", path]), source="d#5", image_root=root, allow_outside_roots=True)
        assert trusted.images[1] == (path if os.path.isabs(path) else os.path.join(root, path))
    with pytest.raises(MediaPathError, match=r"data\.video_root"):
        parse_record(_rec(video="../v.mp4"), source="d#6", video_root=root)
    with pytest.raises(MediaPathError, match="is absolute"):
        parse_record(_rec(video=str(secret)), source="d#7")
    # no root: relative to the current directory as before, but not out of it
    monkeypatch.chdir(images)
    assert parse_record(_rec("sub/b.png"), source="d#8").images == ("sub/b.png",)
    with pytest.raises(MediaPathError, match="leaves the current directory"):
        parse_record(_rec("../../secret.txt"), source="d#9")


def test_load_samples_counts_media_outside_the_roots_unless_strict_or_allowed(tmp_path):
    images, secret = _layout(tmp_path)
    records = [
        {**_rec("a.png"), "id": "in"},
        {**_rec("../../secret.txt"), "id": "dots"},
        {**_rec(str(secret)), "id": "absolute"},
        {**_rec("escape.png"), "id": "link"},
    ]
    (tmp_path / "d.json").write_text(json.dumps(records))
    base = ["init_from=null", f"data.path={tmp_path / 'd.json'}", f"data.image_root={images}"]
    samples, stats = load_samples(load_recipe("tiny/stage2_ov", base))
    assert [s.id for s in samples] == ["in"]
    assert stats.records == 4 and stats.dropped == {"media path outside data root": 3}
    with pytest.raises(MediaPathError, match=r"d\.json#1: image path '\.\./\.\./secret\.txt'.*data\.strict"):
        load_samples(load_recipe("tiny/stage2_ov", [*base, "data.strict=true"]))
    allowed, stats = load_samples(load_recipe("tiny/stage2_ov", [*base, "data.allow_outside_roots=true"]))
    assert [s.id for s in allowed] == ["in", "dots", "absolute", "link"] and not stats.dropped


# ---------------------------------------------------------------------------------------------------------------
# 3. synthetic data never touches user files


def _snapshot(root):
    """Every path under ``root`` with its bytes (``None`` for a directory)."""
    return {
        p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


def _synthetic_recipe(mixture):
    return load_recipe(
        "tiny/stage2_ov",
        [
            "init_from=null",
            f"data.path={mixture}",
            "data.synthetic.num_samples=8",
            "data.synthetic.video_frames=2",
        ],
    )


@pytest.mark.parametrize("with_mixture", [False, True])
def test_synthetic_refuses_a_directory_of_user_files_and_leaves_it_byte_identical(tmp_path, with_mixture):
    user = tmp_path / "my-data"
    (user / "images").mkdir(parents=True)
    (user / "images" / "img0001.png").write_bytes(b"my holiday photo")  # a name the generator also writes
    (user / "single.jsonl").write_text('{"id": "mine", "note": "hand-labelled"}\n')
    (user / "notes.txt").write_text("do not lose")
    if with_mixture:
        (user / "mixture.yaml").write_text("datasets:\n  - json_path: single.jsonl\n")
    before = _snapshot(user)
    recipe = _synthetic_recipe(user / "mixture.yaml")  # a mistyped data.path with data.synthetic set
    with pytest.raises(SyntheticDataError) as err:
        ensure_synthetic_dataset(recipe.data.path, recipe.data.synthetic)  # what the engine runs
    msg = str(err.value)
    assert "data.path" in msg and str(user) in msg and "not a synthetic dataset directory" in msg
    assert "new or empty directory" in msg and "remove data.synthetic" in msg
    assert _snapshot(user) == before  # nothing replaced, removed or added
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-data"]  # no temporary sibling left either


def test_synthetic_generates_into_a_new_or_empty_directory_with_a_marker_then_reuses_it(tmp_path):
    for root in (tmp_path / "new" / "data", tmp_path / "empty"):
        if root.name == "empty":
            root.mkdir()
        mixture = ensure_synthetic_dataset(root / "mixture.yaml", SMALL)
        assert mixture == root / "mixture.yaml" and mixture.is_file()
        marker = json.loads((root / MARKER).read_text())
        assert marker["format"] == "onevision-synthetic-dataset" and marker["spec"]["num_samples"] == 8
        written = {p.relative_to(root).as_posix() for p in root.rglob("*")} - {MARKER}
        assert set(marker["files"]) == written and "images" in written and "single.jsonl" in written
        assert len(read_records(mixture)) > 0
        # reused as is: nothing rewritten, a file the user adds stays
        (root / "notes.txt").write_text("mine")
        before = _snapshot(root)
        assert ensure_synthetic_dataset(root / "mixture.yaml", SMALL) == mixture
        assert _snapshot(root) == before


def test_synthetic_regenerates_only_its_own_files_in_a_marked_directory(tmp_path):
    root = tmp_path / "data"
    ensure_synthetic_dataset(root / "mixture.yaml", SMALL)
    (root / "notes.txt").write_text("mine")
    (root / "images" / "mine.png").write_bytes(b"user image")
    (root / "single.jsonl").unlink()  # a generated file gone missing is regenerated
    ensure_synthetic_dataset(root / "other.yaml", SMALL)  # a second mixture name: generate again
    assert (root / "other.yaml").is_file() and (root / "single.jsonl").is_file()
    assert (root / "notes.txt").read_text() == "mine" and (
        root / "images" / "mine.png"
    ).read_bytes() == b"user image"
    assert json.loads((root / MARKER).read_text())["mixtures"] == ["mixture.yaml", "other.yaml"]
    # something in the way that the marker does not list (here: a claimed directory, then a user file) is refused
    claimed = tmp_path / "claimed"
    claimed.mkdir()
    (claimed / MARKER).write_text(json.dumps({"format": "onevision-synthetic-dataset", "files": []}))
    (claimed / "single.jsonl").write_text("user data")
    before = _snapshot(claimed)
    with pytest.raises(SyntheticDataError, match=r"single\.jsonl is in the way"):
        ensure_synthetic_dataset(claimed / "mixture.yaml", SMALL)
    assert _snapshot(claimed) == before
    # a file named like the marker that this library did not write does not make a directory ours
    (claimed / MARKER).write_text("hello")
    with pytest.raises(SyntheticDataError, match="not a marker written by onevision"):
        ensure_synthetic_dataset(claimed / "mixture.yaml", SMALL)


def test_synthetic_needs_a_yaml_data_path(tmp_path):
    with pytest.raises(
        SyntheticDataError, match=r"data\.path: .*generates a mixture \.yaml.*data\.synthetic=null"
    ):
        ensure_synthetic_dataset(tmp_path / "new" / "d.json", SMALL)
    user = tmp_path / "d.json"
    user.write_text("[]")
    with pytest.raises(
        SyntheticDataError, match=r"generates a mixture \.yaml"
    ):  # not reused, not written over
        ensure_synthetic_dataset(user, SMALL)
    assert user.read_text() == "[]" and sorted(p.name for p in tmp_path.iterdir()) == ["d.json"]


def test_a_missing_data_path_without_synthetic_names_the_key_and_the_path(tmp_path):
    missing = tmp_path / "typo" / "mixture.yaml"
    recipe = load_recipe("tiny/stage2_ov", ["init_from=null", f"data.path={missing}", "data.synthetic=null"])
    with pytest.raises(RecipeError) as err:
        load_samples(recipe)
    assert err.value.key == "data.path" and "data.path" in str(err.value) and str(missing) in str(err.value)
    assert "does not exist" in str(err.value) and "data.synthetic" in str(err.value)
    (tmp_path / "a.json").write_text(json.dumps([{"id": "a", "conversations": CONV}]))
    brace = load_recipe(
        "tiny/stage2_ov", ["init_from=null", f"data.path={tmp_path}/{{a.json,b.json}}", "data.synthetic=null"]
    )
    with pytest.raises(
        RecipeError, match=rf"data\.path: {re.escape(str(tmp_path / 'b.json'))} does not exist"
    ):
        load_samples(brace)
    assert not missing.parent.exists()  # nothing generated
