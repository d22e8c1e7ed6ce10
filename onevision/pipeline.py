"""The inference API: ``onevision.load(path_or_hub_id)`` -> :class:`Pipeline` (model + matching processor).

Low level (transformers-style)::

    pipe = onevision.load("path/to/checkpoint")
    logits = pipe.model(**pipe.processor(text="<image>\\nWhat is this?", images=[img])).logits

High level::

    pipe.generate("What is this?", images=[img])                 # -> str
    pipe.chat([{"role": "user", "content": [{"type": "video", "video": "clip.mp4"},
                                            {"type": "text", "text": "Describe."}]}], stream=True)  # -> iterator

Prompts and message text are plain text: a special token typed in them (``<|im_end|>``, ``</s>``, ``<image>``, any
special token of the tokenizer) is encoded as its characters. Only the chat template adds control tokens, and only
media parts (or ``images=`` / ``videos=``) add visual slots.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from onevision.bundle import Bundle, build_bundle
from onevision.config import OneVisionConfig
from onevision.errors import InputError
from onevision.templates import normalize_messages


class Pipeline(Bundle):
    """A model and the processor that matches it (same policy, tokenizer and template), with generation."""

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        """Write a native checkpoint (``config.json`` + ``model.safetensors`` + tokenizer)."""
        from onevision.checkpoints.native import save_native

        save_native(self, directory)

    def to(self, device: Any = None, dtype: Any = None) -> Pipeline:
        self.model.to(device=device, dtype=dtype)
        return self

    # -- generation -----------------------------------------------------------------------------------------
    def generate(
        self,
        prompt: str,
        images: Sequence[Any] | None = None,
        video: Any = None,
        *,
        videos: Sequence[Any] | None = None,
        system: str | None = None,
        stream: bool = False,
        **options: Any,
    ) -> str | Iterator[str]:
        """Answer one user ``prompt`` about optional ``images`` and/or a ``video`` (path, Clip or frames).

        The images, then the videos, go in front of the prompt (one ``<image>\\n`` / ``<video>\\n`` slot each);
        ``prompt`` is plain text, tags typed in it included.
        Options: ``max_new_tokens``, ``temperature`` (0 = greedy), ``top_p``, ``top_k``, ``num_frames``, ``seed``.
        """
        videos = list(videos or ()) + ([video] if video is not None else [])
        messages: list[dict[str, Any]] = [] if system is None else [{"role": "system", "content": system}]
        messages.append({"role": "user", "content": prompt})
        return self.chat(messages, images=images, videos=videos, stream=stream, **options)

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        images: Sequence[Any] | None = None,
        videos: Sequence[Any] | None = None,
        *,
        stream: bool = False,
        **options: Any,
    ) -> str | Iterator[str]:
        """Continue a conversation (``{"role","content"}`` turns, content may hold image/video parts) with the
        assistant's next answer. ``images`` / ``videos`` given here go in front of the first user turn. Message
        text is plain text (typed special tokens and tags included). ``stream=True`` returns an iterator."""
        if stream:
            return self._stream([(messages, images, videos)], options)
        return self.batch([{"messages": messages, "images": images, "videos": videos}], **options)[0]

    def batch(
        self, requests: Sequence[Mapping[str, Any]], *, batch_size: int = 8, **options: Any
    ) -> list[str]:
        """Answers for many requests (``{"messages": [...]}`` or ``{"prompt": str}``, plus ``images`` /
        ``videos`` / ``video``), generated ``batch_size`` at a time with left padding."""
        answers: list[str] = []
        for start in range(0, len(requests), batch_size):
            chunk = [self._request(r) for r in requests[start : start + batch_size]]
            answers.extend(self._generate(chunk, options))
        return answers

    # -- internals ------------------------------------------------------------------------------------------
    def _request(self, r: Mapping[str, Any]) -> tuple[Any, Any, Any]:
        videos = list(r.get("videos") or ()) + ([r["video"]] if r.get("video") is not None else [])
        images = list(r.get("images") or ())
        if r.get("messages") is not None:
            return r["messages"], images, videos
        if r.get("prompt") is None:
            raise InputError("a request needs 'messages' or 'prompt'")
        return [{"role": "user", "content": r["prompt"]}], images, videos

    def prompt_sample(
        self,
        messages: Sequence[Mapping[str, Any]],
        images: Sequence[Any] | None = None,
        videos: Sequence[Any] | None = None,
        *,
        num_frames: int | None = None,
    ) -> dict[str, Any]:
        """The unbatched model inputs (``input_ids`` + visual inputs, no labels) that :meth:`chat` answers after:
        the conversation, its media and the generation prompt, built as :meth:`chat` builds them. For scoring
        continuations (log-likelihoods, e.g. ``onevision.eval``)."""
        msgs, _, _ = normalize_messages(
            messages, image_token=self.processor.image_token, video_token=self.processor.video_token
        )
        if msgs and msgs[-1].role == "assistant":
            raise InputError("the conversation already ends with an assistant turn")
        sample = self.processor.build_sample(
            _with_media(messages, images or (), videos or ()),
            add_generation_prompt=True,
            num_frames=num_frames,
            tags_in_text=False,  # only media parts are slots; typed tags are text
        )
        sample.pop("labels", None)
        return sample

    def _inputs(self, requests: Sequence[tuple[Any, Any, Any]], num_frames: int | None):
        samples = []
        for messages, images, videos in requests:
            msgs, _, _ = normalize_messages(
                messages, image_token=self.processor.image_token, video_token=self.processor.video_token
            )
            if msgs and msgs[-1].role == "assistant":
                raise InputError("the conversation already ends with an assistant turn")
            samples.append(
                self.processor.build_sample(
                    _with_media(messages, images or (), videos or ()),
                    add_generation_prompt=True,
                    num_frames=num_frames,
                    tags_in_text=False,  # only media parts are slots; typed tags are text
                )
            )
            for key in ("labels",):
                samples[-1].pop(key, None)
        return self.processor.collate(samples, padding_side="left").to(self.model.device, self.model.dtype)

    def _gen_kwargs(self, options: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
        options = dict(options)
        num_frames = options.pop("num_frames", None)
        options.setdefault("eos_token_id", self.processor.stop_token_ids)
        options.setdefault("pad_token_id", self.processor.pad_token_id)
        return options, num_frames

    def _generate(self, requests: Sequence[tuple[Any, Any, Any]], options: dict[str, Any]) -> list[str]:
        kwargs, num_frames = self._gen_kwargs(options)
        inputs = self._inputs(requests, num_frames)
        out = self.model.generate(**inputs, **kwargs)
        return [self.processor.decode(row, skip_special_tokens=True).strip() for row in out]

    def _stream(self, requests: Sequence[tuple[Any, Any, Any]], options: dict[str, Any]) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        kwargs, num_frames = self._gen_kwargs(options)
        inputs = self._inputs(requests, num_frames)
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                self.model.generate(**inputs, streamer=streamer, **kwargs)
            except BaseException as exc:  # surfaced in the consumer thread
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        def pieces() -> Iterator[str]:
            yield from streamer
            thread.join()
            if errors:
                raise errors[0]

        return pieces()


def _with_media(
    messages: Sequence[Mapping[str, Any]], images: Sequence[Any], videos: Sequence[Any]
) -> list[Mapping[str, Any]]:
    """``messages`` with ``images`` then ``videos`` as media parts in front of the first user turn."""
    if not images and not videos:
        return list(messages)
    for i, turn in enumerate(messages):
        content = turn.get("content", turn.get("value", ""))
        if not isinstance(content, str) and any(p.get("type") in ("image", "video") for p in content):
            raise InputError(
                f"message {i}: media were given both inside message parts and as arguments; use one of the two"
            )
    parts = [{"type": "image", "image": x} for x in images] + [{"type": "video", "video": x} for x in videos]
    out, placed = [], False
    for turn in messages:
        role = turn.get("role", turn.get("from"))
        if not placed and role in ("user", "human"):
            content = turn.get("content", turn.get("value", ""))
            text = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
            turn = {"role": "user", "content": parts + text}
            placed = True
        out.append(turn)
    if not placed:
        raise InputError("images/videos were given but the conversation has no user turn to attach them to")
    return out


def from_config(config: OneVisionConfig, tokenizer: Any = None, *, dtype: Any = None) -> Pipeline:
    """Build a model (random or pretrained component weights, as the config says) and its processor.

    ``tokenizer`` defaults to ``config.llm.tokenizer`` or ``config.llm.pretrained`` (``from_pretrained``).
    """
    bundle = build_bundle(config, tokenizer, dtype=dtype)
    return Pipeline(bundle.model, bundle.processor)


def load(
    path_or_hub_id: str,
    *,
    device: Any = None,
    dtype: Any = None,
    format: str = "auto",
    device_map: Any = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | None = None,
    attn_implementation: str | None = None,
    quantization: str | None = None,
    **kwargs: Any,
) -> Pipeline:
    """Load any supported checkpoint (native onevision, HF ``llava_onevision``, original LLaVA-NeXT) as a
    ready :class:`Pipeline`. Hub ids are fetched with ``huggingface_hub``; local directories are read as is.

    The model is built on the meta device and each weight is read once from the memory-mapped safetensors
    straight into ``dtype`` (default: the checkpoint's) on ``device`` (default CPU). ``device_map``: a device,
    a dict ``module prefix -> device`` (e.g. ``{"vision_tower": "cuda:0", "language_model": "cuda:1", ...}``) or
    ``"auto"`` (accelerate, bounded by ``max_memory``; what does not fit goes to ``"disk"``). Modules on
    ``"disk"`` read their weights at each forward straight from the checkpoint's safetensors (no copy); weights
    from ``*.bin`` files need ``offload_folder`` (a new or empty folder) to be written to once.
    ``attn_implementation`` (``"sdpa"``, ``"eager"``, ...) applies to the LLM and the vision tower. ``quantization``
    (``"int8"`` / ``"nf4"``, bitsandbytes) quantizes all but ``quantization_skip`` (default ``("vision",)``); a LoRA
    adapter directory loads its base and applies the adapter (``merge=True`` folds it in)."""
    from onevision.checkpoints.conversion import load_checkpoint

    if device is not None and device_map is not None:
        raise InputError("pass device or device_map, not both")
    placement = {
        "device": device,
        "device_map": device_map,
        "max_memory": max_memory,
        "offload_folder": offload_folder,
    }
    if attn_implementation is not None:
        placement["attn_implementation"] = attn_implementation
    if quantization is not None:
        placement["quantization"] = quantization
    bundle = load_checkpoint(
        path_or_hub_id,
        format=format,
        dtype=dtype,
        **{k: v for k, v in placement.items() if v is not None},
        **kwargs,
    )
    pipe = Pipeline(bundle.model, bundle.processor)
    pipe.model.eval()
    return pipe
