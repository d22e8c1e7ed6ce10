"""The OpenAI chat-completions request schema, validated by hand so every refusal names its field.

:func:`parse_chat_request` turns a decoded JSON body into a :class:`ChatRequest` or raises :class:`ApiError`
(``status``, ``message``, ``type``, ``param``), which the app renders as ``{"error": {...}}``. Response builders
(:func:`completion`, :func:`chunk`, :func:`usage`) write the OpenAI shapes. Nothing here imports torch.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: OpenAI's own limit on ``stop`` sequences; longer strings than this are refused as absurd.
MAX_STOP_SEQUENCES = 4
MAX_STOP_LENGTH = 256
#: Largest ``num_frames`` a request may ask for (the context budget usually refuses far fewer).
MAX_NUM_FRAMES = 1024
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
#: Fields OpenAI defines that this server cannot honour: refused when set to anything but their neutral value.
_UNSUPPORTED = {
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none", "auto"),
    "function_call": (None, "none", "auto"),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "audio": (None,),
    "prediction": (None,),
}


class ApiError(Exception):
    """An error answer: HTTP ``status`` and the OpenAI error object (``message``, ``type``, ``param``, ``code``)."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param, code)


@dataclass(frozen=True)
class MediaRef:
    """One ``image_url`` / ``video_url`` part: its kind, URL and JSON path (for error messages)."""

    kind: str  # "image" | "video"
    url: str
    param: str  # e.g. "messages[0].content[1].image_url.url"


@dataclass(frozen=True)
class Turn:
    """One message: role and parts, each ``("text", str)`` or ``("image" | "video", MediaRef)``."""

    role: str
    parts: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class ChatRequest:
    model: str
    turns: tuple[Turn, ...]
    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    num_frames: int | None = None
    media: tuple[MediaRef, ...] = field(default=())


def parse_chat_request(body: Any, *, media_limits: Mapping[str, int]) -> ChatRequest:
    """Validate a decoded ``/v1/chat/completions`` body; ``media_limits`` is the per-prompt limit by kind."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {_json_type(body)}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string", "model")
    for name, neutral in _UNSUPPORTED.items():
        if name in body and not any(body[name] == v and type(body[name]) is type(v) for v in neutral):
            raise bad_request(f"'{name}' is not supported by this server", name, "unsupported_parameter")
    n = body.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise bad_request(f"'n' must be 1 (one choice per request), got {n!r}", "n")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise bad_request("'response_format' other than {'type': 'text'} is not supported", "response_format")
    turns, media = _messages(body.get("messages"))
    counts = {kind: sum(m.kind == kind for m in media) for kind in ("image", "video")}
    for kind, count in counts.items():
        limit = media_limits.get(kind, 0)
        if count > limit:
            raise bad_request(
                f"the prompt has {count} {kind}(s), over this server's limit of {limit} per prompt "
                f"(--limit-media-per-prompt)",
                "messages",
                "too_many_media",
            )
    stream = _optional(body, "stream", bool, default=False)
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise bad_request("'stream_options' must be an object", "stream_options")
        include_usage = _optional(options, "include_usage", bool, default=False, param="stream_options")
    return ChatRequest(
        model=model,
        turns=turns,
        max_tokens=_max_tokens(body),
        temperature=_number(body, "temperature", 0.0, lo=0.0, hi=2.0),
        top_p=_top_p(body),
        seed=_seed(body),
        stop=_stop(body.get("stop")),
        stream=stream,
        include_usage=include_usage,
        num_frames=_bounded_int(body, "num_frames", 1, MAX_NUM_FRAMES),
        media=tuple(media),
    )


# -- fields ------------------------------------------------------------------------------------------------------


def _messages(messages: Any) -> tuple[tuple[Turn, ...], list[MediaRef]]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' is required and must be a non-empty array", "messages")
    turns: list[Turn] = []
    media: list[MediaRef] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object", where)
        raw_role = message.get("role")
        role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise bad_request(
                f"{where}.role {raw_role!r} is not supported; use system, developer, user or assistant",
                f"{where}.role",
            )
        content = message.get("content")
        parts: list[tuple[str, Any]] = []
        if isinstance(content, str):
            parts.append(("text", content))
        elif isinstance(content, list):
            for j, part in enumerate(content):
                parts.append(_part(part, f"{where}.content[{j}]", role, media))
        else:
            raise bad_request(f"{where}.content must be a string or an array of parts", f"{where}.content")
        turns.append(Turn(role, tuple(parts)))
    if turns[-1].role == "assistant":
        raise bad_request(
            "the conversation ends with an assistant message; the last message must be from the user",
            f"messages[{len(turns) - 1}].role",
        )
    if not any(t.role == "user" for t in turns):
        raise bad_request("the conversation needs at least one user message", "messages")
    return tuple(turns), media


def _part(part: Any, where: str, role: str, media: list[MediaRef]) -> tuple[str, Any]:
    if not isinstance(part, dict):
        raise bad_request(f"{where} must be an object", where)
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise bad_request(f"{where}.text must be a string", f"{where}.text")
        return ("text", text)
    if kind in ("image_url", "video_url"):
        media_kind = kind.removesuffix("_url")
        if role != "user":
            raise bad_request(f"{where}: {kind} parts are only allowed in user messages", f"{where}.type")
        value = part.get(kind)
        url = value.get("url") if isinstance(value, dict) else value
        if not isinstance(url, str) or not url:
            raise bad_request(f"{where}.{kind}.url must be a non-empty string", f"{where}.{kind}.url")
        ref = MediaRef(media_kind, url, f"{where}.{kind}.url")
        media.append(ref)
        return (media_kind, ref)
    raise bad_request(
        f"{where}.type {kind!r} is not supported; use text, image_url or video_url", f"{where}.type"
    )


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise bad_request(f"'{name}' must be a whole number, got {value!r}", name)
    if value < 1:
        raise bad_request(f"'{name}' must be at least 1, got {value}", name)
    return int(value)


def _top_p(body: Mapping[str, Any]) -> float | None:
    value = body.get("top_p")
    if value is None:
        return None
    value = _number(body, "top_p", 1.0, lo=0.0, hi=1.0)
    if value <= 0:
        raise bad_request(f"'top_p' must be in (0, 1], got {value:g}", "top_p")
    return value


def _seed(body: Mapping[str, Any]) -> int | None:
    value = body.get("seed")
    if value is None:
        return None
    if not _is_int(value) or not 0 <= value < 2**63:
        raise bad_request(f"'seed' must be a whole number in [0, 2**63), got {value!r}", "seed")
    return int(value)


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad_request("'stop' must be a string or an array of strings", "stop")
    if len(items) > MAX_STOP_SEQUENCES:
        raise bad_request(f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences, got {len(items)}", "stop")
    for s in items:
        if not s or len(s) > MAX_STOP_LENGTH:
            raise bad_request(f"each 'stop' sequence must have 1 to {MAX_STOP_LENGTH} characters", "stop")
    return tuple(items)


def _number(body: Mapping[str, Any], name: str, default: float, *, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"'{name}' must be a number, got {value!r}", name)
    if not lo <= value <= hi:
        raise bad_request(f"'{name}' must be between {lo:g} and {hi:g}, got {value:g}", name)
    return float(value)


def _bounded_int(body: Mapping[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value) or not lo <= value <= hi:
        raise bad_request(f"'{name}' must be a whole number from {lo} to {hi}, got {value!r}", name)
    return int(value)


def _optional(
    body: Mapping[str, Any], name: str, kind: type, *, default: Any, param: str | None = None
) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise bad_request(f"'{name}' must be a {kind.__name__}, got {value!r}", param or name)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(value), "a number"
    )


# -- responses ---------------------------------------------------------------------------------------------------


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def usage(prompt_tokens: int, completion_tokens: int, image_tokens: int, video_tokens: int) -> dict[str, Any]:
    """OpenAI ``usage``; ``prompt_tokens`` includes the visual tokens, broken down in ``prompt_tokens_details``."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {
            "cached_tokens": 0,
            "image_tokens": image_tokens,
            "video_tokens": video_tokens,
            "text_tokens": prompt_tokens - image_tokens - video_tokens,
        },
    }


def completion(
    request_id: str, model: str, text: str, finish_reason: str, usage_: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage_,
    }


def chunk(
    request_id: str,
    model: str,
    created: int,
    *,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    usage_: dict[str, Any] | None = None,
    include_usage: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; the usage chunk (``delta=None``) has no choices, as OpenAI sends it."""
    out: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if include_usage:
        out["usage"] = usage_
    return out
