"""Batching: concurrent requests share batches and get exactly the sequential answers; the bounded queue answers
429 with Retry-After; the per-request timeout answers 504; a client that disconnects frees its slot."""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import onevision
from tests.serve.conftest import LiveServer, data_url, serve_config

LONG = 3000  # new tokens that take the tiny model well over ten seconds alone


def _requests(media) -> list[tuple[list[dict], list[dict], int]]:
    """(served messages, reference messages, max_tokens): text, one image, two images, a video, multi-turn."""
    a, b, c, clip = (media / n for n in ("a.png", "b.jpg", "c.png", "clip.mp4"))
    out = []
    for i in range(20):
        question = f"Question {i}: " + "tell me more " * (i % 4)
        kind = i % 5
        if kind == 0:
            served = ref = [{"role": "user", "content": question}]
        elif kind == 1:
            served = [_with([("image", a)], question)]
            ref = [_with([("image", a)], question, local=True)]
        elif kind == 2:
            served = [_with([("image", b), ("image", c)], question)]
            ref = [_with([("image", b), ("image", c)], question, local=True)]
        elif kind == 3:
            served = [_with([("video", clip)], question)]
            ref = [_with([("video", clip)], question, local=True)]
        else:
            turns = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"}]
            served = [*turns, _with([("image", c)], question)]
            ref = [*turns, _with([("image", c)], question, local=True)]
        out.append((served, ref, 6 + i % 7))
    return out


def _with(media: list, text: str, local: bool = False) -> dict:
    parts = []
    for kind, path in media:
        if local:
            parts.append({"type": kind, kind: str(path)})
        else:
            parts.append({"type": f"{kind}_url", f"{kind}_url": {"url": data_url(path)}})
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


def test_pipeline_batch_greedy_answers_equal_single_ones(pipe, media):
    requests = [{"messages": ref} for _, ref, _ in _requests(media)[:10]]
    batched = pipe.batch(requests, batch_size=len(requests), max_new_tokens=12)
    single = [pipe.batch([r], max_new_tokens=12)[0] for r in requests]
    assert batched == single


def test_concurrent_requests_are_batched_and_identical_to_sequential_ones(server, client, pipe, media):
    cases = _requests(media)
    expected = [pipe.chat(ref, max_new_tokens=n) for _, ref, n in cases]
    batches_before = server.metric("onevision_batch_size_count", model="tiny")
    rows_before = server.metric("onevision_batch_size_sum", model="tiny")

    def ask(case):
        served, _, n = case
        if n % 2:  # half of them stream
            stream = client.chat.completions.create(model="tiny", messages=served, max_tokens=n, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        return (
            client.chat.completions.create(model="tiny", messages=served, max_tokens=n)
            .choices[0]
            .message.content
        )

    with ThreadPoolExecutor(len(cases)) as pool:
        answers = list(pool.map(ask, cases))
    assert answers == expected
    batches = server.metric("onevision_batch_size_count", model="tiny") - batches_before
    rows = server.metric("onevision_batch_size_sum", model="tiny") - rows_before
    assert rows == len(cases)
    assert batches < len(cases) / 2, f"{len(cases)} concurrent requests ran in {batches} batches"


@pytest.fixture(scope="module")
def one_slot(model_dir):
    """One request at a time, one waiting, 3 s per request."""
    config = serve_config(max_batch_size=1, max_queue=1, request_timeout=3.0, batch_window=0.0)
    with LiveServer({"tiny": onevision.load(str(model_dir))}, config) as live:
        yield live


@pytest.fixture(scope="module")
def patient(model_dir):
    """One request at a time and a long timeout: only a disconnect can end a long request early."""
    config = serve_config(max_batch_size=1, max_queue=4, request_timeout=120.0)
    with LiveServer({"tiny": onevision.load(str(model_dir))}, config) as live:
        yield live


def _long_body(stream: bool = False) -> dict:
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Go on forever."}],
        "max_tokens": LONG,
        "stream": stream,
    }


def _wait_for(predicate, timeout: float = 20.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)
    return time.monotonic() - start


def _post_in_thread(url: str, body: dict, results: list) -> threading.Thread:
    def run():
        start = time.monotonic()
        response = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
        results.append((response, time.monotonic() - start))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_full_queue_answers_429_and_timeouts_answer_504(one_slot):
    cancelled = one_slot.metric("onevision_finished_total", model="tiny", reason="cancelled")
    running, waiting = [], []
    t1 = _post_in_thread(one_slot.url, _long_body(), running)
    _wait_for(lambda: one_slot.metric("onevision_running_requests", model="tiny") == 1)
    t2 = _post_in_thread(one_slot.url, _long_body(), waiting)
    _wait_for(lambda: one_slot.metric("onevision_queue_depth", model="tiny") == 1)

    refused = httpx.post(one_slot.url + "/v1/chat/completions", json=_long_body(), timeout=10)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    error = refused.json()["error"]
    assert (
        error["type"] == "rate_limit_error"
        and error["code"] == "queue_full"
        and "--max-queue 1" in error["message"]
    )
    streamed = httpx.post(one_slot.url + "/v1/chat/completions", json=_long_body(stream=True), timeout=10)
    assert streamed.status_code == 429  # refused before the stream starts

    t1.join(30)
    t2.join(30)
    for response, seconds in (*running, *waiting):  # both hit the 3 s deadline (queueing counts)
        assert response.status_code == 504, response.text
        assert response.json()["error"]["code"] == "timeout" and "3 s" in response.json()["error"]["message"]
        assert seconds < 10
    # the timed-out row stopped at once and freed the slot: the next request is served right away
    _wait_for(lambda: one_slot.metric("onevision_running_requests", model="tiny") == 0, timeout=5)
    assert one_slot.metric("onevision_finished_total", model="tiny", reason="cancelled") - cancelled == 2
    ok = httpx.post(
        one_slot.url + "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        timeout=10,
    )
    assert ok.status_code == 200


def test_streaming_client_disconnect_frees_its_slot(patient):
    cancelled = patient.metric("onevision_finished_total", model="tiny", reason="cancelled")
    generated = patient.metric("onevision_generation_tokens_total", model="tiny")
    with httpx.stream(
        "POST", patient.url + "/v1/chat/completions", json=_long_body(stream=True), timeout=30
    ) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]  # the role chunk and a few deltas, then hang up
    assert any('"content"' in line for line in got)
    freed = _wait_for(lambda: patient.metric("onevision_running_requests", model="tiny") == 0, timeout=5)
    assert freed < 3
    _wait_for(
        lambda: patient.metric("onevision_finished_total", model="tiny", reason="cancelled") > cancelled, 5
    )
    assert patient.metric("onevision_generation_tokens_total", model="tiny") - generated < LONG / 2
    ok = httpx.post(
        patient.url + "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        timeout=10,
    )
    assert ok.status_code == 200


def test_non_streaming_client_disconnect_frees_its_slot_and_its_queue_place(patient):
    cancelled = patient.metric("onevision_finished_total", model="tiny", reason="cancelled")

    def hang_up():
        with contextlib.suppress(httpx.ReadTimeout):  # the client gives up after 1 s and hangs up
            httpx.post(patient.url + "/v1/chat/completions", json=_long_body(), timeout=1.0)

    first = threading.Thread(target=hang_up)
    first.start()
    _wait_for(lambda: patient.metric("onevision_running_requests", model="tiny") == 1)
    second = threading.Thread(target=hang_up)  # this one waits in the queue when its client leaves
    second.start()
    first.join()
    second.join()
    _wait_for(lambda: patient.metric("onevision_running_requests", model="tiny") == 0, timeout=3)
    _wait_for(lambda: patient.metric("onevision_queue_depth", model="tiny") == 0, timeout=3)
    _wait_for(
        lambda: patient.metric("onevision_finished_total", model="tiny", reason="cancelled") - cancelled == 2,
        5,
    )
