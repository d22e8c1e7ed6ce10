"""Per-frame pooling of encoder features and the placement of newline tokens (LLaVA-OneVision video path).

Each frame's ``s x s`` encoder grid (``s = tile_size // patch_size``; 27 for SigLIP-384/14) is pooled:

* ``"bilinear"``: ``interpolate(size=ceil(s / stride), mode="bilinear", align_corners=False)`` (27 -> 14),
* ``"average"`` / ``"max"``: ``avg_pool2d`` / ``max_pool2d`` with ``kernel = stride`` (floor: 27 -> 13),

then frames are laid out row-major with newline tokens at one of four positions:

============= ============================================ ================== ===============
``newline``   layout for ``F`` frames of ``r x c`` tokens  tokens             used by
============= ============================================ ================== ===============
``one_token`` all frames, then **one** newline              ``F*r*c + 1``      OneVision, HF
``grid``      a newline after every row of every frame     ``F*r*(c+1)``      LLaVA-Video
``frame``     a newline after each frame                   ``F*(r*c+1)``
``no_token``  no newline                                   ``F*r*c``
============= ============================================ ================== ===============

:meth:`FramePooling.layout` is pure arithmetic (no torch); :meth:`FramePooling.pack` needs torch (imported
lazily) and equals transformers' ``LlavaOnevisionModel`` video path (``apply_pooling`` + one newline) for the
default settings.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from video._fields import strict_from_dict

if TYPE_CHECKING:
    import torch

__all__ = ["FramePooling", "VideoLayout"]

PoolMode = Literal["bilinear", "average", "max"]
NewlinePosition = Literal["one_token", "grid", "frame", "no_token"]
_MODES = ("bilinear", "average", "max")
_NEWLINES = ("one_token", "grid", "frame", "no_token")


@dataclass(frozen=True)
class VideoLayout:
    """Token layout of one video.

    Attributes:
        num_frames: frames ``F``.
        grid: ``(rows, cols)`` of pooled tokens per frame.
        tokens_per_frame: ``rows * cols`` (newlines excluded).
        newlines: number of newline tokens in the video.
        num_tokens: ``F * tokens_per_frame + newlines``.
        newline: the newline position the layout was built for.
    """

    num_frames: int
    grid: tuple[int, int]
    tokens_per_frame: int
    newlines: int
    num_tokens: int
    newline: NewlinePosition


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class FramePooling:
    """How frame features become video tokens (see the module docstring).

    Attributes:
        tile_size: encoder input side in pixels (384 for SigLIP-so400m-384).
        patch_size: ViT patch size (14); the feature grid side is ``tile_size // patch_size``.
        mode: ``"bilinear"`` (OneVision/HF), ``"average"`` or ``"max"``.
        stride: pooling stride (2). Honoured for every mode (the reference's HEAD always uses 2; see
            :meth:`from_llava_config`).
        newline: ``"one_token"`` (OneVision/HF), ``"grid"``, ``"frame"`` or ``"no_token"``.
    """

    tile_size: int = 384
    patch_size: int = 14
    mode: PoolMode = "bilinear"
    stride: int = 2
    newline: NewlinePosition = "one_token"

    def __post_init__(self) -> None:
        _positive_int("tile_size", self.tile_size)
        _positive_int("patch_size", self.patch_size)
        _positive_int("stride", self.stride)
        if self.patch_size > self.tile_size:
            raise ValueError(f"patch_size ({self.patch_size}) exceeds tile_size ({self.tile_size})")
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if self.newline not in _NEWLINES:
            raise ValueError(f"newline must be one of {_NEWLINES}, got {self.newline!r}")
        if self.mode != "bilinear" and self.stride > self.feature_side:
            raise ValueError(
                f"stride {self.stride} exceeds the {self.feature_side}x{self.feature_side} feature grid"
            )

    # -- geometry (pure arithmetic) -------------------------------------------------------------------
    @property
    def feature_side(self) -> int:
        """Side of the encoder's feature grid per frame (27 for 384/14)."""
        return self.tile_size // self.patch_size

    @property
    def grid(self) -> tuple[int, int]:
        """``(rows, cols)`` of pooled tokens per frame: ``ceil(s/stride)`` bilinear, ``floor(s/stride)`` pools."""
        s = self.feature_side
        side = math.ceil(s / self.stride) if self.mode == "bilinear" else s // self.stride
        return (side, side)

    def layout(self, num_frames: int) -> VideoLayout:
        """Exact token layout for ``num_frames`` frames (no torch needed)."""
        _positive_int("num_frames", num_frames)
        rows, cols = self.grid
        per_frame = rows * cols
        newlines = {"one_token": 1, "grid": num_frames * rows, "frame": num_frames, "no_token": 0}[
            self.newline
        ]
        return VideoLayout(
            num_frames=num_frames,
            grid=(rows, cols),
            tokens_per_frame=per_frame,
            newlines=newlines,
            num_tokens=num_frames * per_frame + newlines,
            newline=self.newline,
        )

    # -- packing (torch) ------------------------------------------------------------------------------
    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Pool ``[F, s*s, D]`` frame features to ``[F, rows, cols, D]``."""
        import torch.nn.functional as F  # lazy: torch is only needed here

        if features.ndim != 3:
            raise ValueError(f"features must be [frames, patches, dim], got shape {tuple(features.shape)}")
        frames, patches, dim = features.shape
        s = self.feature_side
        if patches != s * s:
            raise ValueError(
                f"expected {s}x{s}={s * s} patches per frame for tile {self.tile_size}/patch {self.patch_size}, "
                f"got {patches}"
            )
        x = features.reshape(frames, s, s, dim).permute(0, 3, 1, 2).contiguous()
        rows, cols = self.grid
        if self.mode == "bilinear":
            x = F.interpolate(x, size=[rows, cols], mode="bilinear", align_corners=False)
        elif self.mode == "average":
            x = F.avg_pool2d(x, self.stride)
        else:
            x = F.max_pool2d(x, self.stride)
        return x.permute(0, 2, 3, 1)

    def pack(
        self,
        features: torch.Tensor,
        layout: VideoLayout | None = None,
        newline: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pool frame features and insert newline tokens: ``[F, s*s, D]`` -> ``[layout.num_tokens, D]``.

        Args:
            features: projected encoder features of one video, ``[F, s*s, D]``.
            layout: the expected layout (checked against ``features``); computed when ``None``.
            newline: the learned ``image_newline`` vector ``[D]`` (required unless ``newline="no_token"``).
        """
        import torch

        expected = self.layout(int(features.shape[0])) if features.ndim == 3 else None
        if layout is not None and expected is not None and layout != expected:
            raise ValueError(
                f"layout {layout} does not match {expected} computed for {tuple(features.shape)}"
            )
        pooled = self.pool(features)
        frames, rows, cols, dim = pooled.shape
        if self.newline == "no_token":
            return pooled.reshape(-1, dim)
        if newline is None:
            raise ValueError(f"newline={self.newline!r} needs the newline embedding (shape [{dim}])")
        if newline.shape != (dim,):
            raise ValueError(f"newline must have shape [{dim}], got {tuple(newline.shape)}")
        token = newline.to(dtype=pooled.dtype, device=pooled.device)
        if self.newline == "one_token":
            out = torch.cat([pooled.reshape(-1, dim), token[None]], dim=0)
        elif self.newline == "grid":
            out = torch.cat([pooled, token.expand(frames, rows, 1, dim)], dim=2).reshape(-1, dim)
        else:  # "frame"
            out = torch.cat([pooled.reshape(frames, rows * cols, dim), token.expand(frames, 1, dim)], dim=1)
            out = out.reshape(-1, dim)
        assert expected is None or out.shape[0] == expected.num_tokens
        return out

    # -- serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FramePooling:
        return strict_from_dict(cls, data)

    @classmethod
    def from_llava_config(
        cls, config: Mapping[str, Any], *, tile_size: int = 384, patch_size: int = 14, compat: bool = True
    ) -> FramePooling:
        """Read an original LLaVA-NeXT config (``mm_spatial_pool_*``, ``mm_newline_position``).

        * A missing ``mm_newline_position`` means ``"one_token"`` (the architecture's fallback; OneVision).
        * ``"one_token"`` adds its newline only when ``"unpad"`` is in ``mm_patch_merge_type`` (reference
          behaviour); otherwise it is ``"no_token"``.
        * The reference HEAD ignores ``mm_spatial_pool_stride`` (always 2). With ``compat=True`` (default) a
          stride other than 2 triggers a warning and 2 is used; with ``compat=False`` the stride is honoured.
        * ``add_faster_video: true`` is rejected (broken in the reference).
        """
        if config.get("add_faster_video"):
            raise ValueError(
                "add_faster_video (SlowFast) is not supported: it raises NameError in the reference"
            )
        mode = config.get("mm_spatial_pool_mode") or "bilinear"
        stride = int(config.get("mm_spatial_pool_stride") or 2)
        if stride != 2 and compat:
            warnings.warn(
                f"mm_spatial_pool_stride={stride} is ignored by the reference implementation (it always pools "
                "with stride 2); using 2. Pass compat=False to honour the configured stride.",
                stacklevel=2,
            )
            stride = 2
        newline = config.get("mm_newline_position") or "one_token"
        if newline == "one_token" and "unpad" not in str(config.get("mm_patch_merge_type", "spatial_unpad")):
            newline = "no_token"
        return cls(tile_size=tile_size, patch_size=patch_size, mode=mode, stride=stride, newline=newline)
