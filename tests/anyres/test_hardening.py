"""Issue #13 hardening of image inputs: non-regular files are refused before any open, and lazily opened
truncated PIL images and over-limit images (``max_pixels``, whatever PIL's own limit) raise :class:`ImageError`."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import anyres
from anyres import ImageError, kernels
from anyres.images import load_pixels, open_image, peek_size

from .conftest import natural_image

TINY = {"tile_size": 64, "patch_size": 8}
STRATEGY = anyres.get_strategy("anyres_max_9", **TINY)
FAST = anyres.get_strategy("anyres_max_9", fast=True, **TINY)
PAD = anyres.get_strategy("pad", **TINY)


def call_within(seconds: float, fn: Callable[[], object], fifo: Path | None = None) -> BaseException | None:
    """Run ``fn`` in a thread and return what it raised; fail (instead of hanging) if it is still running after
    ``seconds``. A reader blocked on ``fifo`` is released by opening its write end."""
    outcome: dict[str, BaseException] = {}

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if fifo is not None:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"{fn} was still running after {seconds} s")
    return outcome.get("error")


# ----------------------------------------------------------------------------------------------------------------
# Point 4: nothing hangs on non-regular files


@pytest.fixture
def special_files() -> Iterator[dict[str, tuple[Path, str]]]:
    """A FIFO, a character device, a directory and a unix socket, with the kind each error must name."""
    root = Path(tempfile.mkdtemp(prefix="ovh"))  # short: unix socket paths are limited to ~108 bytes
    fifo = root / "pipe.jpg"
    os.mkfifo(fifo)
    directory = root / "folder.png"
    directory.mkdir()
    sock_path = root / "s.png"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    try:
        yield {
            "fifo": (fifo, "a FIFO"),
            "device": (Path("/dev/zero"), "a character device"),
            "directory": (directory, "a directory"),
            "socket": (sock_path, "a socket"),
        }
    finally:
        sock.close()
        shutil.rmtree(root)


def _pillow_fallback(path: Path) -> None:
    saved = kernels.AVAILABLE
    kernels.AVAILABLE = False  # the strategy then keeps a PIL image and resizes with Pillow
    try:
        STRATEGY.preprocess(path)
    finally:
        kernels.AVAILABLE = saved


def _draw_command(path: Path) -> None:
    from onevision.cli import main

    assert main(["tokens", str(path), "--draw", str(path.parent / "out.png")]) == 2


ENTRY_POINTS: dict[str, Callable[[Path], object]] = {
    "preprocess": STRATEGY.preprocess,
    "preprocess_str": lambda p: STRATEGY.preprocess(str(p)),
    "preprocess_batch": lambda p: STRATEGY.preprocess_batch([p]),
    "preprocess_fast": FAST.preprocess,
    "preprocess_pad": PAD.preprocess,
    "preprocess_pillow_fallback": _pillow_fallback,
    "peek_size": peek_size,
    "open_image": open_image,
    "load_pixels": load_pixels,
    "draw_layout": lambda p: anyres.draw_layout(p, STRATEGY),
}


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "socket"])
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_non_regular_files_are_refused_before_any_open(special_files, kind, entry):
    path, what = special_files[kind]
    error = call_within(3, lambda: ENTRY_POINTS[entry](path), fifo=path if kind == "fifo" else None)
    assert isinstance(error, ImageError), f"{entry} raised {error!r}"
    assert str(error) == (f"{path}: not a regular file ({what}); pass the path of an image file")


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "socket"])
def test_tokens_command_reports_non_regular_files_in_one_line(special_files, kind, capsys):
    path, what = special_files[kind]
    error = call_within(3, lambda: _draw_command(path), fifo=path if kind == "fifo" else None)
    assert error is None
    err = capsys.readouterr().err.strip()
    assert (
        err == f"onevision tokens: error: {path}: not a regular file ({what}); pass the path of an image file"
    )


def test_symlink_to_an_image_is_still_accepted(tmp_path):
    target = tmp_path / "real.png"
    natural_image(70, 90).save(target)
    link = tmp_path / "link.png"
    link.symlink_to(target)
    assert peek_size(link) == (90, 70)
    assert torch.equal(STRATEGY.preprocess(link).pixel_values, STRATEGY.preprocess(target).pixel_values)


# ----------------------------------------------------------------------------------------------------------------
# Point 5: truncated lazy PIL images, max_pixels on every input kind


def _truncated(tmp_path: Path, fmt: str) -> Path:
    buf = io.BytesIO()
    natural_image(240, 320).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "pillow"])
def test_truncated_lazy_pil_image_raises_image_error(tmp_path, monkeypatch, fmt, compiled):
    path = _truncated(tmp_path, fmt)
    monkeypatch.setattr(kernels, "AVAILABLE", compiled and kernels.AVAILABLE)
    calls = {
        "preprocess": lambda: STRATEGY.preprocess(Image.open(path)),
        "preprocess_batch": lambda: STRATEGY.preprocess_batch([natural_image(30, 30), Image.open(path)]),
        "pad": lambda: PAD.preprocess(Image.open(path)),
        "draw_layout": lambda: anyres.draw_layout(Image.open(path), STRATEGY),
        "open_image": lambda: open_image(Image.open(path)),
    }
    for name, call in calls.items():
        with pytest.raises(ImageError, match="truncated") as err:
            call()
        assert str(path) in str(err.value), name


def _image_file(tmp_path: Path, fmt: str, size: tuple[int, int] = (400, 300)) -> Path:
    path = tmp_path / f"big.{fmt.lower()}"
    natural_image(size[1], size[0]).save(path, fmt)
    return path


def _inputs(tmp_path: Path) -> dict[str, object]:
    img = natural_image(300, 400)
    arr = np.asarray(img)
    return {
        "png_path": _image_file(tmp_path, "PNG"),
        "jpeg_path": _image_file(tmp_path, "JPEG"),
        "pil": img,
        "lazy_pil": Image.open(_image_file(tmp_path, "PNG")),
        "array": arr,
        "tensor": torch.from_numpy(arr.copy()).permute(2, 0, 1),
    }


@pytest.mark.parametrize("fast", [False, True])
def test_max_pixels_governs_every_input_kind(tmp_path, fast):
    strategy = anyres.get_strategy("anyres_max_9", max_pixels=100_000, fast=fast, **TINY)
    for name, obj in _inputs(tmp_path).items():
        with pytest.raises(ImageError, match=r"120,000 pixels \(400x300\), over the limit of 100,000") as err:
            strategy.preprocess(obj)
        assert "get_strategy(name, max_pixels=...)" in str(err.value), name


def test_pil_limit_does_not_preempt_max_pixels(tmp_path, monkeypatch):
    """PIL's own guard (here lowered to 50,000 pixels, below the 120,000-pixel files) does not decide: under
    max_pixels the files pass, over it the error names max_pixels, and PIL's global is left as it was."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # 120,000 > 2 x 50,000: DecompressionBombError
    paths = [_image_file(tmp_path, "PNG"), _image_file(tmp_path, "JPEG")]
    allowed = anyres.get_strategy("anyres_max_9", max_pixels=1_000_000, **TINY)
    fast = anyres.get_strategy("anyres_max_9", max_pixels=1_000_000, fast=True, **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for path in paths:
            reference = STRATEGY.preprocess(natural_image(300, 400)).layout
            assert allowed.preprocess(path).layout.image_size == reference.image_size
            assert fast.preprocess(path).layout.image_size == reference.image_size
            assert allowed.preprocess_batch([path, path]).num_tiles == [reference.num_tiles] * 2
            assert peek_size(path, max_pixels=1_000_000) == (400, 300)
            assert open_image(path, max_pixels=1_000_000).image.size == (400, 300)
    assert Image.MAX_IMAGE_PIXELS == 50_000
    refused = anyres.get_strategy("anyres_max_9", max_pixels=40_000, **TINY)
    for path in paths:
        for call in (refused.preprocess, lambda p: peek_size(p, max_pixels=40_000)):
            with pytest.raises(ImageError, match="over the limit of 40,000") as err:
                call(path)
            assert "max_pixels" in str(err.value) and str(path) in str(err.value)


def test_pil_warning_range_is_governed_by_max_pixels(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # 120,000 pixels: PIL only warns
    path = _image_file(tmp_path, "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        tiles = anyres.get_strategy("anyres_max_9", max_pixels=200_000, **TINY).preprocess(path)
    assert tiles.layout.image_size == anyres.ImageSize(300, 400)
