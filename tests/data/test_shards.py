"""Packing into shards and training-side reading: deterministic WebDataset tars, planning from the index alone
(identical kept/dropped table and lengths to raw planning, no media opened, any fsspec URL), identical encoded
samples, rank/worker splits without overlap, and bad shards skipped and counted or refused naming the file."""

from __future__ import annotations

import json
import shutil
import tarfile

import pytest
import torch

from onevision.data import INDEX_NAME, read_index
from onevision.data.pack import pack
from onevision.errors import DataError
from onevision.train.prepare import prepare_data
from onevision.train.sampler import GroupedBatchSampler

from .conftest import loose, sharded


def _same_item(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k], k


def test_pack_is_deterministic_and_plain_webdataset(mixture, encoder, shards, tmp_path):
    import webdataset as wds

    again = tmp_path / "again"
    pack(loose(mixture), encoder, again, shard_size=8, progress=False)
    names = sorted(p.name for p in shards.iterdir())
    assert (
        names
        == sorted(p.name for p in again.iterdir())
        == [INDEX_NAME, *(f"shard-{i:06d}.tar" for i in range(4))]
    )
    assert all((shards / n).read_bytes() == (again / n).read_bytes() for n in names)
    index = read_index(str(shards))
    assert [s.samples for s in index.shards] == [8, 8, 8, 4] and len(index.entries) == 28
    urls = [str(shards / s.name) for s in index.shards]
    seen = list(wds.WebDataset(urls, shardshuffle=False))  # webdataset groups members by key
    assert [s["__key__"] for s in seen] == [e.key for e in index.entries]
    video = next(s for s, e in zip(seen, index.entries) if e.modality == "video")
    record = json.loads(video["json"])
    assert video[record["video"]][:4] != b"" and record["conversations"][0]["value"].startswith("<image>")
    multi = next(e for e in index.entries if e.modality == "multi_image")
    assert [m for m in multi.members if m != "json"] == json.loads(seen[index.entries.index(multi)]["json"])[
        "image"
    ]


def test_pack_refuses_a_directory_with_files(mixture, encoder, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="must be new or empty"):
        pack(loose(mixture), encoder, tmp_path, progress=False)
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("extra", [[], ["data.model_max_length=300"], ["data.modalities=[image,text]"]])
def test_planning_from_the_index_matches_raw_planning(mixture, encoder, shards, extra):
    raw, raw_stats = prepare_data(loose(mixture, *extra), encoder)
    idx, idx_stats = prepare_data(sharded(shards, *extra), encoder)
    assert idx.lengths == raw.lengths and idx.modalities == raw.modalities
    assert [p.sample.id for p in idx.planned] == [p.sample.id for p in raw.planned]
    assert idx_stats.summary() == raw_stats.summary()
    assert idx_stats.dropped == raw_stats.dropped and idx_stats.examples == raw_stats.examples


def test_planning_from_the_index_opens_no_media_and_items_are_identical(
    mixture, encoder, shards, monkeypatch
):
    import anyres.images

    raw, _ = prepare_data(loose(mixture), encoder)

    def no_headers(*args, **kwargs):
        raise AssertionError("planning from an index opened a media file")

    monkeypatch.setattr(anyres.images, "peek_size", no_headers)
    monkeypatch.setattr("onevision.train.visual.video_frame_count", no_headers)
    idx, _ = prepare_data(sharded(shards), encoder)
    monkeypatch.undo()
    for i in range(len(raw)):
        _same_item(raw[i], idx[i])


def test_shards_on_an_fsspec_url(mixture, encoder, shards):
    import fsspec

    fs = fsspec.filesystem("memory")
    for p in shards.iterdir():
        fs.pipe_file(f"/bucket/set/{p.name}", p.read_bytes())
    raw, _ = prepare_data(loose(mixture), encoder)
    remote, stats = prepare_data(sharded("memory://bucket/set"), encoder)
    assert remote.lengths == raw.lengths and stats.kept == 28
    _same_item(raw[3], remote[3])
    both, _ = prepare_data(
        sharded(f"'{{{shards},memory://bucket/set}}'"), encoder
    )  # a brace pattern of shard sets
    assert both.lengths == raw.lengths * 2


def test_ranks_and_workers_split_without_overlap(mixture, encoder, shards):
    dataset, _ = prepare_data(sharded(shards), encoder)
    seen = []
    for rank in range(2):
        sampler = GroupedBatchSampler(dataset.lengths, dataset.modalities, micro_batch_size=2, world_size=2,
                                      rank=rank, seed=3)  # fmt: skip
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=list, num_workers=2)
        seen += [item["sample_id"] for batch in loader for item in batch]
    assert len(seen) == len(set(seen)) == 28  # 7 steps x global batch 4: every sample once


def test_an_index_from_another_policy_or_with_changed_shards_is_refused(shards, encoder, tmp_path):
    with pytest.raises(DataError, match=rf"{INDEX_NAME}: packed under another visual policy"):
        prepare_data(sharded(shards, "visual.multi_image.strategy=anyres_max_9"), encoder)
    bad = tmp_path / "cut"
    shutil.copytree(shards, bad)
    data = (bad / "shard-000001.tar").read_bytes()
    (bad / "shard-000001.tar").write_bytes(data[:-1024])
    with pytest.raises(DataError, match=r"shard-000001\.tar: \d+ bytes but .*index\.jsonl recorded"):
        prepare_data(sharded(bad), encoder)
    (bad / "shard-000001.tar").unlink()
    with pytest.raises(DataError, match=r"shard-000001\.tar: shard listed in .* is missing"):
        prepare_data(sharded(bad), encoder)
    (bad / INDEX_NAME).write_text("{not json\n")
    with pytest.raises(DataError, match=r"index\.jsonl: line 1"):
        read_index(str(bad))


def _rename_member(shard, old: str, new: str) -> None:
    """Rewrite one tar header's name in place (same size): the index now names a member the tar lacks."""
    data = bytearray(shard.read_bytes())
    with tarfile.open(shard) as tar:
        info = tar.getmember(old)
    info.name = new
    data[info.offset : info.offset + tarfile.BLOCKSIZE] = info.tobuf(tarfile.USTAR_FORMAT)
    shard.write_bytes(bytes(data))


def test_a_missing_member_or_a_corrupt_tar_is_skipped_and_counted(shards, encoder, tmp_path, caplog):
    from onevision.data.check import check_report

    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    index = read_index(str(bad))
    victim = index.entries[1]
    media = next(m for m in victim.members if m != "json")
    _rename_member(bad / "shard-000000.tar", f"{victim.key}.{media}", f"{victim.key}.gone")
    corrupt = bad / "shard-000003.tar"
    data = bytearray(corrupt.read_bytes())
    data[0:512] = b"\xff" * 512  # the first header of the last shard is garbage (same size)
    corrupt.write_bytes(bytes(data))
    dataset, stats = prepare_data(sharded(bad), encoder)
    assert stats.kept == 28  # planning trusts the index; the damage shows at load time, as a counted skip
    assert dataset[1] is None and "the shard and its index disagree" in caplog.text
    first_of_last = next(
        i for i, p in enumerate(dataset.planned) if p.sample.source.endswith(index.entries[24].key)
    )
    assert dataset[first_of_last] is None and "shard-000003.tar: cannot read member" in caplog.text
    assert dataset[2] is not None
    text, clean = check_report(sharded(bad), encoder)
    assert not clean
    assert f"missing shard member: 1 (first: {victim.id} (" in text
    assert "corrupt tar: 1 (first: " in text and "shard-000003.tar" in text


def test_a_list_of_sources_reads_each_in_order(mixture, encoder, shards, tmp_path):
    second = tmp_path / "second"
    shutil.copytree(shards, second)
    one, _ = prepare_data(sharded(shards), encoder)
    listed, stats = prepare_data(sharded(f"[{shards},{second}]"), encoder)
    braced, _ = prepare_data(sharded(f"'{{{shards},{second}}}'"), encoder)
    assert listed.lengths == braced.lengths == one.lengths * 2 and stats.kept == 56
    assert listed.where == braced.where and len(listed.where) == 56
    files = []
    for part in ("a", "b"):  # loose files: two JSONL files as a list, in that order
        record = {
            "id": part,
            "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": part}],
        }
        files.append(tmp_path / f"{part}.jsonl")
        files[-1].write_text(json.dumps(record) + "\n")
    loose_list, _ = prepare_data(sharded(f"[{files[1]},{files[0]}]"), encoder)
    assert [p.sample.id for p in loose_list.planned] == ["b", "a"]
    with pytest.raises(DataError, match=r"a\.jsonl: no index\.jsonl there, but other parts of data\.path"):
        prepare_data(sharded(f"[{shards},{files[0]}]"), encoder)


def test_a_dry_run_plans_from_the_shard_index(encoder, shards):
    from onevision.train.dryrun import dry_run

    report = dry_run(sharded(shards))
    assert "data: 28/28 samples kept (image 15, multi_image 4, text 5, video 4)" in report
    assert "7 steps per epoch" in report
