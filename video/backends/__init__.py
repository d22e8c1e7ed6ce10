"""Decoder backends and their registry.

Built-in backends, in ``backend="auto"`` fallback order:

========== ============================== =====================================================
name       installed by                   handles
========== ============================== =====================================================
pyav       always (``av``)                every file FFmpeg can demux; frame-exact, skip-aware
decord     ``onevision[decord]``          video files (the LLaVA reference's decoder)
torchcodec ``onevision[torchcodec]``      video files
pil        always (``pillow``)            frame directories; animated GIF / WebP / PNG
========== ============================== =====================================================

Backends are imported lazily: nothing here imports PyAV, decord, torchcodec or PIL until a backend is used.
"""

from __future__ import annotations

from video.backends.base import Backend, OpenOptions, Reader, VideoInfo
from video.backends.decord import DecordBackend
from video.backends.images import ImagesBackend
from video.backends.pyav import PyAVBackend
from video.backends.torchcodec import TorchCodecBackend
from video.errors import BackendUnavailableError

__all__ = [
    "Backend",
    "OpenOptions",
    "Reader",
    "VideoInfo",
    "get_backend",
    "list_backends",
    "register_backend",
    "unregister_backend",
]

_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(
    name: str, cls: type[Backend], *, position: int | None = None, replace: bool = False
) -> None:
    """Register a :class:`Backend` subclass under ``name``.

    Args:
        name: registry key, used in ``load(..., backend=name)``.
        cls: the backend class (instantiated without arguments when used).
        position: index in the ``backend="auto"`` fallback order (default: last).
        replace: allow replacing an existing registration of ``name``.
    """
    if not isinstance(name, str) or not name or name == "auto":
        raise ValueError(f"invalid backend name {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"backend {name!r} must be a subclass of video.backends.Backend, got {cls!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"backend {name!r} is already registered (pass replace=True to override)")
    items = [(k, v) for k, v in _REGISTRY.items() if k != name]
    items.insert(len(items) if position is None else position, (name, cls))
    _REGISTRY.clear()
    _REGISTRY.update(items)


def unregister_backend(name: str) -> None:
    """Remove a registered backend (mainly for tests and plugins)."""
    _REGISTRY.pop(name, None)


def get_backend(name: str) -> type[Backend]:
    """The backend class registered as ``name``; raises ``BackendUnavailableError`` for unknown names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackendUnavailableError(
            None,
            f"unknown video backend {name!r}; registered: {', '.join(_REGISTRY) or 'none'}",
            backend=name,
        ) from None


def list_backends(available_only: bool = False) -> list[str]:
    """Registered backend names in fallback order (only the importable ones with ``available_only=True``)."""
    return [name for name, cls in _REGISTRY.items() if not available_only or cls.available()]


for _cls in (PyAVBackend, DecordBackend, TorchCodecBackend, ImagesBackend):
    register_backend(_cls.name, _cls)
del _cls
