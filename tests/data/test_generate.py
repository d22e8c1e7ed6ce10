"""``onevision data generate`` against a loopback stub: contexts with normalised boxes, the three kinds, retries on
429/5xx, a concurrency limit, malformed replies counted and never written, and resume by id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onevision.cli import main
from onevision.data.generate import generate
from onevision.data.instruct import (
    ImageContext,
    MalformedReply,
    load_instructions,
    load_prompts,
    make_record,
    parse_conversation,
    read_contexts,
)
from onevision.errors import DataError

from .stub_openai import StubServer

CONVERSATION = "Question:\nWhat animal is this?\n===\nAnswer:\nA cat.\n===\nQuestion:\nWhere is it?\n===\nAnswer:\nOn a sofa."
DETAIL = "A grey cat sleeps on a red sofa next to a window."


def _coco(tmp_path: Path, n: int = 3) -> tuple[Path, Path]:
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 200, "height": 100} for i in range(1, n + 1)]
    caps = [
        {"image_id": i, "id": 10 + i, "caption": f"A  cat number {i}\n on a sofa."} for i in range(1, n + 1)
    ]
    caps.append({"image_id": 1, "id": 99, "caption": "A second caption."})
    inst = [{"image_id": 1, "category_id": 17, "bbox": [20, 10, 100, 50], "id": 5}]
    c, i = tmp_path / "captions.json", tmp_path / "instances.json"
    c.write_text(json.dumps({"images": images, "annotations": caps}))
    i.write_text(
        json.dumps({"images": images, "annotations": inst, "categories": [{"id": 17, "name": "cat"}]})
    )
    return c, i


def _reply_by_kind(body: dict) -> str:
    system = body["messages"][0]["content"]
    if system == load_prompts("conversation").system:
        return CONVERSATION
    return DETAIL


def test_contexts_hold_captions_and_normalised_boxes(tmp_path):
    c, i = _coco(tmp_path)
    ctx = read_contexts(c, i)
    assert [x.image_id for x in ctx] == ["1", "2", "3"]
    assert ctx[0].context == "A cat number 1 on a sofa.\nA second caption.\n\ncat: [0.1, 0.1, 0.6, 0.6]"
    assert ctx[1].context == "A cat number 2 on a sofa."  # no boxes for this image


def test_a_captions_file_without_images_is_refused_naming_it(tmp_path):
    bad = tmp_path / "caps.json"
    bad.write_text(json.dumps({"annotations": [{"image_id": 1, "caption": "x"}]}))
    with pytest.raises(DataError, match=r"caps\.json: no 'images' list"):
        read_contexts(bad)
    assert main(["data", "generate", "--captions", str(bad), "--api-base", "http://127.0.0.1:9/v1", "--model", "m",
                 "--out", str(tmp_path / "o.jsonl")]) == 2  # fmt: skip


def test_replies_parse_into_llava_records():
    ctx = ImageContext("7", "7.jpg", "ctx")
    rec = make_record(ctx, "conversation", CONVERSATION, ())
    assert rec["id"] == "7_conversation" and rec["image"] == "7.jpg"
    assert [t["from"] for t in rec["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert rec["conversations"][0]["value"] == "<image>\nWhat animal is this?"
    assert rec["conversations"][2]["value"] == "Where is it?"
    detail = make_record(ctx, "detail", DETAIL, load_instructions("detail"))
    assert detail["conversations"][0]["value"].removeprefix("<image>\n") in load_instructions("detail")
    assert detail["conversations"][1] == {"from": "gpt", "value": DETAIL}
    assert make_record(ctx, "detail", DETAIL, load_instructions("detail")) == detail  # seeded draw
    for bad in (
        "Question:\nq?\n===\nAnswer:\na\n===\nQuestion:\nq2?",
        "Answer:\na\n===\nQuestion:\nq",
        "no blocks",
    ):
        with pytest.raises(MalformedReply):
            parse_conversation(bad)
    with pytest.raises(MalformedReply):
        make_record(ctx, "detail", "  ", ())


def test_generate_retries_on_429_and_500_then_writes_every_kind(tmp_path):
    c, i = _coco(tmp_path)
    out = tmp_path / "gen" / "out.jsonl"
    with StubServer(_reply_by_kind, failures=[429, 500, 503]) as stub:
        result = generate(read_contexts(c, i), ["conversation", "detail", "complex"], out, api_base=stub.url,
                          model="stub", concurrency=2, backoff=0.01)  # fmt: skip
    assert result.retries == 3 and result.written == 9 and not result.malformed
    assert len(stub.requests) == 12
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(
        f"{n}_{k}" for n in "123" for k in ("conversation", "detail", "complex")
    )
    first = stub.requests[-1]["messages"]
    assert first[0]["role"] == "system" and first[1]["role"] == "user" and first[2]["role"] == "assistant"


def test_retries_give_up_after_the_limit_with_one_line(tmp_path, capsys):
    c, _ = _coco(tmp_path, 1)
    out = tmp_path / "o.jsonl"
    with StubServer(_reply_by_kind, failures=[500] * 10) as stub:
        rc = main(["data", "generate", "--captions", str(c), "--kinds", "detail", "--api-base", stub.url,
                   "--model", "m", "--out", str(out), "--retries", "2", "--backoff", "0.01"])  # fmt: skip
    assert rc == 1 and len(stub.requests) == 3
    assert len(capsys.readouterr().err.strip().splitlines()) == 2  # the error line and the --debug hint


def test_malformed_replies_are_counted_not_written_and_retried_on_resume(tmp_path, capsys):
    c, i = _coco(tmp_path)
    out = tmp_path / "out.jsonl"

    def flaky(body: dict) -> str:  # image 2's conversation is malformed on the first run only
        if "number 2" in body["messages"][-1]["content"] and not calls:
            calls.append(1)
            return "Question: but never answered"
        return _reply_by_kind(body)

    calls: list[int] = []
    with StubServer(flaky) as stub:
        r1 = generate(read_contexts(c, i), ["conversation"], out, api_base=stub.url, model="m", backoff=0.01)
    assert r1.written == 2 and r1.malformed == {"conversation": 1}
    assert "2_conversation" not in out.read_text()
    rejected = [json.loads(x) for x in (tmp_path / "out.rejected.jsonl").read_text().splitlines()]
    assert rejected[0]["id"] == "2_conversation" and "never answered" in rejected[0]["reply"]
    # an interrupted write left half a line: it is cut, and only the missing id is requested again
    with open(out, "a") as f:
        f.write('{"id": "3_conv')
    with StubServer(flaky) as stub:
        rc = main(["data", "generate", "--captions", str(c), "--instances", str(i), "--kinds", "conversation",
                   "--api-base", stub.url, "--model", "m", "--out", str(out), "--backoff", "0.01"])  # fmt: skip
    assert rc == 0 and len(stub.requests) == 1
    assert "1 records written, 2 already done, 0 malformed" in capsys.readouterr().out
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert sorted(ids) == ["1_conversation", "2_conversation", "3_conversation"]


def test_concurrency_limit_is_respected(tmp_path):
    import threading
    import time

    c, _ = _coco(tmp_path, 6)
    active, peak, lock = [0], [0], threading.Lock()

    def slow(body: dict) -> str:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return DETAIL

    with StubServer(slow) as stub:
        r = generate(
            read_contexts(c), ["detail"], tmp_path / "o.jsonl", api_base=stub.url, model="m", concurrency=2
        )
    assert r.written == 6 and peak[0] == 2
