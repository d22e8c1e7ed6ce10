"""Tiny, offline, deterministic models for tests, demos, benchmarks and CI (nanoVLM-style), from one typed factory.

:class:`TinySpec` is the one description of a tiny geometry; every tiny config is derived from it: the
:class:`~onevision.config.OneVisionConfig` (:meth:`TinySpec.onevision_config`), its transformers
``LlavaOnevisionConfig`` twin (:meth:`TinySpec.hf_config`) and the per-library encoder / LLM keyword arguments
(:meth:`TinySpec.vision_kwargs`, :meth:`TinySpec.timm_kwargs`, :meth:`TinySpec.open_clip_kwargs`,
:meth:`TinySpec.llm_kwargs`). The default spec is the reference test geometry (SigLIP: 64 px tiles, patch 8, width
32, 2 blocks; Qwen2: width 64, 2 layers, 4 heads, 2 KV heads; pinpoints 64 x {1..6}^2; ``anyres_max_9``), about
0.16 M parameters. :func:`tiny_tokenizer` is a byte-level BPE trained in-process on a fixed corpus, with the
ChatML, Vicuna and LLaMA-3 special tokens, ``<image>``, ``<video>`` and a pad token. Nothing is downloaded.

    >>> from onevision.testing import tiny_pipeline
    >>> pipe = tiny_pipeline(seed=0)                   # random weights
    >>> pipe.save("tiny-ov")                           # a native checkpoint, loadable with onevision.load
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onevision.config import LLMConfig, OneVisionConfig, ProcessorConfig, ProjectorConfig, VisionConfig
from onevision.policy import ImagePolicy, VideoPolicy, VisualPolicy

if TYPE_CHECKING:  # pragma: no cover
    from onevision.pipeline import Pipeline

#: Special tokens of the tiny tokenizer (ChatML first, so ids 0..2 are <|endoftext|>, <|im_start|>, <|im_end|>).
TINY_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<s>",
    "</s>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<image>",
    "<video>",
)

_WORDS = [
    "the",
    "a",
    "an",
    "of",
    "in",
    "on",
    "at",
    "to",
    "and",
    "or",
    "is",
    "are",
    "was",
    "were",
    "be",
    "this",
    "that",
    "these",
    "those",
    "it",
    "its",
    "what",
    "which",
    "who",
    "where",
    "when",
    "how",
    "why",
    "describe",
    "explain",
    "show",
    "shown",
    "see",
    "look",
    "image",
    "images",
    "picture",
    "photo",
    "video",
    "clip",
    "frame",
    "frames",
    "scene",
    "person",
    "people",
    "man",
    "woman",
    "child",
    "dog",
    "cat",
    "bird",
    "car",
    "bus",
    "tree",
    "house",
    "street",
    "sky",
    "water",
    "table",
    "chair",
    "room",
    "left",
    "right",
    "top",
    "bottom",
    "middle",
    "red",
    "green",
    "blue",
    "yellow",
    "black",
    "white",
    "large",
    "small",
    "many",
    "one",
    "two",
    "three",
    "four",
    "five",
    "first",
    "second",
    "next",
    "last",
    "color",
    "colour",
    "count",
    "question",
    "answer",
    "assistant",
    "user",
    "system",
    "helpful",
    "you",
    "are",
    "can",
    "do",
    "does",
    "please",
    "tell",
    "me",
    "about",
    "detail",
    "details",
    "there",
    "here",
    "with",
    "without",
    "near",
    "behind",
    "front",
    "between",
    "text",
    "number",
    "chart",
    "table",
    "document",
    "screen",
    "sign",
    "read",
    "write",
    "time",
    "seconds",
    "lasts",
    "uniformly",
    "sampled",
    "located",
    "following",
    "questions",
    "related",
    "sure",
    "yes",
    "no",
    "maybe",
    "because",
    "so",
    "then",
    "also",
]


def _corpus() -> list[str]:
    lines = []
    for i in range(len(_WORDS)):
        window = _WORDS[i : i + 12] + _WORDS[: max(0, i + 12 - len(_WORDS))]
        lines.append(" ".join(window).capitalize() + ".")
        lines.append("What is shown in this " + _WORDS[i] + "? " + " ".join(reversed(window[:6])) + "!")
    lines += [
        "0 1 2 3 4 5 6 7 8 9 10 100 2024 3.14 12:30",
        "Hello, world! How are you today?\n\nFine, thanks.",
        "USER: ASSISTANT: A chat between a curious user and an artificial intelligence assistant.",
    ]
    return lines


def train_tokenizer(
    texts: Sequence[str], vocab_size: int = 512, *, media_tokens: bool = True, model_max_length: int = 8192
) -> Any:
    """Train a byte-level BPE ``PreTrainedTokenizerFast`` on ``texts``, offline and deterministically.

    It has the ChatML, Vicuna and LLaMA-3 special tokens and, unless ``media_tokens=False``, atomic ``<image>`` /
    ``<video>``; EOS is ``<|im_end|>`` and the pad token ``<|endoftext|>``, like Qwen-2 instruct models.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    specials = [t for t in TINY_SPECIAL_TOKENS if media_tokens or t not in ("<image>", "<video>")]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(tuple(texts), vocab_size, tuple(specials))),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in specials if t not in ("<|endoftext|>", "<|im_end|>")],
    )
    tok.model_max_length = model_max_length
    return tok


@functools.lru_cache(maxsize=4)
def _tokenizer_json(texts: tuple[str, ...], vocab_size: int, specials: tuple[str, ...]) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(specials),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 512, *, media_tokens: bool = True) -> Any:
    """The tiny models' tokenizer: :func:`train_tokenizer` on a fixed small English corpus.

    With ``media_tokens=False`` the vocabulary has no ``<image>`` / ``<video>`` (like an original LLaVA-NeXT
    tokenizer).
    """
    return train_tokenizer(_corpus(), vocab_size, media_tokens=media_tokens)


@dataclass(frozen=True)
class TinySpec:
    """One tiny geometry: a ViT-style vision tower, a Qwen2-style LLM and the AnyRes pinpoint grid.

    MLP widths are twice the hidden widths unless ``llm_intermediate`` says otherwise; pinpoints are
    ``image_size * {1..grid}^2`` in (height, width) order.
    """

    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    llm_width: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    llm_kv_heads: int = 2
    llm_intermediate: int | None = None
    max_positions: int = 8192
    tie_word_embeddings: bool = False
    grid: int = 6

    def replace(self, **changes: Any) -> TinySpec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def pinpoints(self) -> list[list[int]]:
        """The AnyRes canvases, ``[height, width]`` pairs."""
        s, n = self.image_size, self.grid
        return [[s * i, s * j] for i in range(1, n + 1) for j in range(1, n + 1)]

    def vision_kwargs(self) -> dict[str, Any]:
        """transformers ``SiglipVisionConfig`` / ``CLIPVisionConfig`` fields."""
        return {
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "hidden_size": self.vision_width,
            "intermediate_size": 2 * self.vision_width,
            "num_hidden_layers": self.vision_layers,
            "num_attention_heads": self.vision_heads,
        }

    def timm_kwargs(self) -> dict[str, Any]:
        """``timm.create_model`` keyword arguments of the same ViT."""
        return {
            "img_size": self.image_size,
            "patch_size": self.patch_size,
            "embed_dim": self.vision_width,
            "depth": self.vision_layers,
            "num_heads": self.vision_heads,
            "mlp_ratio": 2.0,
        }

    def open_clip_kwargs(self, output_dim: int = 16) -> dict[str, Any]:
        """An open_clip ``VisionTransformer`` config of the same ViT."""
        return {
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "width": self.vision_width,
            "layers": self.vision_layers,
            "heads": self.vision_heads,
            "mlp_ratio": 2.0,
            "output_dim": output_dim,
        }

    def llm_kwargs(self, vocab_size: int) -> dict[str, Any]:
        """transformers ``Qwen2Config`` (or ``LlamaConfig``) fields."""
        return {
            "vocab_size": vocab_size,
            "hidden_size": self.llm_width,
            "intermediate_size": self.llm_intermediate or 2 * self.llm_width,
            "num_hidden_layers": self.llm_layers,
            "num_attention_heads": self.llm_heads,
            "num_key_value_heads": self.llm_kv_heads,
            "max_position_embeddings": self.max_positions,
            "tie_word_embeddings": self.tie_word_embeddings,
        }

    def onevision_config(
        self, *, vocab_size: int, num_frames: int = 8, template: str = "qwen_1_5"
    ) -> OneVisionConfig:
        """The geometry as a :class:`OneVisionConfig` (transformers SigLIP + Qwen2, ``mlp2x_gelu``,
        ``anyres_max_9`` single images, ``pad`` multi-image), random weights when built."""
        vision = VisionConfig(
            backend="transformers",
            arch="siglip",
            feature_layer=-1,
            config={**self.vision_kwargs(), "vision_use_head": False},
        )
        visual = VisualPolicy(
            image=ImagePolicy("anyres_max_9", {"grid_pinpoints": f"(1x1),...,({self.grid}x{self.grid})"}),
            video=VideoPolicy(num_frames=num_frames, newline_position="one_token"),
        )
        processor = ProcessorConfig(visual=visual, template=template)
        return OneVisionConfig(
            vision=vision,
            projector=ProjectorConfig("mlp2x_gelu"),
            llm=LLMConfig(model_type="qwen2", config=self.llm_kwargs(vocab_size)),
            processor=processor,
        )

    def hf_config(
        self, *, vocab_size: int, image_token_id: int, video_token_id: int, **overrides: Any
    ) -> Any:
        """The transformers ``LlavaOnevisionConfig`` twin of :meth:`onevision_config` (SigLIP without head,
        Qwen2, the same pinpoints); ``overrides`` are further ``LlavaOnevisionConfig`` fields."""
        from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

        return LlavaOnevisionConfig(
            **{
                "vision_config": SiglipVisionConfig(**self.vision_kwargs(), vision_use_head=False),
                "text_config": Qwen2Config(**self.llm_kwargs(vocab_size)),
                "image_grid_pinpoints": self.pinpoints,
                "image_token_index": image_token_id,
                "video_token_index": video_token_id,
                "tie_word_embeddings": self.tie_word_embeddings,
                **overrides,
            }
        )


#: The reference tiny geometry (the default :class:`TinySpec`).
TINY = TinySpec()


def tiny_config(
    *,
    vocab_size: int | None = None,
    image_size: int = 64,
    patch_size: int = 8,
    vision_width: int = 32,
    vision_layers: int = 2,
    llm_width: int = 64,
    llm_layers: int = 2,
    num_frames: int = 8,
    template: str = "qwen_1_5",
) -> OneVisionConfig:
    """:meth:`TinySpec.onevision_config` of the tiny geometry with these sizes (random weights when built).

    ``vocab_size`` defaults to the size of :func:`tiny_tokenizer`. Pinpoints are ``image_size * {1..6}^2``.
    """
    spec = TINY.replace(
        image_size=image_size,
        patch_size=patch_size,
        vision_width=vision_width,
        vision_layers=vision_layers,
        llm_width=llm_width,
        llm_layers=llm_layers,
    )
    if vocab_size is None:
        vocab_size = len(tiny_tokenizer())
    return spec.onevision_config(vocab_size=vocab_size, num_frames=num_frames, template=template)


def tiny_hf_config(tokenizer: Any, *, vision_layers: int = 2, tie_word_embeddings: bool = False) -> Any:
    """:meth:`TinySpec.hf_config` of the tiny geometry for ``tokenizer`` (its size and ``<image>`` / ``<video>``
    ids). Used for parity tests and benchmarks."""
    spec = TINY.replace(vision_layers=vision_layers, tie_word_embeddings=tie_word_embeddings)
    return spec.hf_config(
        vocab_size=len(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
    )


def tiny_pipeline(seed: int = 0, **config_overrides: Any) -> Pipeline:
    """A :class:`~onevision.pipeline.Pipeline` with random tiny weights (``torch.manual_seed(seed)`` first);
    ``config_overrides`` go to :func:`tiny_config`."""
    import torch

    from onevision.pipeline import from_config

    torch.manual_seed(seed)
    return from_config(tiny_config(**config_overrides), tokenizer=tiny_tokenizer())


def random_hf_checkpoint(
    directory: str | Path,
    hf_config: Any,
    tokenizer: Any = None,
    *,
    dtype: Any = None,
    std: float = 0.02,
    seed: int = 0,
    max_shard_bytes: int = 5 * 2**30,
) -> Path:
    """Write an HF ``llava_onevision`` checkpoint of ``hf_config`` (a ``LlavaOnevisionConfig``) with random
    weights, cheaply: the model is built on the meta device only for its tensor names and shapes, and each
    tensor is drawn straight in ``dtype`` (default bf16): norms 1, biases 0, the rest ``N(0, std)``. A tied LM
    head is not stored. ``tokenizer`` (default :func:`tiny_tokenizer`) is saved alongside."""
    import torch
    from accelerate import init_empty_weights
    from transformers import LlavaOnevisionForConditionalGeneration

    from onevision.checkpoints.io import write_json, write_state_dict

    dtype = torch.bfloat16 if dtype is None else dtype
    with init_empty_weights():
        model = LlavaOnevisionForConditionalGeneration(hf_config)
    tied = bool(getattr(hf_config, "tie_word_embeddings", False))
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        if tied and name.endswith("lm_head.weight"):
            continue
        key = name  # transformers' own module names (one of the layouts it and onevision read)
        if "norm" in name and name.endswith("weight"):
            state[key] = torch.ones(tensor.shape, dtype=dtype)
        elif name.endswith("bias"):
            state[key] = torch.zeros(tensor.shape, dtype=dtype)
        else:
            state[key] = (torch.randn(tensor.shape, generator=gen) * std).to(dtype)
    d = Path(directory)
    write_state_dict(state, d, max_shard_bytes=max_shard_bytes)
    config = hf_config.to_dict()
    config["architectures"] = ["LlavaOnevisionForConditionalGeneration"]
    config["dtype"] = str(dtype).removeprefix("torch.")
    write_json(config, d / "config.json")
    (tokenizer if tokenizer is not None else tiny_tokenizer()).save_pretrained(str(d))
    return d


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def peak_rss_reset() -> int:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs``) and return the current RSS (bytes).

    Measure peaks with :func:`peak_rss` (``VmHWM``), not ``ru_maxrss``: a process started by ``fork`` + ``exec``
    inherits its parent's RSS at the fork into ``ru_maxrss``."""
    import contextlib

    with contextlib.suppress(OSError):  # kernels without clear_refs: VmHWM then counts from the exec
        Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def peak_rss() -> int:
    """This process's peak RSS in bytes since the exec or the last :func:`peak_rss_reset`."""
    return _status_bytes("VmHWM")
