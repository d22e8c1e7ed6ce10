"""``onevision.load`` pipelines and the ``onevision chat`` CLI (single question, streaming, JSONL batch mode)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import onevision
from onevision.checkpoints import save_native
from onevision.cli import main


@pytest.fixture(scope="module")
def model_dir(pipe, tmp_path_factory):
    d = tmp_path_factory.mktemp("chat-model")
    save_native(pipe, d)
    return d


@pytest.fixture(scope="module")
def media(tmp_path_factory, image_a, image_b):
    from video.testing import write_counter_video

    d = tmp_path_factory.mktemp("media")
    image_a.save(d / "a.png")
    image_b.save(d / "b.jpg", quality=95)
    write_counter_video(d / "clip.mp4", num_frames=24, width=96, height=64)
    return d


GEN = ["--max-new-tokens", "6"]


def _chat(capsys, *args):
    code = main(["chat", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_low_level_path_is_transformers_style(pipe, image_a):
    inputs = pipe.processor(text="<image>\nWhat is this?", images=[image_a])
    logits = pipe.model(**inputs).logits
    assert logits.shape == (1, inputs.input_ids.shape[1], pipe.model.language_model.config.vocab_size)


def test_chat_cli_answers_about_one_image(model_dir, media, capsys):
    pipe = onevision.load(str(model_dir))
    expected = pipe.generate("What is in it?", images=[str(media / "a.png")], max_new_tokens=6)
    code, out, _ = _chat(
        capsys, "--model", str(model_dir), "--image", str(media / "a.png"), *GEN, "What is in it?"
    )
    assert expected  # a non-empty answer (the tiny random model rarely emits EOS first)
    assert code == 0 and out.strip() == expected


def test_chat_cli_two_images_and_a_video(model_dir, media, capsys):
    pipe = onevision.load(str(model_dir))
    images = [str(media / "a.png"), str(media / "b.jpg")]
    expected = pipe.generate("Compare them.", images=images, max_new_tokens=6)
    code, out, _ = _chat(
        capsys, "--model", str(model_dir), "--image", images[0], "--image", images[1], *GEN, "Compare them."
    )
    assert code == 0 and out.strip() == expected
    expected = pipe.generate("What happens?", video=str(media / "clip.mp4"), num_frames=4, max_new_tokens=6)
    code, out, _ = _chat(
        capsys,
        "--model",
        str(model_dir),
        "--video",
        str(media / "clip.mp4"),
        "--frames",
        "4",
        *GEN,
        "What happens?",
    )
    assert code == 0 and out.strip() == expected
    code, out, _ = _chat(
        capsys,
        "--model",
        str(model_dir),
        "--video",
        str(media / "clip.mp4"),
        "--frames",
        "4",
        *GEN,
        "--no-stream",
        "What happens?",
    )
    assert code == 0 and out.strip() == expected


def test_chat_cli_reports_bad_input_in_one_line(model_dir, media, capsys):
    code, _, err = _chat(capsys, "--model", str(model_dir), "--image", str(media / "nope.png"), "Q")
    assert code == 2 and "nope.png" in err
    # tags typed in the question are plain text (issue #13 point 9), no longer extra media slots to reject
    code, _, err = _chat(
        capsys,
        "--model",
        str(model_dir),
        "--image",
        str(media / "a.png"),
        *GEN,
        "--no-stream",
        "<image> <image> Q",
    )
    assert code == 0 and "Traceback" not in err


def test_batch_mode_jsonl(model_dir, media, tmp_path, capsys):
    requests = [
        {"id": "one", "prompt": "Describe.", "image": "a.png"},
        {"id": "two", "prompt": "Compare.", "images": ["a.png", "b.jpg"]},
        {"id": "vid", "prompt": "Summarise.", "video": "clip.mp4"},
        {"id": "txt", "messages": [{"role": "user", "content": "Hello!"}]},
        {"id": "bad", "prompt": "Q", "image": "nope.png"},  # (typed tags are text now, not a bad request)
        {"id": "worse"},
    ]
    src = media / "requests.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in requests))
    out = tmp_path / "answers.jsonl"
    code, _, err = _chat(
        capsys,
        "--model",
        str(model_dir),
        "--batch",
        str(src),
        "--output",
        str(out),
        *GEN,
        "--frames",
        "4",
        "--batch-size",
        "3",
    )
    assert code == 1 and "2 of 6 request(s) failed" in err
    assert "onevision chat" in err  # the tqdm progress bar
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["one", "two", "vid", "txt", "bad", "worse"]
    assert "nope.png" in rows[4]["error"] and "prompt" in rows[5]["error"]
    pipe = onevision.load(str(model_dir))
    expected = [
        pipe.generate("Describe.", images=[str(media / "a.png")], max_new_tokens=6),
        pipe.generate("Compare.", images=[str(media / "a.png"), str(media / "b.jpg")], max_new_tokens=6),
        pipe.generate("Summarise.", video=str(media / "clip.mp4"), max_new_tokens=6, num_frames=4),
        pipe.chat([{"role": "user", "content": "Hello!"}], max_new_tokens=6),
    ]
    assert [r["answer"] for r in rows[:4]] == expected


def test_pipeline_batch_equals_one_by_one(pipe, image_a, image_b):
    requests = [
        {"prompt": "A?", "images": [image_a]},
        {"prompt": "B?"},
        {"prompt": "C?", "images": [image_b, image_a]},
    ]
    batched = pipe.batch(requests, max_new_tokens=5)
    singles = [pipe.batch([r], max_new_tokens=5)[0] for r in requests]
    assert batched == singles


def test_pipeline_device_and_dtype(model_dir, image_a):
    pipe = onevision.load(str(model_dir), dtype=torch.bfloat16)
    assert pipe.model.dtype == torch.bfloat16
    inputs = pipe.processor(text="<image>", images=[image_a]).to(pipe.model.device, pipe.model.dtype)
    assert inputs.pixel_values.dtype == torch.bfloat16 and inputs.input_ids.dtype == torch.long
    with torch.no_grad():
        assert torch.isfinite(pipe.model(**inputs).logits.float()).all()


@pytest.mark.heavy
def test_console_script_streams(model_dir, media):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "onevision.cli",
            "chat",
            "--model",
            str(model_dir),
            "--image",
            str(media / "a.png"),
            "--max-new-tokens",
            "4",
            "Hi?",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\n")
