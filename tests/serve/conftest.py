"""Fixtures for the server tests: a tiny saved model, media files, and servers on loopback (uvicorn in a thread,
on a socket bound to 127.0.0.1 port 0). The reference pipeline is loaded separately from the served ones."""

from __future__ import annotations

import base64
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import onevision
import onevision.testing
from onevision.serve import MediaLimits, ServeConfig, create_app
from onevision.serve.app import bind

#: The main test server's limits (tests name these numbers).
MAX_MODEL_LEN = 512
MAX_IMAGE_PIXELS = 100_000
PER_PROMPT = {"image": 3, "video": 1}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("serve-model") / "tiny"
    onevision.testing.tiny_pipeline(seed=0).save(str(d))
    return d


@pytest.fixture(scope="session")
def pipe(model_dir):
    """The reference: the saved model loaded on its own, called with ``pipe.chat`` like a library user."""
    return onevision.load(str(model_dir))


def _image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Path:
    from video.testing import write_counter_video

    d = tmp_path_factory.mktemp("serve-media")
    _image(64, 48, 0).save(d / "a.png")
    _image(100, 80, 1).save(d / "b.jpg", quality=95)
    _image(56, 72, 2).save(d / "c.png")
    _image(300, 200, 3).save(d / "big_tokens.png")  # 634 visual tokens: over MAX_MODEL_LEN
    _image(400, 300, 4).save(d / "big_pixels.png")  # 120,000 pixels: over MAX_IMAGE_PIXELS
    write_counter_video(d / "clip.mp4", num_frames=24, width=96, height=64)
    (d / "notes.txt").write_text("not an image at all\n")
    return d


def data_url(path: Path, mime: str | None = None) -> str:
    mime = mime or {".png": "image/png", ".jpg": "image/jpeg", ".mp4": "video/mp4"}.get(path.suffix, "")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


class LiveServer:
    """``create_app(models, config)`` served by uvicorn in a thread on 127.0.0.1 (a free port)."""

    def __init__(self, models: dict, config: ServeConfig):
        import uvicorn

        self.app = create_app(models, config)
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()

    def client(self, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """The value of one Prometheus series (0 when absent)."""
        import httpx

        text = httpx.get(self.url + "/metrics", timeout=10).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
            if m and m.group(1) == name and ",".join(sorted((m.group(2) or "").split(","))) == want:
                return float(m.group(3))
        return 0.0


def serve_config(media_dir: Path | None = None, **overrides) -> ServeConfig:
    media = MediaLimits(
        per_prompt=dict(PER_PROMPT),
        max_image_pixels=MAX_IMAGE_PIXELS,
        max_bytes=overrides.pop("max_bytes", 2**20),
        fetch_timeout=overrides.pop("fetch_timeout", 10.0),
        allowed_local_paths=(media_dir,) if media_dir is not None else (),
    )
    return ServeConfig(media=media, **overrides)


@pytest.fixture(scope="session")
def server(model_dir, media):
    """The main server: model ``tiny`` (and ``tiny-b``, the same checkpoint under another name)."""
    models = {"tiny": onevision.load(str(model_dir)), "tiny-b": onevision.load(str(model_dir))}
    config = serve_config(media, max_batch_size=16, batch_window=0.05, max_model_len=MAX_MODEL_LEN)
    with LiveServer(models, config) as live:
        yield live


@pytest.fixture(scope="session")
def client(server):
    return server.client()
