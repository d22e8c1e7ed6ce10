"""http(s) media URLs, against a local ``http.server`` on 127.0.0.1: fetched and answered like local files, with a
byte limit (declared or streamed), a wall-clock limit, and fast failures for unreachable hosts and HTTP errors."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

import onevision
from tests.serve.conftest import LiveServer, serve_config

LIMIT = 2**20  # bytes per media item on the test server
FETCH_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def files(media):
    """A local web server: /a.png, /clip.mp4 (real files), /big (declared size), /chunked-big (no length
    header), /slow (drips a byte a second), /moved (redirect to /a.png), anything else 404."""
    blobs = {"/a.png": (media / "a.png").read_bytes(), "/clip.mp4": (media / "clip.mp4").read_bytes()}
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path in blobs:
                self._send(blobs[self.path], "image/png" if self.path.endswith(".png") else "video/mp4")
            elif self.path == "/big":
                self._send(b"\0" * (LIMIT + 1), "image/png")
            elif self.path == "/chunked-big":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                piece = b"\0" * 65536
                for _ in range(LIMIT // len(piece) + 2):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            elif self.path == "/slow":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", "100")
                self.end_headers()
                for _ in range(100):
                    if stop.wait(1.0):
                        break
                    self.wfile.write(b"\0")
                    self.wfile.flush()
            elif self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/a.png")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(b"not here", "text/plain", 404)

        def _send(self, data: bytes, kind: str, status: int = 200):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Quiet(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # the server under test hangs up on over-limit and slow downloads: expected

    httpd = Quiet(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    stop.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def remote(model_dir):
    config = serve_config(max_bytes=LIMIT, fetch_timeout=FETCH_TIMEOUT)
    with LiveServer({"tiny": onevision.load(str(model_dir))}, config) as live:
        yield live


def _ask(server, kind: str, url: str, **extra) -> httpx.Response:
    body = {
        "model": "tiny",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": f"{kind}_url", f"{kind}_url": {"url": url}},
                    {"type": "text", "text": "What?"},
                ],
            }
        ],
        "max_tokens": 8,
        **extra,
    }
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)


def _reference(pipe, kind: str, path, **options) -> str:
    messages = [
        {"role": "user", "content": [{"type": kind, kind: str(path)}, {"type": "text", "text": "What?"}]}
    ]
    return pipe.chat(messages, max_new_tokens=8, **options)


def test_http_image_and_video_are_answered_like_local_files(remote, files, pipe, media):
    response = _ask(remote, "image", files + "/a.png")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == _reference(pipe, "image", media / "a.png")
    response = _ask(remote, "video", files + "/clip.mp4", num_frames=3)
    assert response.status_code == 200, response.text
    expected = _reference(pipe, "video", media / "clip.mp4", num_frames=3)
    assert response.json()["choices"][0]["message"]["content"] == expected
    assert response.json()["usage"]["prompt_tokens_details"]["video_tokens"] == 3 * 16 + 1
    response = _ask(remote, "image", files + "/moved")  # redirects are followed
    assert response.status_code == 200, response.text


def test_size_limit_declared_and_streamed(remote, files):
    for path in ("/big", "/chunked-big"):
        response = _ask(remote, "image", files + path)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "media_too_large" and f"limit of {LIMIT:,} bytes" in error["message"]


def test_slow_server_hits_the_fetch_timeout(remote, files):
    start = time.monotonic()
    response = _ask(remote, "image", files + "/slow")
    assert time.monotonic() - start < FETCH_TIMEOUT + 3
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "media_fetch_timeout" and f"longer than {FETCH_TIMEOUT:g} s" in error["message"]


def test_unreachable_host_and_http_errors_fail_fast(remote, files):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    start = time.monotonic()
    response = _ask(remote, "image", f"http://127.0.0.1:{closed}/x.png")
    assert time.monotonic() - start < 2
    assert response.status_code == 400 and response.json()["error"]["code"] == "media_fetch_failed"
    response = _ask(remote, "image", files + "/missing.png")
    assert response.status_code == 400
    assert "returned HTTP 404" in response.json()["error"]["message"]
    assert _ask(remote, "image", files + "/a.png").status_code == 200  # still serving
