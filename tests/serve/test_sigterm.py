"""``onevision serve`` as a subprocess: SIGTERM with requests in flight. Short ones finish, long ones get a clean
503 (JSON, or an error event that ends the stream) before the grace period ends, and the process exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
GRACE = 4.0


def _start(model_dir: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "onevision.cli",
            "serve",
            "--model",
            f"tiny={model_dir}",
            "--port",
            "0",
            "--max-batch-size",
            "4",
            "--batch-window-ms",
            "1000",  # the four requests share one batch: the short ones must not wait behind the long ones
            "--shutdown-timeout",
            str(GRACE),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()  # "onevision serve: serving tiny on http://127.0.0.1:PORT/v1"
    if "serving" not in line:
        proc.kill()
        raise AssertionError(f"the server did not start: {line!r} {proc.stderr.read()}")
    return proc, line.strip().rsplit(" ", 1)[-1].removesuffix("/v1")


def _body(max_tokens: int, stream: bool) -> dict:
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Go on forever."}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


def test_sigterm_finishes_or_cancels_in_flight_requests_and_exits_0(model_dir):
    proc, url = _start(model_dir)
    results: dict[str, object] = {}
    first_chunk = threading.Event()

    def plain(name: str, max_tokens: int) -> None:
        response = httpx.post(url + "/v1/chat/completions", json=_body(max_tokens, False), timeout=60)
        results[name] = (response.status_code, response.json())

    def streamed(name: str, max_tokens: int) -> None:
        with httpx.stream(
            "POST", url + "/v1/chat/completions", json=_body(max_tokens, True), timeout=60
        ) as r:
            events = []
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    first_chunk.set()
        results[name] = (r.status_code, events)

    try:
        threads = [
            threading.Thread(target=plain, args=("short", 40)),
            threading.Thread(target=streamed, args=("short-stream", 40)),
            threading.Thread(target=plain, args=("long", 3000)),
            threading.Thread(target=streamed, args=("long-stream", 3000)),
        ]
        for t in threads:
            t.start()
        assert first_chunk.wait(30), "no request got going"
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(timeout=GRACE + 15)
        exited = time.monotonic() - sent
        for t in threads:
            t.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    assert code == 0, stderr
    assert exited < GRACE + 5, f"took {exited:.1f} s to exit"
    assert "onevision serve: stopped" in stderr

    status, body = results["short"]
    assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length")
    status, events = results["short-stream"]
    assert status == 200 and events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("stop", "length")
    status, body = results["long"]
    assert status == 503 and body["error"]["code"] == "shutting_down"
    status, events = results["long-stream"]
    assert status == 200 and events[-1] == "[DONE]"  # the stream had started: it ends with an error event
    assert json.loads(events[-2])["error"]["code"] == "shutting_down"
