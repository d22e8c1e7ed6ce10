"""Text to token ids with exact placeholder runs: media tags become ``layout.num_tokens`` placeholder ids, and
message text never produces a control token (a special token typed in it is encoded as plain text)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from onevision.errors import ConfigError
from onevision.templates import Segment


class PlaceholderEncoder:
    """Encodes rendered prompts for one tokenizer: ``<image>`` / ``<video>`` slots become placeholder runs."""

    def __init__(self, tokenizer: Any, tag_re: re.Pattern, image_token_id: int, video_token_id: int):
        self.tokenizer = tokenizer
        self.tag_re = tag_re
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        self.control_ids = control_ids(tokenizer)

    def spans(self, segments: Sequence[Segment]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Character spans of the rendered text: its media slots, and the message text (plain text only)."""
        slots: list[tuple[int, int]] = []
        protected: list[tuple[int, int]] = []
        pos = 0
        for seg in segments:
            for n, match in enumerate(self.tag_re.finditer(seg.text)):
                if not (seg.content and n in seg.literal):
                    slots.append((pos + match.start(), pos + match.end()))
            if seg.content and seg.text:
                protected.append((pos, pos + len(seg.text)))
            pos += len(seg.text)
        return slots, protected

    def tokenize(self, texts: list[str], *, plain: bool = False) -> Any:
        """Ids and offsets of each text; ``plain`` encodes special-token strings as ordinary text."""
        extra = {"split_special_tokens": True} if plain else {}
        try:
            return self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, **extra)
        except NotImplementedError:
            raise ConfigError("onevision needs a fast (tokenizers-backed) tokenizer for offsets") from None

    def encode(
        self,
        text: str,
        media: Sequence[Any],
        slots: Sequence[tuple[int, int]] | None = None,
        protected: Sequence[tuple[int, int]] = (),
    ) -> tuple[list[int], list[int | None]]:
        """Token ids with placeholder runs, and for each id the end character offset in ``text`` (None for media).

        ``slots`` are the media tag spans (default: every tag in ``text``, the raw-prompt path). Inside the
        ``protected`` spans (message text) a control token is never produced: the text is encoded as plain text.
        """
        if slots is None:
            slots = [(m.start(), m.end()) for m in self.tag_re.finditer(text)]
        bounds = [0, *(x for span in slots for x in span), len(text)]
        chunks = [(bounds[k], bounds[k + 1]) for k in range(0, len(bounds), 2)]
        texts = [text[a:b] for a, b in chunks if b > a]
        encoded = self.tokenize(texts) if texts else {"input_ids": [], "offset_mapping": []}
        pieces = iter(zip(encoded["input_ids"], encoded["offset_mapping"]))
        ids: list[int] = []
        ends: list[int | None] = []
        media_iter = iter(media)
        for k, (a, b) in enumerate(chunks):
            if k:
                item = next(media_iter)
                tid = self.image_token_id if item.kind == "image" else self.video_token_id
                ids.extend([tid] * item.layout.num_tokens)
                ends.extend([None] * item.layout.num_tokens)
            if b > a:
                tok_ids, offsets = self._as_plain(text[a:b], *next(pieces), _clip(protected, a, b))
                ids.extend(tok_ids)
                ends.extend(a + max(e - 1, s) for s, e in offsets)
        return ids, ends

    def _as_plain(
        self, text: str, ids: list[int], offsets: list[tuple[int, int]], protected: list[tuple[int, int]]
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Re-encode, as plain text, each run between the template's control tokens that holds a control token
        typed in message text. Ordinary text is left exactly as the tokenizer encoded it."""

        def typed(k: int) -> bool:
            s, e = offsets[k]
            return ids[k] in self.control_ids and any(s < pe and ps < e for ps, pe in protected)

        if not protected or not any(typed(k) for k in range(len(ids))):
            return list(ids), list(offsets)
        keep = [k for k in range(len(ids)) if ids[k] in self.control_ids and not typed(k)]
        out_ids: list[int] = []
        out_offs: list[tuple[int, int]] = []
        start_tok, start_char = 0, 0
        for stop in [*keep, len(ids)]:
            end_char = offsets[stop][0] if stop < len(ids) else len(text)
            run = range(start_tok, stop)
            if any(typed(k) for k in run):
                again = self.tokenize([text[start_char:end_char]], plain=True)
                out_ids += again["input_ids"][0]
                out_offs += [(start_char + s, start_char + e) for s, e in again["offset_mapping"][0]]
            else:
                out_ids += [ids[k] for k in run]
                out_offs += [offsets[k] for k in run]
            if stop < len(ids):
                out_ids.append(ids[stop])
                out_offs.append(offsets[stop])
                start_tok, start_char = stop + 1, offsets[stop][1]
        return out_ids, out_offs


def control_ids(tokenizer: Any) -> frozenset[int]:
    """The ids a template may insert and message text may not: the tokenizer's special (added) tokens."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    ids = {int(i) for i, tok in added.items() if getattr(tok, "special", True)}
    return frozenset(ids | {int(i) for i in tokenizer.all_special_ids})


def _clip(spans: Sequence[tuple[int, int]], a: int, b: int) -> list[tuple[int, int]]:
    """``spans`` cut to ``[a, b)`` and made relative to ``a``."""
    return [(max(s, a) - a, min(e, b) - a) for s, e in spans if s < b and e > a]


def visual_end(ends: Sequence[int | None]) -> int:
    """The position just after the last placeholder (``None`` end offset), 0 without media."""
    return max((k + 1 for k, end in enumerate(ends) if end is None), default=0)
