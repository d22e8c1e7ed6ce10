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

import json
import re
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
    """A piece of rendered prompt text. ``role`` is the turn's role; ``train`` is the ``assistant_only`` label.

    ``content`` marks text that came from a message (user or data text, encoded as plain text: a special token
    typed there is never a control token); ``literal`` lists which media tags of that text, by their order in it,
    are typed text rather than media slots (see :class:`Message`)."""

    text: str
    role: str
    train: bool = False
    content: bool = False
    literal: tuple[int, ...] = ()


@dataclass(frozen=True)
class Message:
    """One normalised chat turn: ``role`` in {system, user, assistant}; ``content`` is text with media tags.

    ``literal`` numbers the media tags of ``content`` (``<image>`` / ``<video>``, counted in order) that were typed in
    text and so stay text; the others are media slots."""

    role: str
    content: str
    literal: tuple[int, ...] = ()


def normalize_messages(
    messages: Sequence[Mapping[str, Any]],
    *,
    image_token: str = "<image>",
    video_token: str = "<video>",
    tags_in_text: bool = True,
) -> tuple[list[Message], list[Any], list[Any]]:
    """Accept ``{"role","content"}`` and ``{"from","value"}`` turns; content may be a string or a list of parts
    (``{"type": "text", "text": ...}``, ``{"type": "image", "image": obj?}``, ``{"type": "video", "video": obj?}``).

    ``tags_in_text=True`` reads ``<image>`` / ``<video>`` typed in text as media slots (the LLaVA JSON data rule);
    with ``False`` only image/video parts are slots and typed tags stay text (chat: a user cannot add a slot).
    Returns the messages and the media objects found inside parts (in order), so callers need not pass them again.
    """
    out: list[Message] = []
    images: list[Any] = []
    videos: list[Any] = []
    tag_re = media_tag_pattern(image_token, video_token)
    for i, turn in enumerate(messages):
        raw_role = turn.get("role", turn.get("from"))
        role = _ROLE_ALIASES.get(str(raw_role))
        if role is None:
            raise InputError(
                f"message {i}: unknown role {raw_role!r}; use system/user/assistant (or human/gpt)"
            )
        content = turn.get("content", turn.get("value", ""))
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        pieces: list[str] = []
        literal: list[int] = []
        n_tags = 0  # media tags so far in this message, typed or not
        for part in content:
            kind = part.get("type")
            if kind == "text":
                text = part.get("text", "")
                if not isinstance(text, str):
                    raise InputError(f"message {i}: text must be a string, got {type(text).__name__}")
                typed = len(tag_re.findall(text))
                if not tags_in_text:
                    literal.extend(range(n_tags, n_tags + typed))
                n_tags += typed
                pieces.append(text)
            elif kind == "image":
                n_tags += 1
                pieces.append(image_token + "\n")
                obj = part.get("image", part.get("path", part.get("url")))
                if obj is not None:
                    images.append(obj)
            elif kind == "video":
                n_tags += 1
                pieces.append(video_token + "\n")
                obj = part.get("video", part.get("path", part.get("url")))
                if obj is not None:
                    videos.append(obj)
            else:
                raise InputError(f"message {i}: unknown content part type {kind!r} (text, image, video)")
        out.append(Message(role, "".join(pieces), tuple(literal)))
    return out, images, videos


def media_tag_pattern(image_token: str = "<image>", video_token: str = "<video>") -> re.Pattern[str]:
    """The regular expression of the media tags (one group, so ``split`` keeps them)."""
    return re.compile(f"({re.escape(image_token)}|{re.escape(video_token)})")


def media_tags(
    message: Message, image_token: str = "<image>", video_token: str = "<video>"
) -> list[re.Match]:
    """The media slots of ``message``: its tag matches that are not typed text (``message.literal``)."""
    found = media_tag_pattern(image_token, video_token).finditer(message.content)
    return [m for n, m in enumerate(found) if n not in message.literal]


def _text(m: Message, text: str, role: str, train: bool = False) -> Segment:
    """A segment of message text (``m.content`` or a stripped copy: the same tags in the same order)."""
    return Segment(text, role, train, content=True, literal=m.literal)


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
    #: builds the Jinja twin of ``renderer`` (``jinja(template, image_token, video_token) -> str``)
    jinja: Callable[[ChatTemplate, str, str], str] | None = None

    def to_jinja(self, image_token: str = "<image>", video_token: str = "<video>") -> str:
        """A Jinja chat template (transformers ``apply_chat_template``, vLLM, SGLang) that renders exactly the
        string :meth:`prompt` renders for the same messages, default system prompt included."""
        if self.jinja is None:
            raise UnknownComponentError("Jinja form of chat template", self.name, [])
        return _jinja_prelude(self, image_token, video_token) + self.jinja(self, image_token, video_token)

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


def _split_system(t: ChatTemplate, msgs: list[Message]) -> tuple[Message | None, list[Message]]:
    if msgs[0].role == "system":
        return msgs[0], msgs[1:]
    return (None if t.default_system is None else Message("system", t.default_system)), msgs


def _check_roles(msgs: list[Message]) -> None:
    for i, m in enumerate(msgs):
        if m.role == "system":
            raise InputError(f"message {i}: a system message is only allowed first")


def _render_chatml(t: ChatTemplate, msgs: list[Message], gen: bool) -> list[Segment]:
    system, turns = _split_system(t, msgs)
    _check_roles(turns)
    segs: list[Segment] = []
    if system is not None:
        segs += [
            Segment("<|im_start|>system\n", "system"),
            _text(system, system.content, "system"),
            Segment("<|im_end|>\n", "system"),
        ]
    for m in turns:
        if m.role == "assistant":
            segs += [
                Segment("<|im_start|>assistant\n", "assistant"),
                _text(m, m.content, "assistant", True),
                Segment("<|im_end|>", "assistant", True),
                Segment("\n", "assistant"),
            ]
        else:
            segs += [
                Segment(f"<|im_start|>{m.role}\n", m.role),
                _text(m, m.content, m.role),
                Segment("<|im_end|>\n", m.role),
            ]
    if gen:
        segs.append(Segment("<|im_start|>assistant\n", "assistant"))
    return segs


def _render_vicuna(t: ChatTemplate, msgs: list[Message], gen: bool) -> list[Segment]:
    system, turns = _split_system(t, msgs)
    _check_roles(turns)
    segs = [Segment("<s>", "system")]
    if system is not None:
        segs.append(_text(system, system.content, "system"))
    segs.append(Segment(" ", "system"))
    for m in turns:
        if m.role == "user":
            segs += [Segment("USER: ", "user"), _text(m, m.content, "user"), Segment(" ", "user")]
        else:
            segs += [
                Segment("ASSISTANT: ", "assistant"),
                _text(m, m.content, "assistant", True),
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
        segs += [
            Segment("<|start_header_id|>system<|end_header_id|>\n\n", "system"),
            _text(system, system.content.strip(), "system"),
            Segment("<|eot_id|>", "system"),
        ]
    for m in turns:
        header = f"<|start_header_id|>{m.role}<|end_header_id|>\n\n"
        if m.role == "assistant":
            segs += [
                Segment(header, "assistant"),
                _text(m, m.content.strip(), "assistant", True),
                Segment("<|eot_id|>", "assistant", True),
            ]
        else:
            segs += [
                Segment(header, m.role),
                _text(m, m.content.strip(), m.role),
                Segment("<|eot_id|>", m.role),
            ]
    if gen:
        segs.append(Segment("<|start_header_id|>assistant<|end_header_id|>\n\n", "assistant"))
    return segs


def _render_plain(t: ChatTemplate, msgs: list[Message], gen: bool) -> list[Segment]:
    _, turns = _split_system(t, msgs)
    segs: list[Segment] = []
    image = t.extra.get("image_token", "<image>")
    video = t.extra.get("video_token", "<video>")
    for m in turns:
        if m.role == "user":  # the instruction is dropped; only the media slots remain (typed tags are text)
            tags = "".join(match.group(0) for match in media_tags(m, image, video))
            segs.append(Segment(tags or image, "user"))
        else:
            segs += [_text(m, m.content, "assistant", True), Segment("\n", "assistant", True)]
    return segs


# -- Jinja twins of the renderers (for exported checkpoints) ---------------------------------------------------
# Every piece of literal text is a Jinja string expression, so transformers' trim_blocks / lstrip_blocks cannot
# change it; json.dumps gives a literal Jinja reads back unchanged (it unescapes \\n and \\uXXXX).


def _q(text: str) -> str:
    return json.dumps(text)


def _out(text: str) -> str:
    return "{{ " + _q(text) + " }}"


def _jinja_prelude(t: ChatTemplate, image: str, video: str) -> str:
    """Shared macros: ``text(m)`` is the message text as :func:`normalize_messages` builds it (media parts become
    ``<image>\\n`` / ``<video>\\n``), ``role(m)`` its normalised role; ``system`` / ``turns`` split as
    :func:`_split_system` does."""
    aliases = "{" + ", ".join(f"{_q(k)}: {_q(v)}" for k, v in _ROLE_ALIASES.items()) + "}"
    default = "none" if t.default_system is None else _q(t.default_system)
    return (
        f"{{% set image = {_q(image)} %}}{{% set video = {_q(video)} %}}{{% set aliases = {aliases} %}}"
        "{% macro text(m) %}{% if m['content'] is string %}{{ m['content'] }}{% else %}"
        "{% for p in m['content'] %}{% if p['type'] == 'image' %}{{ image ~ '\\n' }}"
        "{% elif p['type'] == 'video' %}{{ video ~ '\\n' }}{% elif p['type'] == 'text' %}{{ p['text'] }}"
        "{% else %}{{ raise_exception('unknown content part type ' ~ p['type'] ~ ' (text, image, video)') }}"
        "{% endif %}{% endfor %}{% endif %}{% endmacro %}"
        "{% macro role(m) %}{% if m['role'] not in aliases %}"
        "{{ raise_exception('unknown role ' ~ m['role'] ~ '; use system/user/assistant (or human/gpt)') }}"
        "{% endif %}{{ aliases[m['role']] }}{% endmacro %}"
        "{% if role(messages[0]) == 'system' %}{% set system = text(messages[0]) %}{% set turns = messages[1:] %}"
        f"{{% else %}}{{% set system = {default} %}}{{% set turns = messages %}}{{% endif %}}"
    )


_NO_LATE_SYSTEM = (
    "{% if r == 'system' %}{{ raise_exception('a system message is only allowed first') }}{% endif %}"
)


def _jinja_chatml(t: ChatTemplate, image: str, video: str) -> str:
    return (
        "{% if system is not none %}"
        + _out("<|im_start|>system\n")
        + "{{ system }}"
        + _out("<|im_end|>\n")
        + "{% endif %}{% for m in turns %}{% set r = role(m) %}"
        + _NO_LATE_SYSTEM
        + "{{ '<|im_start|>' ~ r ~ '\\n' }}{{ text(m) }}"
        + _out("<|im_end|>\n")
        + "{% endfor %}"
        + "{% if add_generation_prompt %}"
        + _out("<|im_start|>assistant\n")
        + "{% endif %}"
    )


def _jinja_vicuna(t: ChatTemplate, image: str, video: str) -> str:
    return (
        _out("<s>")
        + "{% if system is not none %}{{ system }}{% endif %}"
        + _out(" ")
        + "{% for m in turns %}{% set r = role(m) %}"
        + _NO_LATE_SYSTEM
        + "{% if r == 'user' %}"
        + _out("USER: ")
        + "{{ text(m) }}"
        + _out(" ")
        + "{% else %}"
        + _out("ASSISTANT: ")
        + "{{ text(m) }}"
        + _out("</s>")
        + "{% endif %}{% endfor %}"
        + "{% if add_generation_prompt %}"
        + _out("ASSISTANT:")
        + "{% endif %}"
    )


def _jinja_llama3(t: ChatTemplate, image: str, video: str) -> str:
    return (
        _out("<|begin_of_text|>")
        + "{% if system is not none %}"
        + _out("<|start_header_id|>system<|end_header_id|>\n\n")
        + "{{ system | trim }}"
        + _out("<|eot_id|>")
        + "{% endif %}{% for m in turns %}{% set r = role(m) %}"
        + _NO_LATE_SYSTEM
        + "{{ '<|start_header_id|>' ~ r ~ '<|end_header_id|>\\n\\n' }}{{ text(m) | trim }}"
        + _out("<|eot_id|>")
        + "{% endfor %}{% if add_generation_prompt %}"
        + _out("<|start_header_id|>assistant<|end_header_id|>\n\n")
        + "{% endif %}"
    )


def _jinja_plain(t: ChatTemplate, image: str, video: str) -> str:
    # a user turn keeps only its media tags, in order (split on the video tag, count image tags in each piece)
    return (
        "{% for m in turns %}{% if role(m) == 'user' %}{% set ns = namespace(tags='') %}"
        "{% for piece in text(m).split(video) %}{% if not loop.first %}{% set ns.tags = ns.tags ~ video %}"
        "{% endif %}{% set ns.tags = ns.tags ~ image * ((piece.split(image) | length) - 1) %}{% endfor %}"
        "{{ ns.tags if ns.tags else image }}{% else %}{{ text(m) }}" + _out("\n") + "{% endif %}{% endfor %}"
    )


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
        jinja=_jinja_chatml,
    ),
    "qwen_2",
    "chatml",
)
register_template(
    ChatTemplate(
        "vicuna_v1",
        VICUNA_SYSTEM,
        _render_vicuna,
        ("</s>",),
        description="LLaVA-1.5/1.6 Vicuna",
        jinja=_jinja_vicuna,
    ),
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
        jinja=_jinja_llama3,
    ),
    "llava_llama_3",
)
register_template(
    ChatTemplate("plain", None, _render_plain, ("\n",), description="stage-1 captioning", jinja=_jinja_plain)
)
