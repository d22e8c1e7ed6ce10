"""Issue #13 point 10: every bad input to the ``onevision`` command line gets one clear line, ``chat --batch``
survives any per-request failure, ``convert`` never writes into (or deletes from) a directory it does not own."""

from __future__ import annotations

import importlib.metadata
import json

import pytest
import torch
from safetensors.torch import load_file

import onevision
from onevision.checkpoints import save_native, write_state_dict
from onevision.cli import main

GEN = ["--max-new-tokens", "4"]


@pytest.fixture(scope="module")
def model_dir(pipe, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-model")
    save_native(pipe, d)
    return d


@pytest.fixture(scope="module")
def media(tmp_path_factory, image_a):
    from video.testing import write_counter_video

    d = tmp_path_factory.mktemp("cli-media")
    image_a.save(d / "a.png")
    (d / "notes.txt").write_text("not a video\n")
    write_counter_video(d / "clip.mp4", num_frames=12, width=64, height=48)
    return d


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------------------
# chat --batch


class _FlakyPipe:
    """The real pipeline, except that a request whose prompt names an exception raises it (as a CUDA OOM or a
    full disk would, in one request only)."""

    def __init__(self, pipe):
        self.pipe = pipe

    def batch(self, requests, **kwargs):
        for r in requests:
            if r.get("prompt") == "boom":
                raise RuntimeError("CUDA out of memory (simulated)")
            if r.get("prompt") == "disk":
                raise OSError(28, "No space left on device")
        return self.pipe.batch(requests, **kwargs)


def test_batch_survives_any_exception_of_one_request(model_dir, media, tmp_path, capsys, monkeypatch):
    real = onevision.load(str(model_dir))
    monkeypatch.setattr(onevision, "load", lambda *a, **k: _FlakyPipe(real))
    requests = [
        {"id": "ok1", "prompt": "Describe.", "image": "a.png"},
        {"id": "oom", "prompt": "boom"},
        {"id": "ok2", "prompt": "Hello?"},
        {"id": "full", "prompt": "disk"},
        {"id": "typo", "prompt": "Describe.", "images": 5},  # a TypeError while reading the request
        {"id": "ok3", "prompt": "Why?"},
    ]
    src = media / "flaky.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in requests))
    out = tmp_path / "answers.jsonl"
    code, _, err = _run(
        capsys, "chat", "--model", str(model_dir), "--batch", str(src), "--output", str(out), *GEN
    )
    assert code == 1
    assert "3 answered, 3 failed" in err and "Traceback" not in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in requests]
    assert rows[1] == {"id": "oom", "error": "RuntimeError: CUDA out of memory (simulated)"}
    assert rows[3]["error"].startswith("OSError:") and "No space left" in rows[3]["error"]
    assert rows[4]["error"].startswith("TypeError:")
    expected = real.batch(
        [
            {"prompt": "Describe.", "images": [str(media / "a.png")]},
            {"prompt": "Hello?"},
            {"prompt": "Why?"},
        ],
        max_new_tokens=4,
        temperature=0.0,
    )
    assert [rows[i]["answer"] for i in (0, 2, 5)] == expected


def test_batch_all_answered_prints_a_summary_and_exits_0(model_dir, media, tmp_path, capsys):
    src = media / "fine.jsonl"
    src.write_text(
        json.dumps({"id": 1, "prompt": "Hi"}) + "\n" + json.dumps({"id": 2, "prompt": "Yo"}) + "\n"
    )
    out = tmp_path / "fine.out.jsonl"
    code, _, err = _run(
        capsys, "chat", "--model", str(model_dir), "--batch", str(src), "--output", str(out), *GEN
    )
    assert code == 0 and "onevision chat: 2 answered, 0 failed" in err
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [1, 2]


# ---------------------------------------------------------------------------------------------------------------
# devices, sampling options, media


def test_unavailable_cuda_is_one_line_naming_the_cpu(model_dir, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = _run(capsys, "chat", "--model", str(model_dir), "--device", "cuda", *GEN, "Q")
    assert code == 2 and _lines(err) == [
        "onevision chat: error: --device cuda: CUDA is not available on this machine; use --device cpu"
    ]


def test_missing_cuda_index_mps_and_nonsense_devices_are_one_line(model_dir, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code, _, err = _run(capsys, "chat", "--model", str(model_dir), "--device", "cuda:3", *GEN, "Q")
    assert code == 2 and len(_lines(err)) == 1 and "1 CUDA device(s)" in err
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    code, _, err = _run(capsys, "chat", "--model", str(model_dir), "--device", "mps", *GEN, "Q")
    assert code == 2 and len(_lines(err)) == 1 and "MPS" in err and "--device cpu" in err
    code, _, err = _run(capsys, "chat", "--model", str(model_dir), "--device", "gpu", *GEN, "Q")
    assert code == 2 and len(_lines(err)) == 1 and "'gpu' is not a torch device" in err


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--temperature", "-0.5", "must be >= 0"),
        ("--temperature", "nan", "finite"),
        ("--top-p", "0", "(0, 1]"),
        ("--top-p", "1.5", "(0, 1]"),
        ("--max-new-tokens", "0", "at least 1"),
        ("--max-new-tokens", "-3", "at least 1"),
        ("--frames", "0", "at least 1"),
        ("--batch-size", "0", "at least 1"),
    ],
)
def test_out_of_range_sampling_options_are_argparse_errors(model_dir, capsys, flag, value, says):
    with pytest.raises(SystemExit) as exit_info:
        main(["chat", "--model", str(model_dir), flag, value, "Q"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"onevision chat: error: argument {flag}: " in err and says in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["notes.txt", "a.png"])
def test_a_non_video_file_for_video_is_one_line_naming_it(model_dir, media, capfd, name):
    code = main(["chat", "--model", str(model_dir), "--video", str(media / name), *GEN, "Q"])
    out, err = capfd.readouterr()  # file-descriptor level: decoder libraries' own stderr noise counts too
    lines = _lines(err)
    assert code == 2 and out == ""
    assert len(lines) == 1, err
    assert lines[0].startswith(f"onevision chat: error: --video {media / name}: ")
    if name == "a.png":
        assert "still image" in lines[0] and "--image" in lines[0]


def test_a_real_video_still_works(model_dir, media, capsys):
    code, out, err = _run(
        capsys,
        "chat",
        "--model",
        str(model_dir),
        "--video",
        str(media / "clip.mp4"),
        "--frames",
        "2",
        *GEN,
        "Q",
    )
    assert code == 0 and out.strip(), err


# ---------------------------------------------------------------------------------------------------------------
# convert


def test_convert_refuses_a_non_empty_destination(model_dir, tmp_path, capsys):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "notes.txt").write_text("mine")
    code, _, err = _run(capsys, "convert", str(model_dir), str(dst))
    assert code == 2 and len(_lines(err)) == 1
    assert "not empty" in err and "--overwrite" in err and str(dst) in err
    assert sorted(p.name for p in dst.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    code, _, err = _run(capsys, "convert", str(model_dir), str(tmp_path / "file"))
    assert code == 2 and "not a directory" in err and (tmp_path / "file").read_text() == "x"


def test_convert_overwrite_replaces_only_the_files_it_writes(model_dir, tmp_path, capsys):
    dst = tmp_path / "dst"
    dst.mkdir()
    mine = {"notes.txt": "mine", "model_backup.safetensors": "keep me", "model-final.safetensors": "me too"}
    for name, text in mine.items():
        (dst / name).write_text(text)
    # a previous sharded export: its shards and index are the exporter's own files, replaced by the new export
    (dst / "model-00001-of-00002.safetensors").write_text("old shard")
    (dst / "model.safetensors.index.json").write_text("{}")
    code, _, err = _run(capsys, "convert", str(model_dir), str(dst), "--overwrite")
    assert code == 0, err
    for name, text in mine.items():
        assert (dst / name).read_text() == text
    assert not (dst / "model-00001-of-00002.safetensors").exists()
    assert not (dst / "model.safetensors.index.json").exists()
    assert (dst / "config.json").is_file()
    assert load_file(dst / "model.safetensors").keys() == load_file(model_dir / "model.safetensors").keys()


def test_write_state_dict_keeps_look_alike_user_files(tmp_path):
    (tmp_path / "model_backup.safetensors").write_text("keep")
    (tmp_path / "model.safetensors").write_text("stale")
    names = write_state_dict({"w": torch.zeros(2)}, tmp_path)
    assert names == ["model.safetensors"] and (tmp_path / "model_backup.safetensors").read_text() == "keep"


# ---------------------------------------------------------------------------------------------------------------
# --version, unexpected errors, --debug


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"onevision {importlib.metadata.version('onevision')}"


def test_unexpected_error_is_one_line_and_a_hint_exit_1(media, tmp_path, capsys):
    target = tmp_path / "layout.png"
    target.mkdir()  # drawing onto a directory: IsADirectoryError, not a typed user error
    code, _, err = _run(capsys, "tokens", str(media / "a.png"), "--draw", str(target))
    assert code == 1
    assert _lines(err) == [
        f"onevision tokens: error: IsADirectoryError: [Errno 21] Is a directory: '{target}'",
        "onevision tokens: run with --debug for the traceback",
    ]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(media, tmp_path, capsys, where):
    target = tmp_path / "layout.png"
    target.mkdir()
    argv = ["tokens", str(media / "a.png"), "--draw", str(target)]
    code, _, err = _run(capsys, *(["--debug", *argv] if where == "before" else [*argv, "--debug"]))
    assert code == 1 and err.startswith("Traceback (most recent call last):")
    assert (
        _lines(err)[-1]
        == f"onevision tokens: error: IsADirectoryError: [Errno 21] Is a directory: '{target}'"
    )


def test_typed_errors_keep_exit_2_without_a_hint(capsys, monkeypatch):
    def fail(*_a, **_k):
        raise onevision.CheckpointError("/nowhere: no config.json")

    monkeypatch.setattr(onevision, "load", fail)
    code, _, err = _run(capsys, "chat", "--model", "/nowhere", "Q")
    assert code == 2 and _lines(err) == ["onevision chat: error: /nowhere: no config.json"]
