"""Chat templates that reproduce the reference prompt strings exactly, rendered as labelled segments.

A template turns a conversation into :class:`Segment` s. Each segment knows the role of the turn it belongs to
and whether the default ``assistant_only`` label mask trains on it, so the processor can build ``labels`` without
re-tokenising or searching strings. Exact prompts (inference, one user question ``Q``):

* ``qwen_1_5`` (ChatML): ``<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<image>\\nQ<|im_end|>\\n<|im_start|>assistant\\n``
* ``vicuna_v1``: ``{system} USER: <image>\\nQ ASSISTANT:`` (answers end with ``</s>``)
* ``llama_3``: ``<|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n{system}<|eot_id|>...<|start_header_id|>assistant<|end_header_id|>\\n\\n``
* ``plain`` (stage-1 captioning): ``<image>`` followed by the caption and ``\\n``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from onevision.errors import InputError, UnknownComponentError

_ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


@dataclass(frozen=True)
class Segment:
    """A piece of rendered prompt text. ``role`` is the turn's role; ``train`` is the ``assistant_only`` label."""

    text: str
    role: str
    train: bool = False


@dataclass(frozen=True)
class Message:
    """One normalised chat turn: ``role`` in {system, user, assistant}; ``content`` is text with media tags."""

    role: str
    content: str


def normalize_messages(
    messages: Sequence[Mapping[str, Any]], *, image_token: str = "<image>", video_token: str = "<video>"
) -> tuple[list[Message], list[Any], list[Any]]:
    """Accept ``{"role","content"}`` and ``{"from","value"}`` turns; content may be a string or a list of parts
    (``{"type": "text", "text": ...}``, ``{"type": "image", "image": obj?}``, ``{"type": "video", "video": obj?}``).

    Returns the messages and the media objects found inside parts (in order), so callers need not pass them again.
    """
    out: list[Message] = []
    images: list[Any] = []
    videos: list[Any] = []
    for i, turn in enumerate(messages):
        raw_role = turn.get("role", turn.get("from"))
        role = _ROLE_ALIASES.get(str(raw_role))
        if role is None:
            raise InputError(
                f"message {i}: unknown role {raw_role!r}; use system/user/assistant (or human/gpt)"
            )
        content = turn.get("content", turn.get("value", ""))
        if isinstance(content, str):
            out.append(Message(role, content))
            continue
        pieces: list[str] = []
        for part in content:
            kind = part.get("type")
            if kind == "text":
                pieces.append(part.get("text", ""))
            elif kind == "image":
                pieces.append(image_token + "\n")
                obj = part.get("image", part.get("path", part.get("url")))
                if obj is not None:
                    images.append(obj)
            elif kind == "video":
                pieces.append(video_token + "\n")
                obj = part.get("video", part.get("path", part.get("url")))
                if obj is not None:
                    videos.append(obj)
            else:
                raise InputError(f"message {i}: unknown content part type {kind!r} (text, image, video)")
        out.append(Message(role, "".join(pieces)))
    return out, images, videos


@dataclass(frozen=True)
class ChatTemplate:
    """A named prompt format. ``render`` gives segments; ``stop_tokens`` end generation; ``unmask_everywhere`` are
    the tokens the reference leaves unmasked in every turn (``label_mask: llava_next``)."""

    name: str
    default_system: str | None
    renderer: Callable[[ChatTemplate, list[Message], bool], list[Segment]]
    stop_tokens: tuple[str, ...]
    unmask_everywhere: tuple[str, ...] = ()
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def render(self, messages: Iterable[Message], add_generation_prompt: bool = False) -> list[Segment]:
        msgs = list(messages)
        if not msgs:
            raise InputError("a conversation needs at least one message")
        return self.renderer(self, msgs, add_generation_prompt)

    def prompt(
        self, messages: Sequence[Mapping[str, Any]] | Sequence[Message], add_generation_prompt: bool = True
    ) -> str:
        """The rendered prompt as one string (messages may be raw dicts)."""
        msgs = [m if isinstance(m, Message) else None for m in messages]
        if any(m is None for m in msgs):
            msgs = normalize_messages(messages)[0]  # type: ignore[arg-type]
        return "".join(s.text for s in self.render(msgs, add_generation_prompt))  # type: ignore[arg-type]


def _split_system(t: ChatTemplate, msgs: list[Message]) -> tuple[str | None, list[Message]]:
    if msgs[0].role == "system":
        return msgs[0].content, msgs[1:]
    return t.default_system, msgs


def _check_roles(msgs: list[Message]) -> None:
    for i, m in enumerate(msgs):
        if m.role == "system":
            raise InputError(f"message {i}: a system message is only allowed first")


def _render_chatml(t: ChatTemplate, msgs: list[Message], gen: bool) -> list[Segment]:
    system, turns = _split_system(t, msgs)
    _check_roles(turns)
    segs: list[Segment] = []
    if system is not None:
        segs.append(Segment(f"<|im_start|>system\n{system}<|im_end|>\n", "system"))
    for m in turns:
        if m.role == "assistant":
            segs += [
                Segment("<|im_start|>assistant\n", "assistant"),
                Segment(m.content, "assistant", True),
                Segment("<|im_end|>", "assistant", True),
                Segment("\n", "assistant"),
            ]
        else:
            segs.append(Segment(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n", m.role))
    if gen:
        segs.append(Segment("<|im_start|>assistant\n", "assistant"))
    return segs


def _render_vicuna(t: ChatTemplate, msgs: list[Message], gen: bool) -> list[Segment]:
    system, turns = _split_system(t, msgs)
    _check_roles(turns)
    segs = [Segment("<s>", "system"), Segment((system or "") + " ", "system")]
    for m in turns:
        if m.role == "user":
            segs.append(Segment(f"USER: {m.content} ", "user"))
        else:
            segs += [
                Segment("ASSISTANT: ", "assistant"),
                Segment(m.content, "assistant", True),
                Segment("</s>", "assistant", True),
            ]
    if gen:
        segs.append(Segment("ASSISTANT:", "assistant"))
    return segs


def _render_llama3(t: ChatTemplate, msgs: list[Message], gen: bool) -> list[Segment]:
    system, turns = _split_system(t, msgs)
    _check_roles(turns)
    segs = [Segment("<|begin_of_text|>", "system")]
    if system is not None:
        segs.append(
            Segment(f"<|start_header_id|>system<|end_header_id|>\n\n{system.strip()}<|eot_id|>", "system")
        )
    for m in turns:
        header = f"<|start_header_id|>{m.role}<|end_header_id|>\n\n"
        if m.role == "assistant":
            segs += [
                Segment(header, "assistant"),
                Segment(m.content.strip(), "assistant", True),
                Segment("<|eot_id|>", "assistant", True),
            ]
        else:
            segs.append(Segment(f"{header}{m.content.strip()}<|eot_id|>", m.role))
    if gen:
        segs.append(Segment("<|start_header_id|>assistant<|end_header_id|>\n\n", "assistant"))
    return segs


def _render_plain(t: ChatTemplate, msgs: list[Message], gen: bool) -> list[Segment]:
    _, turns = _split_system(t, msgs)
    segs: list[Segment] = []
    image = t.extra.get("image_token", "<image>")
    for m in turns:
        if m.role == "user":  # the instruction is dropped; only the media tags remain
            tags = "".join(
                tok for tok in _media_tags(m.content, image, t.extra.get("video_token", "<video>"))
            )
            segs.append(Segment(tags or image, "user"))
        else:
            segs += [Segment(m.content, "assistant", True), Segment("\n", "assistant", True)]
    return segs


def _media_tags(text: str, image: str, video: str) -> list[str]:
    tags, i = [], 0
    while i < len(text):
        if text.startswith(image, i):
            tags.append(image)
            i += len(image)
        elif text.startswith(video, i):
            tags.append(video)
            i += len(video)
        else:
            i += 1
    return tags


VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)
LLAMA3_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)

TEMPLATES: dict[str, ChatTemplate] = {}


def register_template(template: ChatTemplate, *aliases: str) -> None:
    for name in (template.name, *aliases):
        TEMPLATES[name] = template


def get_template(name: str) -> ChatTemplate:
    """The template registered as ``name`` (``qwen_1_5``, ``vicuna_v1``, ``llama_3``, ``plain`` and aliases)."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise UnknownComponentError("chat template", name, TEMPLATES) from None


register_template(
    ChatTemplate(
        "qwen_1_5",
        "You are a helpful assistant.",
        _render_chatml,
        ("<|im_end|>", "<|endoftext|>"),
        unmask_everywhere=("\n", "<|im_start|>", "<|im_end|>"),
        description="ChatML (LLaVA-OneVision, Qwen-2)",
    ),
    "qwen_2",
    "chatml",
)
register_template(
    ChatTemplate("vicuna_v1", VICUNA_SYSTEM, _render_vicuna, ("</s>",), description="LLaVA-1.5/1.6 Vicuna"),
    "v1",
)
register_template(
    ChatTemplate(
        "llama_3",
        LLAMA3_SYSTEM,
        _render_llama3,
        ("<|eot_id|>", "<|end_of_text|>"),
        unmask_everywhere=(
            "<|begin_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "\n\n",
        ),
        description="LLaMA-3 LLaVA",
    ),
    "llava_llama_3",
)
register_template(ChatTemplate("plain", None, _render_plain, ("\n",), description="stage-1 captioning"))
