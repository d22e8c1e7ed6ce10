"""The one visual-policy schema (image strategy per modality, video sampling and pooling) and its built form.

:class:`VisualPolicy` is what a training recipe's ``visual:`` section, a model's ``processor.visual`` config, the
processor, the model's packing and every token counter read; there is no second schema to translate from. Its
field names are the LLaVA reference's (``frames_upbound``, ``video_fps``, ``pool_stride``, ``newline_position``).
:class:`ModalityPolicy` is the built form: the ``anyres`` strategies, ``video.FramePooling`` and
``video.Sampling`` objects the policy describes.

This module imports neither torch nor transformers (``anyres`` and ``video`` are torch-free at import).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from onevision.errors import ConfigError, InputError
from onevision.schema import OMIT_AT_DEFAULT

if TYPE_CHECKING:
    import anyres
    import video

ImageModality = Literal["image", "multi_image"]
#: strategy parameters set by the policy itself (``tile_size``/``patch_size``), never inside ``params``
_GEOMETRY = ("tile_size", "patch_size")


@dataclass
class ImagePolicy:
    """An ``anyres`` strategy by registry name plus its parameters (``anyres.get_strategy(strategy, **params)``).

    ``params`` never holds ``tile_size`` / ``patch_size``: those are the policy's (one encoder, one geometry)."""

    strategy: str = "anyres_max_9"
    params: dict[str, Any] = field(default_factory=dict)

    def build(self, tile_size: int, patch_size: int, *, where: str = "visual.image") -> anyres.Strategy:
        """The strategy, on ``tile_size`` / ``patch_size`` tiles."""
        import anyres

        clash = sorted(set(self.params) & set(_GEOMETRY))
        if clash:
            raise ConfigError(
                f"{where}.params sets {clash}; the tile geometry is visual.tile_size / visual.patch_size "
                "(one encoder, one geometry for every modality)"
            )
        try:
            return anyres.get_strategy(
                self.strategy, tile_size=tile_size, patch_size=patch_size, **self.params
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: invalid strategy: {exc}") from None

    @classmethod
    def of(cls, strategy: anyres.Strategy) -> ImagePolicy:
        """The policy that rebuilds ``strategy`` exactly (every parameter written out, geometry excluded)."""
        params = strategy.to_dict()
        name = params.pop("name")
        for key in _GEOMETRY:
            params.pop(key, None)
        return cls(strategy=name, params=params)


@dataclass
class VideoPolicy:
    """Frame sampling (reference §6.1) and the per-frame token layout (§2.8).

    Sampling: about ``video_fps`` frames per second, at most ``frames_upbound`` (0 = no cap; ``force_sample``:
    always exactly ``frames_upbound`` uniform frames), or, when ``num_frames`` is set, exactly ``num_frames``
    uniform frames (the HF processor's rule). ``time_instruction`` adds LLaVA-Video's time instruction to the
    prompt. Pooling: ``pool_mode`` with ``pool_stride`` per frame, newline tokens at ``newline_position``
    (required before a video is processed; a recipe with video data must set it).
    """

    frames_upbound: int = 32
    video_fps: float = 1.0
    force_sample: bool = False
    pool_mode: Literal["bilinear", "average", "max"] = "bilinear"
    pool_stride: int = 2
    newline_position: Literal["one_token", "grid", "frame", "no_token"] | None = None
    num_frames: int | None = field(default=None, metadata=OMIT_AT_DEFAULT)
    time_instruction: bool = field(default=False, metadata=OMIT_AT_DEFAULT)

    def __post_init__(self) -> None:
        if self.num_frames is not None and self.force_sample:
            raise ConfigError(
                "force_sample applies to fps sampling; with num_frames every video already gets exactly "
                "num_frames frames (unset one of the two)"
            )

    def sampling(self, *, num_frames: int | None = None, fps: float | None = None) -> video.Sampling:
        """The ``video.Sampling`` of this policy; ``num_frames`` or ``fps`` override the frame rule for one call."""
        import video

        count = num_frames if num_frames is not None else (None if fps is not None else self.num_frames)
        try:
            if count is not None:
                return video.Sampling(num_frames=count, time_instruction=self.time_instruction)
            return video.Sampling(
                fps=self.video_fps if fps is None else fps,
                max_frames=self.frames_upbound or None,
                force_sample=self.force_sample,
                time_instruction=self.time_instruction,
            )
        except ValueError as exc:
            raise ConfigError(f"visual.video: {exc}") from None

    def pooling(self, tile_size: int, patch_size: int) -> video.FramePooling:
        """The ``video.FramePooling`` of this policy on ``tile_size`` / ``patch_size`` frames."""
        import video

        if self.newline_position is None:
            raise ConfigError(
                "visual.video.newline_position is not set (OneVision: one_token; LLaVA-Video: grid); "
                "there is no silent default"
            )
        try:
            return video.FramePooling(
                tile_size=tile_size,
                patch_size=patch_size,
                mode=self.pool_mode,
                stride=self.pool_stride,
                newline=self.newline_position,
            )
        except ValueError as exc:
            raise ConfigError(f"visual.video: {exc}") from None

    def describe(self) -> str:
        """A short label for token-count breakdowns (``bilinear, stride 2, one_token``)."""
        return f"{self.pool_mode}, stride {self.pool_stride}, {self.newline_position}"


@dataclass
class VisualPolicy:
    """Per-modality visual representation; ``tile_size`` / ``patch_size`` describe the encoder for every modality.

    A sample with one image uses ``image``; each image of a sample with several uses ``multi_image``; videos use
    ``video``. A model's policy is :meth:`resolved` against its encoder, so a saved policy needs no model.
    """

    tile_size: int = 384
    patch_size: int = 14
    image: ImagePolicy = field(default_factory=ImagePolicy)
    multi_image: ImagePolicy = field(default_factory=lambda: ImagePolicy(strategy="pad"))
    video: VideoPolicy = field(default_factory=VideoPolicy)

    def strategy(self, modality: ImageModality = "image") -> anyres.Strategy:
        """The ``anyres`` strategy of ``image`` (one image per sample) or ``multi_image``."""
        if modality not in ("image", "multi_image"):
            raise ConfigError(f"an image modality is 'image' or 'multi_image', got {modality!r}")
        policy = self.image if modality == "image" else self.multi_image
        return policy.build(self.tile_size, self.patch_size, where=f"visual.{modality}")

    def pooling(self) -> video.FramePooling:
        """The ``video.FramePooling`` on this policy's tiles."""
        return self.video.pooling(self.tile_size, self.patch_size)

    def video_tokens(self, num_frames: int) -> int:
        """Visual tokens of a video of ``num_frames`` frames (``video.FramePooling.layout``, the one formula)."""
        return self.pooling().layout(num_frames).num_tokens

    def resolved(self, info: Any) -> VisualPolicy:
        """This policy on the tiles of an encoder (``info``: its ``EncoderInfo``), with every strategy parameter
        written out: normalisation from the encoder unless the policy sets one, ``has_cls=False`` (encoders
        return patch tokens only)."""
        declared = {"image_mean": list(info.image_mean), "image_std": list(info.image_std)}

        def fill(policy: ImagePolicy, modality: str) -> ImagePolicy:
            geometry = dict(tile_size=info.tile_size, patch_size=info.patch_size)
            filled = dataclasses.replace(policy, params={**declared, **policy.params, "has_cls": False})
            return ImagePolicy.of(filled.build(**geometry, where=f"visual.{modality}"))

        return dataclasses.replace(
            self,
            tile_size=int(info.tile_size),
            patch_size=int(info.patch_size),
            image=fill(self.image, "image"),
            multi_image=fill(self.multi_image, "multi_image"),
        )

    def build(self) -> ModalityPolicy:
        """The strategies and video objects this policy describes."""
        return ModalityPolicy(self, self.strategy("image"), self.strategy("multi_image"))


class ModalityPolicy:
    """A built :class:`VisualPolicy`: ``single_image`` / ``multi_image`` strategies, frame pooling and sampling."""

    def __init__(self, spec: VisualPolicy, single_image: anyres.Strategy, multi_image: anyres.Strategy):
        self.spec = spec
        self.single_image = single_image
        self.multi_image = multi_image
        self._owners: dict[Any, anyres.Strategy] = {}

    @classmethod
    def from_config(cls, config: Any) -> ModalityPolicy:
        """The policy of a ``ProcessorConfig`` (its ``visual`` field)."""
        return config.visual.build()

    @property
    def video(self) -> VideoPolicy:
        return self.spec.video

    @property
    def tile_size(self) -> int:
        return self.spec.tile_size

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    def image_strategy(self, images_in_sample: int) -> anyres.Strategy:
        """The strategy for each image of a sample holding ``images_in_sample`` images."""
        return self.single_image if images_in_sample == 1 else self.multi_image

    def strategy_for(self, layout: anyres.Layout) -> anyres.Strategy:
        """The policy strategy that produced ``layout`` (the one whose own ``pack`` must pack its features)."""
        owner = self._owners.get(layout)
        if owner is not None:
            return owner
        for strategy in (self.single_image, self.multi_image):
            if strategy.strategy_name == layout.strategy and strategy.layout(layout.image_size) == layout:
                if len(self._owners) > 4096:
                    self._owners.clear()
                self._owners[layout] = strategy
                return strategy
        names = sorted({self.single_image.strategy_name, self.multi_image.strategy_name})
        raise InputError(
            f"an image layout of strategy {layout.strategy!r} ({layout.image_size}) was not made by this model's "
            f"policy (strategies: {', '.join(names)}); build the inputs with the model's processor"
        )

    def frame_pooling(self) -> video.FramePooling:
        """The ``video.FramePooling`` of this policy (imports :mod:`video`)."""
        return self.spec.pooling()

    @property
    def sampling(self) -> video.Sampling:
        """The policy's own ``video.Sampling`` (no override)."""
        return self.frame_sampling()

    def frame_sampling(self, *, num_frames: int | None = None, fps: float | None = None) -> video.Sampling:
        """The ``video.Sampling`` of this policy, optionally with another frame rule (e.g. ``num_frames=8``)."""
        return self.spec.video.sampling(num_frames=num_frames, fps=fps)


def policy_from_v1(processor: Mapping[str, Any]) -> dict[str, Any]:
    """The ``visual`` mapping of a format-1 processor config (``single_image`` / ``multi_image`` strategy dicts,
    ``video`` pooling and ``sampling`` dicts), for reading checkpoints written before the one schema."""
    single = dict(processor.get("single_image", {"name": "anyres_max_9"}))
    multi = dict(processor.get("multi_image", {"name": "pad"}))
    geometry = {}
    for key in _GEOMETRY:
        values = {spec[key] for spec in (single, multi) if key in spec}
        if len(values) > 1:
            raise ConfigError(f"processor: single_image and multi_image disagree on {key} ({sorted(values)})")
        if values:
            geometry[key] = values.pop()
        for spec in (single, multi):
            spec.pop(key, None)
    pooling = dict(processor.get("video", {"mode": "bilinear", "stride": 2, "newline": "one_token"}))
    sampling = dict(processor.get("sampling", {"num_frames": 32}))
    video_keys = {"mode": "pool_mode", "stride": "pool_stride", "newline": "newline_position"}
    sampling_keys = {
        "num_frames": "num_frames",
        "fps": "video_fps",
        "max_frames": "frames_upbound",
        "force_sample": "force_sample",
        "time_instruction": "time_instruction",
    }
    unknown = sorted(set(pooling) - set(video_keys)) + sorted(set(sampling) - set(sampling_keys))
    if unknown:
        raise ConfigError(
            f"processor (format 1): video/sampling key(s) {unknown} have no place in visual.video"
        )
    video_policy = {video_keys[k]: v for k, v in pooling.items()}
    video_policy.setdefault("newline_position", "one_token")
    video_policy.update({sampling_keys[k]: v for k, v in sampling.items() if v is not None})
    if "frames_upbound" not in video_policy and "video_fps" in video_policy:
        video_policy["frames_upbound"] = 0  # format 1 fps sampling without max_frames: no cap
    return {
        **geometry,
        "image": {"strategy": single.pop("name"), "params": single},
        "multi_image": {"strategy": multi.pop("name"), "params": multi},
        "video": video_policy,
    }


def resolve_processor_config(config: Any, info: Any) -> Any:
    """A ``ProcessorConfig`` whose policy is :meth:`VisualPolicy.resolved` against an encoder's ``info``."""
    return dataclasses.replace(config, visual=config.visual.resolved(info))
