"""Text + images + videos -> model inputs, under one declarative per-modality policy.

The policy (:class:`~onevision.policy.VisualPolicy`, built as :class:`~onevision.policy.ModalityPolicy`) is read
from the model config and used identically by inference, training and token counting:

* a sample with exactly one image: the single-image strategy (``anyres_max_9``);
* a sample with several images: the multi-image strategy for each (``pad``: one tile + one newline);
* a video: frames squash-resized to one tile each, then pooled (``video.FramePooling``).

Images and videos are assigned to the ``<image>`` / ``<video>`` tags in order across the batch (or per sample when
given as nested lists). Placeholder ids are inserted directly, with exact counts from the ``anyres`` / ``video``
layouts; nothing regex-expands thousands of tag strings. The full multimodal length is known before any pixel is
processed, so an over-long prompt fails early with the numbers, and a visual span is never truncated.

The parts live in their own modules: :mod:`onevision.policy` (the policy), :mod:`onevision.conversation`
(rewrites before rendering), :mod:`onevision.tokenization` (placeholder runs), :mod:`onevision.media` (media items),
:mod:`onevision.counting` (token counts) and :mod:`onevision.batch` (padded batches); their public names are
importable from here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from onevision import conversation as rewrites
from onevision.batch import IGNORE_INDEX, BatchInputs, collate
from onevision.config import ProcessorConfig
from onevision.counting import PartCount, TokenCount, count_parts
from onevision.errors import ConfigError, ContextOverflowError, InputError
from onevision.media import Media, assign_media, image_size, merge_media, preprocess_frames, video_frames
from onevision.policy import ModalityPolicy, resolve_processor_config
from onevision.templates import (
    ChatTemplate,
    Message,
    get_template,
    media_tag_pattern,
    media_tags,
    normalize_messages,
)
from onevision.tokenization import PlaceholderEncoder, visual_end

if TYPE_CHECKING:
    import torch

__all__ = [
    "IGNORE_INDEX",
    "BatchInputs",
    "ModalityPolicy",
    "OneVisionProcessor",
    "PartCount",
    "TokenCount",
    "resolve_processor_config",
]


@dataclass
class _Planned:
    """One sample after tokenisation: ids with placeholder spans, per-token segment labels and its media."""

    ids: list[int]
    labels: list[int] | None
    media: list[Media] = field(default_factory=list)
    visual_end: int = 0

    @property
    def visual(self) -> int:
        return sum(m.layout.num_tokens for m in self.media)


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
        self._encoder = PlaceholderEncoder(tokenizer, self._tag_re, self.image_token_id, self.video_token_id)
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
        return collate(samples, pad_token_id=self.pad_token_id, padding_side=padding_side)

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
        images_ = merge_media(part_images, images)
        videos_ = merge_media(part_videos, videos)
        if legacy_video_tag and videos_ and not images_:
            msgs = [rewrites.legacy_video(m, self.image_token, self.video_token) for m in msgs]
        if image_first:
            msgs = [rewrites.image_first(m, self.image_token, self.video_token) for m in msgs]
        return msgs, images_, videos_

    def _slots(self, m: Message) -> list:
        return media_tags(m, self.image_token, self.video_token)

    def _plan_texts(
        self, texts: list[str], images: Any, videos: Any, *, load: bool, num_frames: int | None
    ) -> list[_Planned]:
        tags = [self._tag_re.findall(t) for t in texts]
        per_image = assign_media(images, [t.count(self.image_token) for t in tags], "image", self.image_token)
        per_video = assign_media(videos, [t.count(self.video_token) for t in tags], "video", self.video_token)
        planned = []
        for text, imgs, vids in zip(texts, per_image, per_video):
            media = self._resolve_media(
                self._tag_re.findall(text), imgs, vids, load=load, num_frames=num_frames
            )
            ids, ends = self._encoder.encode(text, media)
            planned.append(_Planned(ids, None, media, visual_end(ends)))
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
        if self.policy.video.time_instruction and videos:
            msgs = rewrites.add_time_instruction(
                msgs, [m for m in media if m.kind == "video"], self.image_token, self.video_token
            )
        segments = self.template.render(msgs, add_generation_prompt)
        text = "".join(s.text for s in segments)
        slots, protected = self._encoder.spans(segments)
        if [text[a:b] for a, b in slots] != found:
            raise InputError(
                f"chat template {self.template.name!r} changed the media tags of the conversation"
            )
        ids, ends = self._encoder.encode(text, media, slots, protected)
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
        return _Planned(ids, labels, media, visual_end(ends))

    def _resolve_media(
        self,
        tags: list[str],
        images: Sequence[Any],
        videos: Sequence[Any],
        *,
        load: bool,
        num_frames: int | None,
    ) -> list[Media]:
        strategy = self.policy.image_strategy(len(images))
        media: list[Media] = []
        it_img, it_vid = iter(images), iter(videos)
        pooling = None
        for tag in tags:
            if tag == self.image_token:
                item = Media("image", next(it_img), strategy=strategy)
                size = image_size(item, load)
                item.layout = strategy.layout(size)
            else:
                item = Media("video", next(it_vid))
                pooling = pooling or self.policy.frame_pooling()
                frames = video_frames(item, load, lambda: self.policy.frame_sampling(num_frames=num_frames))
                item.layout = pooling.layout(frames)
            media.append(item)
        return media

    def _count(self, planned: _Planned) -> TokenCount:
        visual = planned.visual
        return TokenCount(
            len(planned.ids),
            len(planned.ids) - visual,
            visual,
            count_parts(planned.media, self.policy.video.describe()),
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
        strat = self.policy.single_image
        return preprocess_frames(frames, self.policy.tile_size, strat.image_mean, strat.image_std)
