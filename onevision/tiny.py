"""Tiny, offline, deterministic models for tests, demos and CI (nanoVLM-style).

``tiny_config()`` has the HF-compatible test geometry (SigLIP: 64 px tiles, patch 8, width 32, 2 blocks; Qwen2:
width 64, 2 layers, 4 heads, 2 KV heads; pinpoints 64 x {1..6}^2; ``anyres_max_9``), about 0.16 M parameters.
``tiny_tokenizer()`` is a byte-level BPE trained in-process on a fixed corpus, with the ChatML, Vicuna and
LLaMA-3 special tokens, ``<image>``, ``<video>`` and a pad token. Nothing is downloaded.

    >>> import onevision
    >>> pipe = onevision.tiny_pipeline(seed=0)        # random weights
    >>> pipe.save("tiny-ov")                           # a native checkpoint, loadable with onevision.load
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from onevision.config import LLMConfig, OneVisionConfig, ProcessorConfig, ProjectorConfig, VisionConfig
from onevision.policy import ImagePolicy, VideoPolicy, VisualPolicy

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
    """The tiny test geometry as a :class:`OneVisionConfig` (random weights when built).

    ``vocab_size`` defaults to the size of :func:`tiny_tokenizer`. Pinpoints are ``image_size * {1..6}^2``.
    """
    if vocab_size is None:
        vocab_size = len(tiny_tokenizer())
    vision = VisionConfig(
        backend="transformers",
        arch="siglip",
        feature_layer=-1,
        config={
            "image_size": image_size,
            "patch_size": patch_size,
            "hidden_size": vision_width,
            "intermediate_size": 2 * vision_width,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": 2,
            "vision_use_head": False,
        },
    )
    llm = LLMConfig(
        model_type="qwen2",
        config={
            "vocab_size": vocab_size,
            "hidden_size": llm_width,
            "intermediate_size": 2 * llm_width,
            "num_hidden_layers": llm_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 8192,
            "tie_word_embeddings": False,
        },
    )
    visual = VisualPolicy(
        image=ImagePolicy("anyres_max_9", {"grid_pinpoints": "(1x1),...,(6x6)"}),
        video=VideoPolicy(num_frames=num_frames, newline_position="one_token"),
    )
    processor = ProcessorConfig(visual=visual, template=template)
    return OneVisionConfig(
        vision=vision, projector=ProjectorConfig("mlp2x_gelu"), llm=llm, processor=processor
    )


def tiny_hf_config(tokenizer: Any, *, vision_layers: int = 2, tie_word_embeddings: bool = False) -> Any:
    """The transformers ``LlavaOnevisionConfig`` twin of :func:`tiny_config` (reference §5.6 geometry).

    SigLIP 64 px tiles, patch 8, width 32; Qwen2 width 64, 2 layers, 4 heads, 2 KV heads; pinpoints
    ``64 x {1..6}^2``; the ``<image>`` / ``<video>`` ids of ``tokenizer``. Used for parity tests and benchmarks.
    """
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    vision = SiglipVisionConfig(
        image_size=64,
        patch_size=8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        vision_use_head=False,
    )
    text = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=8192,
        tie_word_embeddings=tie_word_embeddings,
    )
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_grid_pinpoints=[[64 * i, 64 * j] for i in range(1, 7) for j in range(1, 7)],
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        tie_word_embeddings=tie_word_embeddings,
    )


def tiny_pipeline(seed: int = 0, **config_overrides: Any):
    """A :class:`~onevision.pipeline.Pipeline` with random tiny weights (``torch.manual_seed(seed)`` first)."""
    import torch

    from onevision.pipeline import from_config

    torch.manual_seed(seed)
    return from_config(tiny_config(**config_overrides), tokenizer=tiny_tokenizer())
