"""Every bad request gets a 4xx JSON error naming the problem (and its numbers), and the server keeps serving."""

from __future__ import annotations

import base64
import os
import socket
import time

import httpx
import openai
import pytest

from tests.serve.conftest import MAX_IMAGE_PIXELS, MAX_MODEL_LEN, data_url


def _post(server, body, **kwargs) -> httpx.Response:
    if isinstance(body, (bytes, str)):
        kwargs.setdefault("headers", {"content-type": "application/json"})
        return httpx.post(server.url + "/v1/chat/completions", content=body, timeout=30, **kwargs)
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30, **kwargs)


def _error(response: httpx.Response, status: int, *, param=None, code=None, says=()) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param"}
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    for words in says:
        assert words in error["message"], (words, error["message"])
    return error


def _user(*parts) -> list[dict]:
    return [{"role": "user", "content": [*parts, {"type": "text", "text": "What is it?"}]}]


def _image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def _video(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def _chat(messages, **extra) -> dict:
    return {"model": "tiny", "messages": messages, "max_tokens": 4, **extra}


@pytest.fixture(autouse=True)
def still_serving(server, client):
    yield
    out = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "ok?"}], max_tokens=2
    )
    assert out.choices[0].message.content is not None


def test_malformed_json(server):
    error = _error(
        _post(server, b'{"model": "tiny", "messages": ['), 400, code="invalid_json", says=["not valid JSON"]
    )
    assert error["type"] == "invalid_request_error"
    _error(_post(server, b"\xff\xfe"), 400, code="invalid_json")
    _error(_post(server, b""), 400, code="invalid_json")
    _error(_post(server, b"[1, 2]"), 400, says=["JSON object", "an array"])


def test_unknown_model(server, client):
    error = _error(_post(server, {**_chat([{"role": "user", "content": "hi"}]), "model": "gpt-4o"}), 404)
    assert error["param"] == "model" and error["code"] == "model_not_found"
    assert "'gpt-4o'" in error["message"] and "tiny, tiny-b" in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    _error(httpx.get(server.url + "/v1/models/nope", timeout=10), 404, code="model_not_found")


def test_invalid_base64(server):
    response = _post(server, _chat(_user(_image("data:image/png;base64,iVBORw0K!!!notbase64"))))
    _error(
        response, 400, param="messages[0].content[0].image_url.url", code="invalid_base64", says=["base64"]
    )
    _error(_post(server, _chat(_user(_image("data:image/png;base64")))), 400, says=["malformed data: URL"])


def test_bytes_that_are_not_an_image_or_a_video(server, media):
    text = data_url(media / "notes.txt", "image/png")
    _error(_post(server, _chat(_user(_image(text)))), 400, code="invalid_image", says=["not a usable image"])
    _error(
        _post(server, _chat(_user(_video(data_url(media / "notes.txt", "video/mp4"))))),
        400,
        param="messages[0].content[0].video_url.url",
        code="invalid_video",
        says=["not a readable video"],
    )
    _error(_post(server, _chat(_user(_video(data_url(media / "a.png"))))), 400, says=["a still image"])
    truncated = base64.b64encode((media / "b.jpg").read_bytes()[:300]).decode()
    _error(
        _post(server, _chat(_user(_image(f"data:image/jpeg;base64,{truncated}")))), 400, code="invalid_image"
    )


def test_image_over_the_pixel_limit(server, media):
    error = _error(
        _post(server, _chat(_user(_image(data_url(media / "big_pixels.png"))))), 400, code="image_too_large"
    )
    assert "120,000 pixels" in error["message"] and f"{MAX_IMAGE_PIXELS:,}" in error["message"]


def test_more_media_than_the_per_prompt_limit(server, media):
    url = data_url(media / "a.png")
    error = _error(_post(server, _chat(_user(*[_image(url)] * 4))), 400, code="too_many_media")
    assert "4 image(s)" in error["message"] and "limit of 3" in error["message"]
    clip = data_url(media / "clip.mp4")
    _error(_post(server, _chat(_user(_video(clip), _video(clip)))), 400, says=["2 video(s)", "limit of 1"])


def test_refused_file_urls(server, media, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes((media / "a.png").read_bytes())
    error = _error(_post(server, _chat(_user(_image(outside.as_uri())))), 403, code="local_media_refused")
    assert error["type"] == "permission_error" and str(media) in error["message"]
    _error(_post(server, _chat(_user(_image("file:///etc/passwd")))), 403, code="local_media_refused")
    link = media / "escape.png"  # a symlink under the allowed folder that points outside it
    if not link.exists():
        os.symlink(outside, link)
    _error(_post(server, _chat(_user(_image(link.as_uri())))), 403, code="local_media_refused")
    traversal = f"file://{media}/../{outside.parent.name}/secret.png"
    _error(_post(server, _chat(_user(_image(traversal)))), 403)
    _error(_post(server, _chat(_user(_image((media / "missing.png").as_uri())))), 400, code="media_not_found")
    _error(_post(server, _chat(_user(_image("ftp://example.com/a.png")))), 400, code="invalid_url")


def test_unreachable_url_fails_fast(server):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    response = _post(server, _chat(_user(_image(f"http://127.0.0.1:{port}/a.png"))))
    assert time.monotonic() - start < 5
    _error(response, 400, code="media_fetch_failed", says=["cannot fetch", f"127.0.0.1:{port}"])


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (-1, "at least 1"),
        (0, "at least 1"),
        (2.5, "whole number"),
        ("10", "whole number"),
        (True, "whole number"),
    ],
)
def test_bad_max_tokens(server, value, says):
    _error(
        _post(server, {**_chat([{"role": "user", "content": "hi"}]), "max_tokens": value}),
        400,
        param="max_tokens",
        says=[says],
    )


def test_absurd_max_tokens_name_the_context(server, media):
    error = _error(
        _post(server, _chat([{"role": "user", "content": "hi"}], max_tokens=10**9)), 400, param="max_tokens"
    )
    assert f"{10**9}" in error["message"] and f"context of {MAX_MODEL_LEN}" in error["message"]
    body = _chat(_user(_image(data_url(media / "a.png"))), max_tokens=450)  # fits alone, not with the prompt
    error = _error(_post(server, body), 400, param="max_tokens", code="context_length_exceeded")
    assert "max_tokens 450" in error["message"] and "118 image" in error["message"]
    assert f"context of {MAX_MODEL_LEN}" in error["message"] and "at most" in error["message"]
    error = _error(_post(server, _chat([{"role": "user", "content": "hi"}], max_completion_tokens=-3)), 400)
    assert error["param"] == "max_completion_tokens"


def test_visual_tokens_overflowing_the_context(server, media):
    error = _error(
        _post(server, _chat(_user(_image(data_url(media / "big_tokens.png"))))),
        400,
        param="messages",
        code="context_length_exceeded",
    )
    assert "634 image" in error["message"] and f"context of {MAX_MODEL_LEN} tokens" in error["message"]
    # and streamed requests get the same answer as an SSE error event
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json={**_chat(_user(_image(data_url(media / "big_tokens.png")))), "stream": True},
        timeout=30,
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert '"context_length_exceeded"' in lines[-2] and lines[-1] == "data: [DONE]"


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0].type"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "messages[1].role",
        ),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            None,
        ),
        ({"model": ""}, "model"),
        ({"temperature": 5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"seed": -1}, "seed"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"stream": "yes"}, "stream"),
        ({"num_frames": 0}, "num_frames"),
    ],
)
def test_invalid_fields(server, patch, param):
    _error(_post(server, {**_chat([{"role": "user", "content": "hi"}]), **patch}), 400, param=param)


def test_unknown_routes_and_methods_answer_json_errors(server):
    _error(httpx.get(server.url + "/v1/completions", timeout=10), 404)
    _error(httpx.get(server.url + "/v1/chat/completions", timeout=10), 405)


def test_oversized_media(server, media):
    big = base64.b64encode(os.urandom(2**20 + 10)).decode()  # the test server allows 1 MiB per item
    _error(_post(server, _chat(_user(_image(f"data:image/png;base64,{big}")))), 400, code="media_too_large")
