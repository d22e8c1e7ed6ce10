"""Issue #13 hardening of the processor's token counting for image paths: non-regular files are refused before
any open (nothing hangs), and ``max_pixels`` governs the header-only count as it governs preprocessing."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import anyres
from onevision.config import ProcessorConfig
from onevision.policy import ImagePolicy, VisualPolicy
from onevision.processor import OneVisionProcessor
from tests.model.conftest import PATCH, TILE, random_image

LIMIT = 100_000


@pytest.fixture(scope="module")
def processor(tokenizer) -> OneVisionProcessor:
    return OneVisionProcessor(tokenizer, _config(LIMIT))


def _config(max_pixels: int) -> ProcessorConfig:
    limit = {"max_pixels": max_pixels}
    visual = VisualPolicy(
        tile_size=TILE,
        patch_size=PATCH,
        image=ImagePolicy("anyres_max_9", limit),
        multi_image=ImagePolicy("pad", limit),
    )
    return ProcessorConfig(visual=visual)


def _count_within(processor: OneVisionProcessor, text: str, images: list, fifo: Path | None = None):
    """``count_tokens`` in a thread: fail instead of hanging; return what it raised."""
    outcome: dict[str, BaseException] = {}

    def target() -> None:
        try:
            processor.count_tokens(text, images=images)
        except BaseException as exc:  # handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(3)
    if thread.is_alive():
        if fifo is not None:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail("count_tokens was still running after 3 s")
    return outcome.get("error")


def test_count_tokens_refuses_non_regular_files_quickly(processor, tmp_path):
    root = Path(tempfile.mkdtemp(prefix="ovp"))  # short: unix socket paths are limited to ~108 bytes
    fifo = root / "pipe.jpg"
    os.mkfifo(fifo)
    sock_path = root / "s.png"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    good = tmp_path / "ok.png"
    random_image(90, 70, seed=0).save(good)
    cases = [(fifo, "a FIFO"), (Path("/dev/zero"), "a character device"), (tmp_path, "a directory")]
    cases.append((sock_path, "a socket"))
    try:
        for path, what in cases:
            for text, images in (("<image>", [str(path)]), ("<image><image>", [good, path])):
                error = _count_within(processor, text, images, fifo=path if path == fifo else None)
                assert isinstance(error, anyres.ImageError), (path, error)
                assert f"{path}: not a regular file ({what})" in str(error)
    finally:
        sock.close()
        os.unlink(sock_path)
        os.unlink(fifo)
        os.rmdir(root)


def test_count_tokens_applies_max_pixels_to_paths_like_the_other_inputs(processor, tmp_path):
    big = random_image(400, 300, seed=1)  # 120,000 pixels > LIMIT
    path = tmp_path / "big.png"
    big.save(path)
    for obj in (str(path), path, big, np.asarray(big)):
        with pytest.raises(anyres.ImageError, match="over the limit of 100,000") as err:
            processor.count_tokens("<image>", images=[obj])
        assert "max_pixels" in str(err.value)
    small = tmp_path / "small.png"
    random_image(200, 150, seed=2).save(small)
    assert (
        processor.count_tokens("<image>", images=[str(small)]).visual
        == processor.count_tokens("<image>", images=[anyres.ImageSize(150, 200)]).visual
    )


def test_count_tokens_is_not_preempted_by_pils_own_limit(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # far below the image: PIL alone would refuse it
    path = tmp_path / "wide.png"
    random_image(400, 300, seed=3).save(path)
    proc = OneVisionProcessor(tokenizer, _config(1_000_000))
    expected = proc.count_tokens("<image>", images=[anyres.ImageSize(300, 400)]).visual
    assert proc.count_tokens("<image>", images=[str(path)]).visual == expected
    assert Image.MAX_IMAGE_PIXELS == 10_000
