"""Text + images + videos -> model inputs, under one declarative per-modality policy.

The policy (:class:`ModalityPolicy`) is read from the model config and used identically by inference, training
and token counting:

* a sample with exactly one image: the single-image strategy (``anyres_max_9``);
* a sample with several images: the multi-image strategy for each (``pad``: one tile + one newline);
* a video: frames squash-resized to one tile each, then pooled (``video.FramePooling``).

Images and videos are assigned to the ``<image>`` / ``<video>`` tags in order across the batch (or per sample when
given as nested lists). Placeholder ids are inserted directly, with exact counts from the ``anyres`` / ``video``
layouts; nothing regex-expands thousands of tag strings. The full multimodal length is known before any pixel is
processed, so an over-long prompt fails early with the numbers, and a visual span is never truncated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyres
from onevision.config import ProcessorConfig
from onevision.errors import ConfigError, ContextOverflowError, InputError
from onevision.templates import (
    ChatTemplate,
    Message,
    Segment,
    get_template,
    media_tag_pattern,
    media_tags,
    normalize_messages,
)

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100

_MEDIA_KINDS = ("image", "video")


# ----------------------------------------------------------------------------------------------------------------
# Policy


@dataclass(frozen=True)
class ModalityPolicy:
    """Which visual representation each modality gets. Built from :class:`ProcessorConfig`."""

    single_image: anyres.Strategy
    multi_image: anyres.Strategy
    video: dict[str, Any]
    sampling: dict[str, Any]

    @classmethod
    def from_config(cls, config: ProcessorConfig) -> ModalityPolicy:
        single = anyres.strategy_from_dict(dict(config.single_image))
        multi = anyres.strategy_from_dict(dict(config.multi_image))
        for what, strat in (("multi_image", multi),):
            if (strat.tile_size, strat.patch_size) != (single.tile_size, single.patch_size):
                raise ConfigError(
                    f"processor.{what}: tile {strat.tile_size}/patch {strat.patch_size} differs from single_image "
                    f"({single.tile_size}/{single.patch_size}); one encoder needs one tile geometry"
                )
        return cls(single, multi, dict(config.video), dict(config.sampling))

    def image_strategy(self, images_in_sample: int) -> anyres.Strategy:
        """The strategy for each image of a sample holding ``images_in_sample`` images."""
        return self.single_image if images_in_sample == 1 else self.multi_image

    @property
    def tile_size(self) -> int:
        return self.single_image.tile_size

    @property
    def patch_size(self) -> int:
        return self.single_image.patch_size

    def frame_pooling(self):
        """The ``video.FramePooling`` of this policy (imports :mod:`video`)."""
        import video

        params = {"tile_size": self.tile_size, "patch_size": self.patch_size, **self.video}
        return video.FramePooling(**params)

    def frame_sampling(self, **overrides: Any):
        """The ``video.Sampling`` of this policy, optionally overridden (e.g. ``num_frames=8``)."""
        import video

        params = dict(self.sampling)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "num_frames" in overrides or "fps" in overrides:
            params.pop("num_frames", None)
            params.pop("fps", None)
            if "num_frames" in overrides:  # an explicit frame count replaces an fps rule entirely
                for key in ("max_frames", "force_sample"):
                    params.pop(key, None)
        params.update(overrides)
        return video.Sampling.from_dict(params)


def resolve_processor_config(config: ProcessorConfig, info: Any) -> ProcessorConfig:
    """Fill tile size, patch size, normalisation and CLS handling from an encoder's declared metadata."""
    import dataclasses

    geometry = {
        "tile_size": info.tile_size,
        "patch_size": info.patch_size,
        "image_mean": list(info.image_mean),
        "image_std": list(info.image_std),
        "has_cls": False,  # encoders return patch tokens only (CLS already dropped by their feature rule)
    }

    def fill(spec: Mapping[str, Any]) -> dict[str, Any]:
        merged = {**geometry, **spec}  # an explicit mean/std in the policy wins over the encoder's
        merged.update(tile_size=info.tile_size, patch_size=info.patch_size, has_cls=False)
        return anyres.strategy_from_dict(merged).to_dict()

    return dataclasses.replace(
        config, single_image=fill(config.single_image), multi_image=fill(config.multi_image)
    )


# ----------------------------------------------------------------------------------------------------------------
# Outputs


class BatchInputs(dict):
    """Model inputs (a dict usable as ``model(**inputs)``) with attribute access and ``.to(device, dtype)``.

    Keys: ``input_ids``, ``attention_mask`` ``[B, L]``; optionally ``labels``; ``pixel_values``
    ``[sum tiles, 3, S, S]`` with ``image_layouts`` (one ``anyres.Layout`` per image, in placeholder order);
    ``pixel_values_videos`` ``[sum frames, 3, S, S]`` with ``video_layouts`` (one per video).
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: Any = None, dtype: Any = None) -> BatchInputs:
        """Move tensors to ``device``; cast floating tensors (pixels) to ``dtype`` if given."""
        import torch

        out = BatchInputs()
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                if dtype is not None and value.is_floating_point():
                    value = value.to(device=device, dtype=dtype)
                else:
                    value = value.to(device=device)
            out[key] = value
        return out


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


@dataclass
class _Media:
    """One media item of one sample, resolved to what is needed for layout and pixels."""

    kind: str
    source: Any
    layout: Any = None
    strategy: Any = None
    image: Any = None  # loaded PIL image
    frames: Any = None  # uint8 [T, H, W, 3]
    timestamps: Any = None  # seconds of each sampled frame (paths and video.Clip inputs)
    duration: float | None = None


@dataclass
class _Planned:
    """One sample after tokenisation: ids with placeholder spans, per-token segment labels and its media."""

    ids: list[int]
    labels: list[int] | None
    media: list[_Media] = field(default_factory=list)
    visual_end: int = 0

    @property
    def visual(self) -> int:
        return sum(m.layout.num_tokens for m in self.media)


# ----------------------------------------------------------------------------------------------------------------
# Processor


class OneVisionProcessor:
    """Tokenizer + per-modality policy + chat template: the single path from raw inputs to model inputs."""

    def __init__(
        self, tokenizer: Any, config: ProcessorConfig | None = None, *, max_length: int | None = None
    ):
        from onevision.llm import add_media_tokens, ensure_pad_token

        self.config = config or ProcessorConfig()
        self.tokenizer = tokenizer
        self.policy = ModalityPolicy.from_config(self.config)
        self.template: ChatTemplate = get_template(self.config.template)
        self.image_token = self.config.image_token
        self.video_token = self.config.video_token
        self.image_token_id, self.video_token_id = add_media_tokens(
            tokenizer, self.image_token, self.video_token
        )
        self.pad_token_id = ensure_pad_token(tokenizer)
        self.max_length = self.config.max_length or max_length
        self._tag_re = media_tag_pattern(self.image_token, self.video_token)
        self._control_ids = _control_ids(tokenizer)
        vocab = tokenizer.get_vocab()
        self.stop_token_ids = [vocab[t] for t in self.template.stop_tokens if t in vocab]
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in self.stop_token_ids:
            self.stop_token_ids.append(int(tokenizer.eos_token_id))

    # -- public API -------------------------------------------------------------------------------------------
    def __call__(
        self,
        text: str | Sequence[str],
        images: Any = None,
        videos: Any = None,
        *,
        padding_side: str = "left",
        return_tensors: str = "pt",
        num_frames: int | None = None,
    ) -> BatchInputs:
        """Tokenise ``text`` (one string or a batch), insert exact placeholder runs and preprocess the media.

        ``images`` / ``videos`` are a flat list assigned to tags in order across the batch, or one list per sample.
        An image is a PIL image, a path, an HWC uint8 array or a CHW uint8 tensor. A video is a path (sampled with
        the policy's ``video.Sampling``; ``num_frames`` overrides it), a ``video.Clip`` or uint8 frames
        ``[T, H, W, 3]``. Padding is on the left by default (generation); use ``padding_side="right"`` for training.
        """
        if return_tensors != "pt":
            raise InputError(f"return_tensors must be 'pt', got {return_tensors!r}")
        texts = [text] if isinstance(text, str) else list(text)
        planned = self._plan_texts(texts, images, videos, load=True, num_frames=num_frames)
        self._check_budget(planned)
        samples = [self._materialize(p) for p in planned]
        return self.collate(samples, padding_side=padding_side)

    def count_tokens(
        self,
        text: str | Sequence[str] | None = None,
        images: Any = None,
        videos: Any = None,
        *,
        conversation: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = False,
        image_first: bool = True,
        legacy_video_tag: bool = False,
        tags_in_text: bool = True,
        num_frames: int | None = None,
    ) -> TokenCount | list[TokenCount]:
        """Exact token counts with a per-part breakdown, without preprocessing pixels.

        Images may also be given as ``anyres.ImageSize`` and videos as a frame count (``int``). Pass either
        ``text`` (one string or a list) or one ``conversation``, which is prepared exactly like
        :meth:`build_sample` (same options), so the count equals the length of the built sample.
        """
        if conversation is not None:
            if text is not None:
                raise InputError("pass either text or conversation, not both")
            msgs, conv_images, conv_videos = self._prepare_conversation(
                conversation,
                images,
                videos,
                image_first=image_first,
                legacy_video_tag=legacy_video_tag,
                tags_in_text=tags_in_text,
            )
            planned = [
                self._plan_conversation(
                    msgs,
                    conv_images,
                    conv_videos,
                    add_generation_prompt=add_generation_prompt,
                    load=False,
                    num_frames=num_frames,
                )
            ]
            single = True
        else:
            if text is None:
                raise InputError("count_tokens needs text or a conversation")
            single = isinstance(text, str)
            texts = [text] if single else list(text)
            planned = self._plan_texts(texts, images, videos, load=False, num_frames=num_frames)
        counts = [self._count(p) for p in planned]
        return counts[0] if single else counts

    def apply_chat_template(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt string for ``messages`` under this processor's chat template.

        A string cannot tell typed text from the template's markers: passed back to the processor, every special
        token in it is a control token. Use :meth:`build_sample` (or ``Pipeline.chat``) for untrusted text."""
        msgs, _, _ = normalize_messages(messages, image_token=self.image_token, video_token=self.video_token)
        return "".join(s.text for s in self.template.render(msgs, add_generation_prompt))

    def build_sample(
        self,
        conversation: Sequence[Mapping[str, Any]],
        images: Sequence[Any] | None = None,
        videos: Sequence[Any] | None = None,
        *,
        add_generation_prompt: bool = False,
        label_mask: str | None = None,
        image_first: bool = True,
        legacy_video_tag: bool = False,
        tags_in_text: bool = True,
        num_frames: int | None = None,
        check_length: bool = True,
    ) -> dict[str, Any]:
        """One conversation + its media -> ``input_ids``, ``labels`` and visual inputs (unbatched).

        ``conversation`` is a list of ``{"role","content"}`` or ``{"from","value"}`` turns (content may hold media
        parts). Labels are ``-100`` except on assistant answers and their end token (``label_mask`` defaults to the
        config's; ``"llava_next"`` reproduces the reference). ``image_first`` moves a turn's single media tag to
        its start (``"<image>\\n" + text``, as the reference data pipeline does). ``legacy_video_tag`` reads
        ``<image>`` as the video tag for LLaVA JSON video samples (a video and no images). When the policy's frame
        sampling has ``time_instruction``, the LLaVA-Video time instruction is inserted after the video tag.

        Message text is plain text: a special token typed in it (``<|im_end|>``, ``</s>``, any added special token
        of the tokenizer) is encoded as its characters, never as the control id; only the template adds control
        tokens. ``tags_in_text=True`` (the LLaVA JSON rule) reads ``<image>`` / ``<video>`` in the text as the
        media slots; with ``False`` (chat) only image/video parts are slots and typed tags stay text.
        Returns a dict for :meth:`collate`.
        """
        msgs, images, videos = self._prepare_conversation(
            conversation,
            images,
            videos,
            image_first=image_first,
            legacy_video_tag=legacy_video_tag,
            tags_in_text=tags_in_text,
        )
        planned = self._plan_conversation(
            msgs,
            images,
            videos,
            add_generation_prompt=add_generation_prompt,
            load=True,
            num_frames=num_frames,
            label_mask=label_mask,
        )
        if check_length:
            self._check_budget([planned])
        return self._materialize(planned)

    def collate(self, samples: Sequence[Mapping[str, Any]], *, padding_side: str = "right") -> BatchInputs:
        """Pad samples from :meth:`build_sample` into one batch; the attention mask comes from the lengths.

        ``padding_side="right"`` for training, ``"left"`` for generation. Labels pad with ``-100``.
        """
        import torch

        if padding_side not in ("left", "right"):
            raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if not samples:
            raise InputError("collate needs at least one sample")
        lengths = [int(s["input_ids"].shape[0]) for s in samples]
        width = max(lengths)
        batch = len(samples)
        ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        has_labels = [s.get("labels") is not None for s in samples]
        if any(has_labels) and not all(has_labels):
            raise InputError("either every sample or none must have labels")
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long) if all(has_labels) else None
        for row, (s, n) in enumerate(zip(samples, lengths)):
            cols = slice(width - n, width) if padding_side == "left" else slice(0, n)
            ids[row, cols] = s["input_ids"]
            mask[row, cols] = 1
            if labels is not None:
                labels[row, cols] = s["labels"]
        out = BatchInputs(input_ids=ids, attention_mask=mask)
        if labels is not None:
            out["labels"] = labels
        pixels = [s["pixel_values"] for s in samples if s.get("pixel_values") is not None]
        layouts = tuple(lay for s in samples for lay in s.get("image_layouts", ()))
        if pixels:
            out["pixel_values"] = pixels[0] if len(pixels) == 1 else torch.cat(pixels)
            out["image_layouts"] = layouts
        frames = [s["pixel_values_videos"] for s in samples if s.get("pixel_values_videos") is not None]
        if frames:
            out["pixel_values_videos"] = frames[0] if len(frames) == 1 else torch.cat(frames)
            out["video_layouts"] = tuple(lay for s in samples for lay in s.get("video_layouts", ()))
        return out

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, ids: Any, skip_special_tokens: bool = True) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens)

    def save_pretrained(self, directory: str) -> None:
        """Write the tokenizer files (the policy lives in the model's ``config.json``)."""
        self.tokenizer.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str) -> OneVisionProcessor:
        """The processor of a native checkpoint, without loading the model (e.g. for data workers)."""
        import json
        from pathlib import Path

        from onevision.config import OneVisionConfig
        from onevision.llm import load_tokenizer

        path = Path(directory) / "config.json"
        if not path.is_file():
            raise ConfigError(f"{directory}: no config.json")
        config = OneVisionConfig.from_dict(json.loads(path.read_text()))
        return cls(load_tokenizer(str(directory)), config.processor)

    # -- planning (no pixels) ----------------------------------------------------------------------------------
    def _prepare_conversation(
        self,
        conversation: Sequence[Mapping[str, Any]],
        images: Sequence[Any] | None,
        videos: Sequence[Any] | None,
        *,
        image_first: bool,
        legacy_video_tag: bool,
        tags_in_text: bool = True,
    ) -> tuple[list[Message], list[Any], list[Any]]:
        msgs, part_images, part_videos = normalize_messages(
            conversation,
            image_token=self.image_token,
            video_token=self.video_token,
            tags_in_text=tags_in_text,
        )
        images_ = _merge(part_images, images)
        videos_ = _merge(part_videos, videos)
        if legacy_video_tag and videos_ and not images_:
            msgs = [self._legacy_video(m) for m in msgs]
        if image_first:
            msgs = [self._image_first(m) for m in msgs]
        return msgs, images_, videos_

    def _slots(self, m: Message) -> list[re.Match]:
        return media_tags(m, self.image_token, self.video_token)

    def _legacy_video(self, m: Message) -> Message:
        """The message with its ``<image>`` slots read as ``<video>`` (typed tags unchanged)."""
        content = m.content
        for slot in reversed(self._slots(m)):
            if slot.group(0) == self.image_token:
                content = content[: slot.start()] + self.video_token + content[slot.end() :]
        return Message(m.role, content, m.literal)

    def _image_first(self, m: Message) -> Message:
        """A turn's single media tag goes to its start (the reference's ``preprocess_multimodal``)."""
        slots = self._slots(m)
        if len(slots) == 1 and slots[0].start() != 0:
            return _slot_first(m, slots[0], "\n", strip=True)
        return m

    def _plan_texts(
        self, texts: list[str], images: Any, videos: Any, *, load: bool, num_frames: int | None
    ) -> list[_Planned]:
        tags = [self._tag_re.findall(t) for t in texts]
        per_image = _assign(images, [t.count(self.image_token) for t in tags], "image", self.image_token)
        per_video = _assign(videos, [t.count(self.video_token) for t in tags], "video", self.video_token)
        planned = []
        for text, imgs, vids in zip(texts, per_image, per_video):
            media = self._resolve_media(
                self._tag_re.findall(text), imgs, vids, load=load, num_frames=num_frames
            )
            ids, ends = self._encode(text, media)
            planned.append(_Planned(ids, None, media, _visual_end(ends)))
        return planned

    def _plan_conversation(
        self,
        msgs: list[Message],
        images: Sequence[Any] | None,
        videos: Sequence[Any] | None,
        *,
        add_generation_prompt: bool,
        load: bool,
        num_frames: int | None,
        label_mask: str | None = None,
    ) -> _Planned:
        # templates keep the messages' tags in order, so media resolve from the messages before rendering
        found = [slot.group(0) for m in msgs for slot in self._slots(m)]
        images, videos = list(images or ()), list(videos or ())
        for kind, token, given in (("image", self.image_token, images), ("video", self.video_token, videos)):
            n_tags = found.count(token)
            if n_tags != len(given):
                raise InputError(
                    f"the conversation has {n_tags} {token} tag(s) but {len(given)} {kind}(s) were given"
                )
        media = self._resolve_media(found, images, videos, load=load, num_frames=num_frames)
        if self.policy.sampling.get("time_instruction") and videos:
            msgs = self._add_time_instruction(msgs, [m for m in media if m.kind == "video"])
        segments = self.template.render(msgs, add_generation_prompt)
        text = "".join(s.text for s in segments)
        slots, protected = self._spans(segments)
        if [text[a:b] for a, b in slots] != found:
            raise InputError(
                f"chat template {self.template.name!r} changed the media tags of the conversation"
            )
        ids, ends = self._encode(text, media, slots, protected)
        mask = label_mask or self.config.label_mask
        bounds, pos = [], 0
        for seg in segments:
            bounds.append((pos, pos + len(seg.text), seg))
            pos += len(seg.text)
        labels = []
        unmask: set[int] = set()
        if mask == "llava_next":
            for tok in self.template.unmask_everywhere:
                pieces = self.tokenizer(tok, add_special_tokens=False)["input_ids"]
                if len(pieces) == 1:
                    unmask.add(pieces[0])
        seg_i = 0
        for tid, end in zip(ids, ends):
            if end is None:  # a visual placeholder
                labels.append(IGNORE_INDEX)
                continue
            while bounds[seg_i][1] <= end:
                seg_i += 1
            seg = bounds[seg_i][2]
            train = seg.train if mask == "assistant_only" else (seg.role == "assistant" or tid in unmask)
            labels.append(tid if train else IGNORE_INDEX)
        return _Planned(ids, labels, media, _visual_end(ends))

    def _add_time_instruction(self, msgs: list[Message], videos: list[_Media]) -> list[Message]:
        """The LLaVA-Video time instruction (verbatim, from ``video.time_instruction``) in the video's turn:
        ``"<video>\n{instruction}\n{text without the tag}"``, as the reference builds it."""
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
            slot = next((t for t in self._slots(m) if t.group(0) == self.video_token), None)
            if not done and slot is not None:  # verbatim: "<video>\nQ" gives "<video>\n{text}\n\nQ"
                m = _slot_first(m, slot, f"\n{text}\n")
                done = True
            out.append(m)
        return out

    def _resolve_media(
        self,
        tags: list[str],
        images: Sequence[Any],
        videos: Sequence[Any],
        *,
        load: bool,
        num_frames: int | None,
    ) -> list[_Media]:
        strategy = self.policy.image_strategy(len(images))
        media: list[_Media] = []
        it_img, it_vid = iter(images), iter(videos)
        pooling = None
        for tag in tags:
            if tag == self.image_token:
                item = _Media("image", next(it_img), strategy=strategy)
                size = self._image_size(item, load)
                item.layout = strategy.layout(size)
            else:
                item = _Media("video", next(it_vid))
                pooling = pooling or self.policy.frame_pooling()
                frames = self._video_frames(item, load, num_frames)
                item.layout = pooling.layout(frames)
            media.append(item)
        return media

    def _image_size(self, item: _Media, load: bool) -> anyres.ImageSize:
        src = item.source
        if isinstance(src, anyres.ImageSize):
            if load:
                raise InputError("an ImageSize can only be counted, not processed; pass the image itself")
            return src
        if not load:  # counting only: read the size without decoding pixels where possible
            from anyres.images import peek_size

            if isinstance(src, str) or hasattr(src, "__fspath__"):
                return anyres.ImageSize.from_pil(peek_size(src, max_pixels=item.strategy.max_pixels))
        loaded = anyres.open_image(src, max_pixels=item.strategy.max_pixels)
        item.image = loaded.image
        return anyres.ImageSize.from_pil(loaded.image.size)

    def _video_frames(self, item: _Media, load: bool, num_frames: int | None) -> int:
        import numpy as np

        src = item.source
        if isinstance(src, int) and not isinstance(src, bool):
            if load:
                raise InputError("a frame count can only be counted, not processed; pass the video itself")
            if src < 1:
                raise InputError(f"a video needs at least one frame, got {src}")
            return src
        if isinstance(src, str) or hasattr(src, "__fspath__"):
            import video

            sampling = self.policy.frame_sampling(num_frames=num_frames)
            if not load:  # counting only: the container header is enough
                info = video.probe(src)
                indices = sampling.indices(info.num_frames, info.fps)
                item.timestamps, item.duration = indices / info.fps, float(info.duration)
                return len(indices)
            clip = video.load(src, sampling)
            frames, item.timestamps, item.duration = clip.frames, clip.timestamps, float(clip.duration)
        elif hasattr(src, "frames"):
            frames = src.frames
            item.timestamps = getattr(src, "timestamps", None)
            item.duration = getattr(src, "duration", None)
        else:
            frames = src
        if hasattr(frames, "detach"):  # torch uint8 [T, 3, H, W] -> numpy [T, H, W, 3]
            frames = frames.detach().cpu()
            if frames.ndim == 4 and frames.shape[1] in (1, 3) and frames.shape[-1] not in (1, 3):
                frames = frames.permute(0, 2, 3, 1)
            frames = frames.numpy()
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] < 1:
            raise InputError(
                f"video frames must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} "
                f"{tuple(frames.shape)}"
            )
        item.frames = frames
        return int(frames.shape[0])

    def _spans(self, segments: Sequence[Segment]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Character spans of the rendered text: its media slots, and the message text (plain text only)."""
        slots: list[tuple[int, int]] = []
        protected: list[tuple[int, int]] = []
        pos = 0
        for seg in segments:
            for n, match in enumerate(self._tag_re.finditer(seg.text)):
                if not (seg.content and n in seg.literal):
                    slots.append((pos + match.start(), pos + match.end()))
            if seg.content and seg.text:
                protected.append((pos, pos + len(seg.text)))
            pos += len(seg.text)
        return slots, protected

    def _tokenize(self, texts: list[str], *, plain: bool = False) -> Any:
        """Ids and offsets of each text; ``plain`` encodes special-token strings as ordinary text."""
        extra = {"split_special_tokens": True} if plain else {}
        try:
            return self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, **extra)
        except NotImplementedError:
            raise ConfigError("onevision needs a fast (tokenizers-backed) tokenizer for offsets") from None

    def _encode(
        self,
        text: str,
        media: list[_Media],
        slots: Sequence[tuple[int, int]] | None = None,
        protected: Sequence[tuple[int, int]] = (),
    ) -> tuple[list[int], list[int | None]]:
        """Token ids with placeholder runs, and for each id the end character offset in ``text`` (None for media).

        ``slots`` are the media tag spans (default: every tag in ``text``, the raw-prompt path). Inside the
        ``protected`` spans (message text) a control token is never produced: the text is encoded as plain text.
        """
        if slots is None:
            slots = [(m.start(), m.end()) for m in self._tag_re.finditer(text)]
        bounds = [0, *(x for span in slots for x in span), len(text)]
        chunks = [(bounds[k], bounds[k + 1]) for k in range(0, len(bounds), 2)]
        texts = [text[a:b] for a, b in chunks if b > a]
        encoded = self._tokenize(texts) if texts else {"input_ids": [], "offset_mapping": []}
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
            return ids[k] in self._control_ids and any(s < pe and ps < e for ps, pe in protected)

        if not protected or not any(typed(k) for k in range(len(ids))):
            return list(ids), list(offsets)
        keep = [k for k in range(len(ids)) if ids[k] in self._control_ids and not typed(k)]
        out_ids: list[int] = []
        out_offs: list[tuple[int, int]] = []
        start_tok, start_char = 0, 0
        for stop in [*keep, len(ids)]:
            end_char = offsets[stop][0] if stop < len(ids) else len(text)
            run = range(start_tok, stop)
            if any(typed(k) for k in run):
                again = self._tokenize([text[start_char:end_char]], plain=True)
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

    def _count(self, planned: _Planned) -> TokenCount:
        parts = []
        counters = {"image": 0, "video": 0}
        for m in planned.media:
            lay = m.layout
            if m.kind == "image":
                policy = m.strategy.strategy_name
                breakdown = dict(lay.breakdown) if lay.breakdown else {"tokens": lay.num_tokens}
            else:
                v = self.policy.video
                policy = (
                    f"video {lay.num_frames} frames x {lay.tokens_per_frame} "
                    f"({v.get('mode', 'bilinear')}, stride {v.get('stride', 2)}, {v.get('newline', 'one_token')})"
                )
                breakdown = {"frame_tokens": lay.num_frames * lay.tokens_per_frame, "newlines": lay.newlines}
            parts.append(PartCount(m.kind, counters[m.kind], policy, lay.num_tokens, breakdown))
            counters[m.kind] += 1
        visual = planned.visual
        return TokenCount(
            len(planned.ids),
            len(planned.ids) - visual,
            visual,
            tuple(parts),
            self.max_length,
            planned.visual_end,
        )

    def _check_budget(self, planned: list[_Planned]) -> None:
        if not self.max_length:
            return
        for i, p in enumerate(planned):
            if len(p.ids) > self.max_length:
                raise ContextOverflowError(i, len(p.ids), self.max_length, p.visual, len(p.ids) - p.visual)

    # -- pixels -------------------------------------------------------------------------------------------------
    def _materialize(self, planned: _Planned) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {"input_ids": torch.tensor(planned.ids, dtype=torch.long)}
        if planned.labels is not None:
            out["labels"] = torch.tensor(planned.labels, dtype=torch.long)
        images = [m for m in planned.media if m.kind == "image"]
        if images:
            strategy = images[0].strategy
            batch = strategy.preprocess_batch([m.image if m.image is not None else m.source for m in images])
            for m, lay in zip(images, batch.layouts):
                if lay.num_tokens != m.layout.num_tokens:
                    raise InputError(f"{m.source!r}: image changed between planning and preprocessing")
            out["pixel_values"] = batch.pixel_values
            out["image_layouts"] = tuple(m.layout for m in images)
        videos = [m for m in planned.media if m.kind == "video"]
        if videos:
            out["pixel_values_videos"] = torch.cat([self.preprocess_frames(m.frames) for m in videos])
            out["video_layouts"] = tuple(m.layout for m in videos)
        return out

    def preprocess_frames(self, frames: Any) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 3, S, S]``: bicubic (antialiased) squash to one tile, then
        normalised like images (the transformers video processor's rule)."""
        import numpy as np
        import torch
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as tvf

        s = self.policy.tile_size
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != (s, s):
            x = tvf.resize(x, [s, s], interpolation=InterpolationMode.BICUBIC, antialias=True)
        strat = self.policy.single_image
        mean = torch.tensor(strat.image_mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(strat.image_std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        return (x.to(torch.float32) - mean) / std


def _control_ids(tokenizer: Any) -> frozenset[int]:
    """The ids a template may insert and message text may not: the tokenizer's special (added) tokens."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    ids = {int(i) for i, tok in added.items() if getattr(tok, "special", True)}
    return frozenset(ids | {int(i) for i in tokenizer.all_special_ids})


def _clip(spans: Sequence[tuple[int, int]], a: int, b: int) -> list[tuple[int, int]]:
    """``spans`` cut to ``[a, b)`` and made relative to ``a``."""
    return [(max(s, a) - a, min(e, b) - a) for s, e in spans if s < b and e > a]


def _visual_end(ends: Sequence[int | None]) -> int:
    return max((k + 1 for k, end in enumerate(ends) if end is None), default=0)


def _slot_first(m: Message, slot: re.Match, before: str, *, strip: bool = False) -> Message:
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


def _merge(from_parts: list[Any], given: Sequence[Any] | None) -> list[Any]:
    if from_parts and given:
        raise InputError("media were given both inside message parts and as arguments; use one of the two")
    return list(from_parts or given or ())


def _assign(media: Any, tags_per_sample: list[int], kind: str, token: str) -> list[list[Any]]:
    """Split a flat (or per-sample nested) media list over the samples' tags, checking counts."""
    if media is None:
        media = []
    elif not isinstance(media, (list, tuple)) or isinstance(media, anyres.ImageSize):
        media = [media]
    media = list(media)
    # images may be nested per sample (an image is never a list); videos are always a flat list
    nested = (
        kind == "image"
        and bool(media)
        and all(isinstance(m, (list, tuple)) and not isinstance(m, anyres.ImageSize) for m in media)
    )
    if nested:
        if len(media) != len(tags_per_sample):
            raise InputError(f"{len(media)} per-sample {kind} lists for {len(tags_per_sample)} texts")
        for i, (given, n) in enumerate(zip(media, tags_per_sample)):
            if len(given) != n:
                raise InputError(f"sample {i}: {n} {token} tag(s) but {len(given)} {kind}(s)")
        return [list(m) for m in media]
    total = sum(tags_per_sample)
    if total != len(media):
        where = (
            ", ".join(f"sample {i}: {n}" for i, n in enumerate(tags_per_sample))
            if len(tags_per_sample) > 1
            else ""
        )
        raise InputError(
            f"the text has {total} {token} tag(s) but {len(media)} {kind}(s) were given"
            + (f" (tags per sample: {where})" if where else "")
            + (f"; add {token} where each {kind} goes" if total < len(media) else "")
        )
    out, start = [], 0
    for n in tags_per_sample:
        out.append(media[start : start + n])
        start += n
    return out
