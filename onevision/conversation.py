"""Conversation rewrites before the chat template renders it: media tag first, legacy video tags, and the
LLaVA-Video time instruction. Media slots stay slots and typed tags stay text through every rewrite."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from onevision.errors import InputError
from onevision.templates import Message, media_tags


def legacy_video(m: Message, image_token: str, video_token: str) -> Message:
    """The message with its ``<image>`` slots read as ``<video>`` (typed tags unchanged)."""
    content = m.content
    for slot in reversed(media_tags(m, image_token, video_token)):
        if slot.group(0) == image_token:
            content = content[: slot.start()] + video_token + content[slot.end() :]
    return Message(m.role, content, m.literal)


def image_first(m: Message, image_token: str, video_token: str) -> Message:
    """A turn's single media tag goes to its start (the reference's ``preprocess_multimodal``)."""
    slots = media_tags(m, image_token, video_token)
    if len(slots) == 1 and slots[0].start() != 0:
        return slot_first(m, slots[0], "\n", strip=True)
    return m


def add_time_instruction(
    msgs: Sequence[Message], videos: Sequence[Any], image_token: str, video_token: str
) -> list[Message]:
    """The LLaVA-Video time instruction (verbatim, from ``video.time_instruction``) in the video's turn:
    ``"<video>\n{instruction}\n{text without the tag}"``, as the reference builds it. ``videos`` are the
    sample's video media items (with ``timestamps`` and ``duration``)."""
    import video

    if len(videos) != 1:
        raise InputError(f"the time instruction supports one video per sample, got {len(videos)}")
    item = videos[0]
    if item.timestamps is None or item.duration is None:
        raise InputError(
            "the policy adds a time instruction, which needs frame times: pass the video as a path or a "
            "video.Clip, not as bare frames"
        )
    text = video.time_instruction(item.timestamps, item.duration)
    out, done = [], False
    for m in msgs:
        slot = next((t for t in media_tags(m, image_token, video_token) if t.group(0) == video_token), None)
        if not done and slot is not None:  # verbatim: "<video>\nQ" gives "<video>\n{text}\n\nQ"
            m = slot_first(m, slot, f"\n{text}\n")
            done = True
        out.append(m)
    return out


def slot_first(m: Message, slot: re.Match, before: str, *, strip: bool = False) -> Message:
    """``m`` with its media slot ``slot`` moved to the start: ``tag + before + rest``, ``rest`` being the other
    text (stripped if ``strip``). The other slots of ``m`` stay slots and its typed tags stay text."""
    tag = slot.group(0)
    rest = m.content[: slot.start()] + m.content[slot.end() :]
    lead = len(rest) - len(rest.lstrip()) if strip else 0
    rest = rest.strip() if strip else rest
    slots = {0}
    for n, other in enumerate(slot.re.finditer(m.content)):
        if n not in m.literal and other.start() != slot.start():
            at = other.start() if other.start() < slot.start() else other.start() - len(tag)
            slots.add(len(tag) + len(before) + at - lead)
    content = tag + before + rest
    literal = tuple(n for n, t in enumerate(slot.re.finditer(content)) if t.start() not in slots)
    return Message(m.role, content, literal)
