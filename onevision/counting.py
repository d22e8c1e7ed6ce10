"""Exact token counts of samples: :class:`TokenCount` (text + visual, with one :class:`PartCount` per media item)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PartCount:
    """Visual tokens of one image or video: ``policy`` is the strategy / pooling used, ``breakdown`` the parts."""

    kind: str
    index: int
    policy: str
    tokens: int
    breakdown: dict[str, int]


@dataclass(frozen=True)
class TokenCount:
    """Exact token count of one sample: text tokens, visual tokens, and one :class:`PartCount` per media item."""

    total: int
    text: int
    visual: int
    parts: tuple[PartCount, ...]
    budget: int | None = None
    visual_end: int = 0  # the position just after the last visual token (0 without media)

    @property
    def fits(self) -> bool:
        return self.budget is None or self.total <= self.budget

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "text": self.text,
            "visual": self.visual,
            "budget": self.budget,
            "parts": [p.__dict__ for p in self.parts],
        }

    def __str__(self) -> str:
        lines = [
            f"total {self.total} tokens = {self.text} text + {self.visual} visual"
            + (f" (budget {self.budget})" if self.budget else "")
        ]
        for p in self.parts:
            detail = ", ".join(f"{k} {v}" for k, v in p.breakdown.items())
            lines.append(f"  {p.kind} {p.index}: {p.tokens} tokens [{p.policy}] ({detail})")
        return "\n".join(lines)


def count_parts(media: Sequence[Any], video_rule: str) -> tuple[PartCount, ...]:
    """One :class:`PartCount` per media item (``kind``, ``layout``, ``strategy``), numbered per kind;
    ``video_rule`` labels the video pooling (``bilinear, stride 2, one_token``)."""
    parts = []
    counters = {"image": 0, "video": 0}
    for m in media:
        lay = m.layout
        if m.kind == "image":
            policy = m.strategy.strategy_name
            breakdown = dict(lay.breakdown) if lay.breakdown else {"tokens": lay.num_tokens}
        else:
            policy = f"video {lay.num_frames} frames x {lay.tokens_per_frame} ({video_rule})"
            breakdown = {"frame_tokens": lay.num_frames * lay.tokens_per_frame, "newlines": lay.newlines}
        parts.append(PartCount(m.kind, counters[m.kind], policy, lay.num_tokens, breakdown))
        counters[m.kind] += 1
    return tuple(parts)
