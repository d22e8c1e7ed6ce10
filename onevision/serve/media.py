"""Media parts of a request -> checked local files that the pipeline reads exactly as ``pipe.chat`` would.

Three URL kinds are accepted:

* ``data:<mime>;base64,<payload>``: decoded strictly (invalid base64 is refused), size-limited, written to a
  per-request temporary folder;
* ``http://`` / ``https://``: fetched with a byte limit and a wall-clock limit (connect, redirects and body
  together), also into the temporary folder;
* ``file://<path>``: read in place, only under the folders given with ``--allowed-local-media-path`` (the real
  path, symlinks resolved, must lie under one of them).

Every file is then checked in a worker thread before it reaches the model: an image must decode (and be within
the pixel limit), a video must be a readable video container and not a still image. The pipeline later gets the
file path, so a served answer sees exactly the bytes, decoder and sampling that ``pipe.chat(path)`` sees.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onevision.serve.schema import ApiError, MediaRef, bad_request

#: Default per-prompt limits (``--limit-media-per-prompt``).
DEFAULT_PER_PROMPT = {"image": 8, "video": 1}
_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "video/x-matroska": ".mkv",
}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?)(?P<b64>;base64)?,", re.I)


@dataclass(frozen=True)
class MediaLimits:
    """What a request's media may be: counts per prompt, bytes per item, image pixels, fetch time, local dirs."""

    per_prompt: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PER_PROMPT))
    max_bytes: int = 64 * 2**20
    max_image_pixels: int = 7680 * 4320
    fetch_timeout: float = 10.0
    allowed_local_paths: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        resolved = tuple(Path(os.path.realpath(p)) for p in self.allowed_local_paths)
        object.__setattr__(self, "allowed_local_paths", resolved)


def parse_per_prompt(text: str) -> dict[str, int]:
    """``image=4,video=1`` (or JSON ``{"image": 4, "video": 1}``) -> limits; unnamed kinds keep their default."""
    import json

    text = text.strip()
    try:
        raw = (
            json.loads(text) if text.startswith("{") else dict(_pair(p) for p in text.split(",") if p.strip())
        )
    except (ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"expected image=N,video=M, got {text!r} ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"expected image=N,video=M, got {text!r}")
    out = dict(DEFAULT_PER_PROMPT)
    for kind, value in raw.items():
        if kind not in DEFAULT_PER_PROMPT:
            raise ValueError(f"unknown media kind {kind!r}; use image and/or video")
        try:
            count = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{kind}: expected a whole number, got {value!r}") from None
        if count < 0 or str(count) != str(value).strip():
            raise ValueError(f"{kind}: expected a whole number >= 0, got {value!r}")
        out[kind] = count
    return out


def _pair(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ValueError(f"{item.strip()!r} is not KIND=N")
    kind, value = item.split("=", 1)
    return kind.strip(), value.strip()


class MediaSession:
    """The media of one request: fetched into a private temporary folder, removed by :meth:`close`."""

    def __init__(self, limits: MediaLimits, root: str | None = None, client: Any = None):
        self.limits = limits
        self._root = root
        self._client = client  # an httpx.AsyncClient shared by the app
        self._dir: str | None = None
        self._count = 0

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def resolve(self, ref: MediaRef) -> str:
        """A checked local path for ``ref`` (or :class:`ApiError`)."""
        url = ref.url
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "data":
            path = self._write(ref, *self._decode_data(ref))
        elif scheme in ("http", "https"):
            path = await self._fetch(ref)
        elif scheme == "file":
            path = self._local(ref)
        else:
            raise bad_request(
                f"{ref.param}: unsupported URL scheme {scheme or url[:16]!r}; use data:, http(s): or file:",
                ref.param,
                "invalid_url",
            )
        await asyncio.to_thread(check_file, ref, path, self.limits.max_image_pixels)
        return path

    # -- sources ----------------------------------------------------------------------------------------------
    def _decode_data(self, ref: MediaRef) -> tuple[bytes, str]:
        match = _DATA_URL.match(ref.url)
        if match is None:
            raise bad_request(
                f"{ref.param}: malformed data: URL (expected data:<mime>;base64,<data>)", ref.param
            )
        payload = ref.url[match.end() :]
        mime = (match.group("mime") or "").lower()
        if match.group("b64"):
            compact = "".join(payload.split())
            if len(compact) * 3 // 4 > self.limits.max_bytes:
                raise _too_large(ref, len(compact) * 3 // 4, self.limits.max_bytes)
            try:
                data = base64.b64decode(compact, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise bad_request(
                    f"{ref.param}: invalid base64 in data: URL ({exc})", ref.param, "invalid_base64"
                ) from None
        else:
            data = urllib.parse.unquote_to_bytes(payload)
        if not data:
            raise bad_request(f"{ref.param}: the data: URL holds no bytes", ref.param)
        if len(data) > self.limits.max_bytes:
            raise _too_large(ref, len(data), self.limits.max_bytes)
        return data, mime

    def _local(self, ref: MediaRef) -> str:
        parsed = urllib.parse.urlparse(ref.url)
        if parsed.netloc not in ("", "localhost"):
            raise bad_request(f"{ref.param}: file:// URLs must name a local path", ref.param, "invalid_url")
        allowed = self.limits.allowed_local_paths
        if not allowed:
            raise ApiError(
                403,
                f"{ref.param}: file:// URLs are refused; start the server with --allowed-local-media-path DIR "
                "to serve files under DIR",
                "permission_error",
                ref.param,
                "local_media_refused",
            )
        real = Path(os.path.realpath(urllib.parse.unquote(parsed.path)))
        if not any(real.is_relative_to(root) for root in allowed):
            raise ApiError(
                403,
                f"{ref.param}: {real} is outside the allowed local media paths "
                f"({', '.join(str(p) for p in allowed)})",
                "permission_error",
                ref.param,
                "local_media_refused",
            )
        if not real.is_file():
            raise bad_request(f"{ref.param}: {real}: no such file", ref.param, "media_not_found")
        size = real.stat().st_size
        if size > self.limits.max_bytes:
            raise _too_large(ref, size, self.limits.max_bytes)
        return str(real)

    async def _fetch(self, ref: MediaRef) -> str:
        import httpx

        if self._client is None:
            raise ApiError(500, "no HTTP client for remote media", "server_error", ref.param)
        timeout = self.limits.fetch_timeout
        try:
            data, mime = await asyncio.wait_for(self._download(ref), timeout)
        except asyncio.TimeoutError:
            raise bad_request(
                f"{ref.param}: fetching {ref.url} took longer than {timeout:g} s (--media-fetch-timeout)",
                ref.param,
                "media_fetch_timeout",
            ) from None
        except httpx.HTTPError as exc:
            raise bad_request(
                f"{ref.param}: cannot fetch {ref.url} ({type(exc).__name__}: {exc or 'no details'})",
                ref.param,
                "media_fetch_failed",
            ) from None
        return self._write(ref, data, mime or _mime_from_path(ref.url))

    async def _download(self, ref: MediaRef) -> tuple[bytes, str]:
        limit = self.limits.max_bytes
        data = bytearray()
        async with self._client.stream("GET", ref.url) as response:
            if response.status_code != 200:
                raise bad_request(
                    f"{ref.param}: fetching {ref.url} returned HTTP {response.status_code}",
                    ref.param,
                    "media_fetch_failed",
                )
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise _too_large(ref, int(declared), limit)
            mime = response.headers.get("content-type", "").split(";")[0].strip().lower()
            async for piece in response.aiter_bytes():
                data += piece
                if len(data) > limit:
                    raise _too_large(ref, len(data), limit, "more than ")
        if not data:
            raise bad_request(f"{ref.param}: {ref.url} returned no bytes", ref.param, "media_fetch_failed")
        return bytes(data), mime if "/" in mime else ""

    def _write(self, ref: MediaRef, data: bytes, mime: str) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="request-", dir=self._root)
        self._count += 1
        suffix = _EXTENSIONS.get(mime, ".mp4" if ref.kind == "video" else ".img")
        path = os.path.join(self._dir, f"{ref.kind}-{self._count}{suffix}")
        with open(path, "wb") as f:
            f.write(data)
        return path


def check_file(ref: MediaRef, path: str, max_image_pixels: int) -> None:
    """Refuse (400) a file that is not a usable image / video. Runs in a worker thread: decoders only."""
    if ref.kind == "image":
        import anyres
        from anyres.images import ImageError

        try:
            anyres.open_image(path, max_pixels=max_image_pixels)
        except ImageError as exc:
            reason = exc.reason.replace(path, f"the {ref.kind}")
            code = "image_too_large" if "over the limit" in reason else "invalid_image"
            if code == "image_too_large":
                reason = reason.split("; if the image is intended")[0] + " (--max-image-pixels)"
            raise bad_request(f"{ref.param}: not a usable image: {reason}", ref.param, code) from None
        return
    import video

    try:
        try:
            info = video.probe(path, backend="pyav")
        except video.BackendUnavailableError:
            info = video.probe(path)
    except video.VideoError as exc:
        cause = exc.cause.replace(path, f"the {ref.kind}")
        raise bad_request(
            f"{ref.param}: not a readable video: {cause} ({exc.reason})", ref.param, "invalid_video"
        ) from None
    if info.num_frames == 1 and _is_still_image(path):
        raise bad_request(
            f"{ref.param}: a still image, not a video; send it as an image_url part",
            ref.param,
            "invalid_video",
        )


def _is_still_image(path: str) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return getattr(img, "n_frames", 1) == 1
    except (UnidentifiedImageError, OSError):
        return False


def _too_large(ref: MediaRef, size: int, limit: int, more: str = "") -> ApiError:
    return bad_request(
        f"{ref.param}: the media is {more}{size:,} bytes, over the limit of {limit:,} bytes (--max-media-bytes)",
        ref.param,
        "media_too_large",
    )


def _mime_from_path(url: str) -> str:
    import mimetypes

    return mimetypes.guess_type(urllib.parse.urlparse(url).path)[0] or ""
