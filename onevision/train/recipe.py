"""Training recipes: typed schemas, YAML loading with ``extends:``, command-line overrides and validation.

A recipe is a YAML file whose keys mirror :class:`Recipe`. A recipe may ``extends:`` another file (a path relative to
itself, or to the shipped recipes directory) and override any field; mappings merge key by key, everything else
(lists included) is replaced. Command-line overrides use dotted keys, ``optim.lr=2e-5``, with YAML values.
OmegaConf interpolation (``${output_root}/stage1``, ``${oc.env:HOME}``) is resolved before validation.

Every key is checked against the dataclasses below: an unknown or misspelt key raises :class:`RecipeError` naming
the recipe file that set it, the dotted key and the closest valid name (``difflib``); a value of the wrong type
names the expected type, and a number out of its range (or not finite) names the range.

YAML is read by PyYAML's safe loader with two more checks (files, ``extends:`` parents and override values alike):
a key repeated in one mapping is an error naming both lines (PyYAML would keep the last one silently), and a
document that would expand to more than :data:`MAX_YAML_NODES` nodes through anchors and aliases (an alias
bomb, "billion laughs") or that refers to itself is refused before anything expands it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from onevision import schema
from onevision.config import AttnImplementation
from onevision.errors import ConfigError, RecipeError
from onevision.loss import LossKind
from onevision.policy import ImagePolicy as ImagePolicy  # re-exported: the recipe's visual schema
from onevision.policy import VideoPolicy as VideoPolicy
from onevision.policy import VisualPolicy
from onevision.train import lora_recipe
from onevision.train.yaml_safe import MAX_YAML_NODES, _parse_yaml, load_yaml  # noqa: F401 (re-exported)

Modality = Literal["image", "multi_image", "video", "text"]
ALL_MODALITIES: tuple[str, ...] = ("image", "multi_image", "video", "text")
COMPONENTS: tuple[str, ...] = ("vision", "projector", "llm", "newline")
_REQUIRED = object()


# ----------------------------------------------------------------------------------------------------------------
# Schemas


@dataclass
class ModelConfig:
    """Which model to build and from what. ``builder`` is a registry key (see :mod:`onevision.train.build`).

    The architecture is typed: ``vision_arch`` is an encoder family (``onevision.list_archs()``: ``siglip``,
    ``clip``), ``llm_type`` a transformers causal-LM family (``onevision.list_llms()``), ``projector`` a projector
    type (``onevision.list_projectors()``). The weights come from ``preset`` (a named model config,
    ``onevision.list_models()``, whose architecture must agree with those fields) or from ``vision_tower`` and
    ``language_model`` (hub ids or local directories). ``attn_implementation`` reaches both transformers models.
    ``options`` is a partial model config (``vision`` / ``projector`` / ``llm`` mappings) merged last.
    """

    builder: Literal["onevision"] = "onevision"
    preset: str | None = None  # a named model config, e.g. "tiny" (random weights, no download)
    vision_tower: str | None = None  # hub id or local directory of the vision encoder
    vision_arch: Literal["siglip", "clip"] | str = field(default="siglip", metadata=schema.OMIT_AT_DEFAULT)
    language_model: str | None = None  # hub id or local directory of the LLM
    llm_type: Literal["qwen2", "llama"] | str = field(default="qwen2", metadata=schema.OMIT_AT_DEFAULT)
    projector: str = "mlp2x_gelu"
    vision_select_layer: int = -2
    template: Literal["plain", "qwen_1_5", "vicuna_v1", "llama_3"] = "qwen_1_5"
    attn_implementation: AttnImplementation | None = "sdpa"
    options: dict[str, Any] = field(default_factory=dict)  # a partial model config: vision / projector / llm
    quantization: lora_recipe.Quantization | None = field(default=None, metadata=schema.OMIT_AT_DEFAULT)
    quantization_skip: list[lora_recipe.QuantizableComponent] = field(
        default_factory=list, metadata=schema.OMIT_AT_DEFAULT
    )


@dataclass
class ComponentConfig:
    """One trainable component: ``frozen``, ``full`` or ``lora`` (:mod:`~onevision.train.lora_recipe`), LR, decay.

    The learning rate is ``lr`` if set, else ``optim.lr * lr_scale``.
    """

    trainable: Literal["frozen", "full", "lora"] = "frozen"
    lora: lora_recipe.LoraSpec = field(default_factory=lora_recipe.LoraSpec, metadata=schema.OMIT_AT_DEFAULT)
    lr: float | None = None
    lr_scale: float = 1.0
    weight_decay: float | None = None  # default: optim.weight_decay


@dataclass
class ComponentsConfig:
    """What each stage trains. ``newline`` is ``image_newline`` (the reference trains it with the LLM, at its LR)."""

    vision: ComponentConfig = field(default_factory=lambda: ComponentConfig(lr_scale=0.2))
    projector: ComponentConfig = field(default_factory=lambda: ComponentConfig(trainable="full"))
    llm: ComponentConfig = field(default_factory=ComponentConfig)
    newline: ComponentConfig = field(default_factory=ComponentConfig)


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule (stepped once per optimizer step, by the trainer)."""

    lr: float = 1e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.03
    warmup_steps: int | None = None  # overrides warmup_ratio when set
    min_lr_ratio: float = 0.0


@dataclass
class TrainConfig:
    """Batch geometry, length of the run, precision."""

    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; None = epochs over the data
    micro_batch_size: int = 1  # per process
    micro_batch_tokens: int | None = None  # per-process token budget instead of micro_batch_size
    grad_accum: int = 1
    precision: Literal["bf16", "fp32"] = "bf16"
    gradient_checkpointing: bool = True
    max_bad_steps: int = 5  # stop after this many consecutive steps with a non-finite loss or gradient norm
    packing: bool = False  # a micro-batch's samples packed into rows, no padding (onevision.train.packing)
    max_tokens_per_row: int | None = None  # packing row budget; None = one row per micro-batch
    loss: LossKind = "hf"  # "chunked": LM head + CE over token chunks, Liger on CUDA (onevision.loss)
    loss_chunk_tokens: int = 4096


@dataclass
class EngineConfig:
    """How the run is distributed. ``deepspeed_config`` is resolved against the recipe file, then ``recipes/``."""

    backend: Literal["single", "ddp", "zero2", "zero3"] = "single"
    num_processes: int = 1
    deepspeed_config: str | None = None  # default: deepspeed/zero2.json or deepspeed/zero3.json
    deepspeed_shm_op: bool = (
        False  # build DeepSpeed's CPU shm all-reduce op (inference only; 30-70 s compile)
    )
    timeout_s: int = 1800  # collective / save timeout
    find_unused_parameters: bool = False  # DDP only: tolerate trainable parameters that get no gradient


@dataclass
class SyntheticData:
    """Generate a small random dataset at ``data.path`` before training (tests, demos, tiny recipes)."""

    num_samples: int = 48
    seed: int = 0
    image_sizes: list[list[int]] = field(default_factory=lambda: [[48, 64], [64, 64], [80, 40], [96, 128]])
    video_frames: int = 12


@dataclass
class DataConfig:
    """Where the data is and how it is selected, measured, grouped and loaded."""

    path: str | list[str] = (
        ""  # LLaVA .json(l), mixture .yaml, shard set (fsspec URL); or a list / {a,b} of them
    )
    image_root: str | None = None
    video_root: str | None = None
    modalities: list[Modality] = field(default_factory=lambda: list(ALL_MODALITIES))
    model_max_length: int = 32768
    over_length: Literal["drop", "cap", "error"] = "drop"  # cap = cut trailing text, never a visual span
    strict: bool = False  # a bad record, JSONL line or media file is fatal instead of a counted, logged skip
    label_mask: Literal["assistant_only", "llava_next"] = "assistant_only"
    group_by: Literal["modality_length", "length", "none"] = "modality_length"
    lookahead: int = 16  # length grouping sorts windows of lookahead global batches
    drop_last: bool = True
    num_workers: int = 2
    synthetic: SyntheticData | None = None
    # Media paths in the records must stay inside their roots: a path that is absolute, or that leaves
    # image_root/video_root through ".." or a symbolic link (both sides resolved, so a symlinked root itself is
    # fine), or that leaves the current directory through ".." when no root is set, is a counted skip ("media path
    # outside data root"; fatal with strict). true trusts the records' paths as they are (the reference's
    # behaviour; needed when roots link out to other storage, e.g. a Hugging Face cache snapshot).
    allow_outside_roots: bool = False


@dataclass
class CheckpointConfig:
    """Resumable checkpoints: atomic, every N optimizer steps, keeping the last K."""

    every_steps: int = 500
    keep_last: int = 2
    resume: str = "auto"  # auto | never | <checkpoint directory>
    allow_recipe_change: bool = False  # resume even if the recipe hash differs


@dataclass
class LoggingConfig:
    every_steps: int = 1
    progress: bool = True
    jsonl: bool = True  # <output_dir>/metrics.jsonl
    tensorboard: bool = False  # needs the tensorboard package


@dataclass
class Recipe:
    """A complete training stage."""

    name: str = ""
    description: str = ""
    stage: str = ""
    seed: int = 42
    output_dir: str = ""
    init_from: str | None = None  # the previous stage's output directory
    model: ModelConfig = field(default_factory=ModelConfig)
    visual: VisualPolicy = field(default_factory=VisualPolicy)
    components: ComponentsConfig = field(default_factory=ComponentsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    #: where the recipe came from (not a YAML key)
    source: str = field(default="", metadata={"internal": True})

    # -- derived --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data (what ``--dry-run`` prints and checkpoints record)."""
        out = dataclasses.asdict(self)
        out.pop("source", None)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)

    def hash(
        self, *, ignore: Sequence[str] = ("checkpoint", "logging", "output_dir", "description", "engine")
    ) -> str:
        """A short hash of the fields that define the training trajectory (resume refuses a mismatch).

        The engine is excluded on purpose: the same recipe may resume under another number of processes. Fields
        added to the schema later are left out while they hold their default (:func:`onevision.schema.fingerprint`),
        so an unchanged recipe keeps its hash.
        """
        d = {k: v for k, v in schema.fingerprint(self).items() if k not in ignore}
        d.get("train", {}).pop("max_steps", None)
        d.get("train", {}).pop("max_bad_steps", None)
        d.get("data", {}).pop("num_workers", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def global_batch_size(self) -> int:
        return self.train.micro_batch_size * self.train.grad_accum * self.engine.num_processes

    def image_strategy(self, modality: str = "image"):
        """The ``anyres`` strategy for ``image`` or ``multi_image`` (:meth:`VisualPolicy.strategy`)."""
        return self.visual.strategy(modality)

    def component(self, name: str) -> ComponentConfig:
        return getattr(self.components, name)

    def component_lr(self, name: str) -> float:
        c = self.component(name)
        return c.lr if c.lr is not None else self.optim.lr * c.lr_scale

    def deepspeed_config_path(self) -> Path | None:
        """The DeepSpeed JSON for ``zero2``/``zero3`` (shipped default if unset); ``None`` for other backends."""
        if self.engine.backend not in ("zero2", "zero3"):
            return None
        name = self.engine.deepspeed_config or f"deepspeed/{self.engine.backend}.json"
        return _resolve_relative(name, self.source, "engine.deepspeed_config")


# ----------------------------------------------------------------------------------------------------------------
# Locating shipped recipes


def recipes_root() -> Path:
    """The shipped recipes: ``onevision/_recipes`` in a wheel, else the repository's ``recipes/``."""
    import onevision

    packaged = Path(onevision.__file__).parent / "_recipes"
    if packaged.is_dir():
        return packaged
    return Path(onevision.__file__).resolve().parent.parent / "recipes"


def list_recipes() -> list[tuple[str, str]]:
    """``(name, description)`` of every shipped recipe, ``name`` being its path under :func:`recipes_root`
    without ``.yaml`` (what ``onevision train NAME`` accepts). Files under ``_base``/``deepspeed`` are skipped."""
    root = recipes_root()
    out = []
    for path in sorted(root.rglob("*.yaml")):
        rel = path.relative_to(root)
        if rel.parts[0] in ("deepspeed", "data") or any(p.startswith("_") for p in rel.parts):
            continue
        try:
            raw = load_yaml(path.read_text(), str(path)) or {}
        except RecipeError:
            raw = {}
        if not isinstance(raw, dict):
            raw = {}
        out.append((rel.with_suffix("").as_posix(), str(raw.get("description", "")).strip()))
    return out


def find_recipe(name: str | os.PathLike) -> Path:
    """A recipe file from a path, or a shipped recipe name (``onevision/qwen2_0.5b/stage1``)."""
    path = Path(name)
    if path.is_file():
        return path
    root = recipes_root()
    for cand in (root / path, root / f"{path}.yaml", root / path.with_suffix(".yaml")):
        if cand.is_file():
            return cand
    names = [n for n, _ in list_recipes()]
    close = difflib.get_close_matches(str(name).removesuffix(".yaml"), names, n=3, cutoff=0.4)
    hint = (
        f"; did you mean {', '.join(close)}?"
        if close
        else "; run `onevision recipes` to list shipped recipes"
    )
    raise FileNotFoundError(f"recipe {str(name)!r} not found (not a file, not under {root}){hint}")


def _resolve_relative(name: str, source: str, key: str) -> Path:
    p = Path(name).expanduser()
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = ([Path(source).parent / p] if source and source != "command line" else []) + [
            recipes_root() / p,
            Path.cwd() / p,
        ]
    for c in candidates:
        if c.is_file():
            return c
    raise RecipeError(
        source or None, key, f"file {name!r} not found (looked in {', '.join(map(str, candidates))})"
    )


# ----------------------------------------------------------------------------------------------------------------
# Loading, merging, overrides


def load_recipe(
    path: str | os.PathLike, overrides: Sequence[str] = (), *, extra: Mapping[str, Any] | None = None
) -> Recipe:
    """Load, compose (``extends:``), override, resolve and validate a recipe.

    ``overrides`` are ``key.sub=value`` strings (YAML values); ``extra`` is a nested mapping merged last (tests).
    """
    file = find_recipe(path)
    data, origins = _load_with_extends(file.resolve(), chain=())
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, origins, key, value, "command line")
    if extra:
        _merge(data, origins, dict(extra), "code", prefix="")
    data = _interpolate(data, str(file))
    recipe = _build(Recipe, data, origins, prefix="")
    recipe.source = str(file)
    validate(recipe, origins)
    return recipe


def parse_override(item: str) -> tuple[str, Any]:
    """``"optim.lr=2e-5"`` -> ``("optim.lr", "2e-5")``; the value is parsed as YAML (lists, null, numbers)."""
    if "=" not in item:
        raise RecipeError("command line", item, "an override must look like key.sub=value")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise RecipeError("command line", item, "an override must look like key.sub=value")
    if not raw.strip():
        return key, ""
    try:
        return key, _parse_yaml(raw, "command line", prefix=f"{key}.")
    except yaml.YAMLError as exc:
        raise RecipeError("command line", key, f"cannot parse value {raw!r} as YAML ({exc})") from None


def _load_with_extends(file: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    if file in chain:
        cycle = " -> ".join(str(p) for p in (*chain, file))
        raise RecipeError(str(file), "extends", f"circular extends: {cycle}")
    raw = load_yaml(file.read_text(), str(file))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(str(file), None, f"a recipe must be a mapping, got {type(raw).__name__}")
    parents = raw.pop("extends", None)
    data: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if parents:
        for parent in [parents] if isinstance(parents, str) else parents:
            parent_file = _resolve_relative(str(parent), str(file), "extends").resolve()
            pdata, porigins = _load_with_extends(parent_file, (*chain, file))
            _merge(data, origins, pdata, None, prefix="", origin_map=porigins)
    _merge(data, origins, raw, str(file), prefix="")
    return data, origins


def _merge(
    dst: dict[str, Any],
    origins: dict[str, str],
    src: Mapping[str, Any],
    source: str | None,
    *,
    prefix: str,
    origin_map: Mapping[str, str] | None = None,
) -> None:
    for key, value in src.items():
        key = str(key)
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(dst.get(key), dict) and not _is_free_form(dotted):
            _merge(dst[key], origins, value, source, prefix=f"{dotted}.", origin_map=origin_map)
            continue
        dst[key] = _copy(value)
        for k in [k for k in origins if k == dotted or k.startswith(f"{dotted}.")]:
            del origins[k]
        if origin_map is not None:
            for k, v in origin_map.items():
                if k == dotted or k.startswith(f"{dotted}."):
                    origins[k] = v
        else:
            origins[dotted] = source or "?"


def _is_free_form(dotted: str) -> bool:
    """Free-form mappings (replaced, not merged, so a child can drop a parent's parameter)."""
    return dotted.endswith(".params") and dotted.startswith("visual.")


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _set_dotted(data: dict[str, Any], origins: dict[str, str], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = _copy(value)
    for k in [k for k in origins if k == key or k.startswith(f"{key}.")]:
        del origins[k]
    origins[key] = source


def _interpolate(data: dict[str, Any], source: str) -> dict[str, Any]:
    text = json.dumps(data)
    if "${" not in text:
        return data
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(OmegaConf.create(data), resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise RecipeError(
            source, getattr(exc, "full_key", None), f"cannot resolve interpolation ({exc})"
        ) from None


# ----------------------------------------------------------------------------------------------------------------
# dict -> dataclass with typed errors


def _origin(origins: Mapping[str, str], key: str) -> str | None:
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        src = origins.get(".".join(parts[:i]))
        if src:
            return src
    return None


def _build(cls: type, data: Any, origins: Mapping[str, str], prefix: str) -> Any:
    """:func:`onevision.schema.from_dict` with errors naming the recipe file that set each key."""

    def error(key: str | None, message: str) -> RecipeError:
        return RecipeError(_origin(origins, key or ""), key, message)

    return schema.from_dict(cls, data, prefix=prefix, error=error)


# ----------------------------------------------------------------------------------------------------------------
# Numeric ranges


@dataclass(frozen=True)
class Range:
    """The values a numeric recipe field accepts. Every number must be finite; ``null`` passes where the type
    allows it. ``low_open``/``high_open`` exclude the bound itself."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    note: str = ""

    def allows(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        low, high = _fmt(self.low), _fmt(self.high)
        if self.low is not None and self.high is not None:
            bounds = f" in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        elif self.low is not None:
            bounds = f" {'>' if self.low_open else '>='} {low}"
        elif self.high is not None:
            bounds = f" {'<' if self.high_open else '<='} {high}"
        else:
            bounds = ""
        return f"{kind}{bounds}{f' ({self.note})' if self.note else ''}"


def _fmt(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


_POSITIVE = Range(0, low_open=True)
_NON_NEGATIVE = Range(0)
_COUNT = Range(1, integer=True)
_SEED = Range(0, 2**32 - 1, integer=True, note="NumPy seeds are 32-bit")

#: every numeric field of the schema (``[]`` stands for each list element); a float field missing here must
#: still be finite. ``tests/train/test_hardening_recipes.py`` checks that no int/float field is left out.
NUMERIC_RANGES: dict[str, Range] = {
    "seed": _SEED,
    "model.vision_select_layer": Range(integer=True, note="a layer index; negative counts from the last"),
    "visual.tile_size": _COUNT,
    "visual.patch_size": _COUNT,
    "visual.video.frames_upbound": Range(0, integer=True, note="0 = no cap"),
    "visual.video.video_fps": _POSITIVE,
    "visual.video.pool_stride": _COUNT,
    "visual.video.num_frames": Range(1, integer=True, note="or null for the fps rule"),
    **{f"components.{n}.lr": _POSITIVE for n in COMPONENTS},
    **{f"components.{n}.lr_scale": _POSITIVE for n in COMPONENTS},
    **{f"components.{n}.weight_decay": _NON_NEGATIVE for n in COMPONENTS},
    **lora_recipe.lora_ranges(COMPONENTS, _COUNT, _POSITIVE, Range(0, 1, high_open=True)),
    "optim.lr": _POSITIVE,
    "optim.weight_decay": _NON_NEGATIVE,
    "optim.betas[]": Range(0, 1, high_open=True),
    "optim.eps": _POSITIVE,
    "optim.max_grad_norm": Range(0, note="0 or null = no clipping"),
    "optim.warmup_ratio": Range(0, 1),
    "optim.warmup_steps": Range(0, integer=True),
    "optim.min_lr_ratio": Range(0, 1),
    "train.epochs": _COUNT,
    "train.max_steps": Range(1, integer=True, note="or null for whole epochs"),
    "train.micro_batch_size": _COUNT,
    "train.micro_batch_tokens": Range(1, integer=True, note="or null to batch by micro_batch_size"),
    "train.grad_accum": _COUNT,
    "train.max_bad_steps": _COUNT,
    "train.max_tokens_per_row": Range(1, integer=True, note="or null for one row per micro-batch"),
    "train.loss_chunk_tokens": _COUNT,
    "engine.num_processes": _COUNT,
    "engine.timeout_s": _COUNT,
    "data.model_max_length": _COUNT,
    "data.lookahead": _COUNT,
    "data.num_workers": Range(0, integer=True),
    "data.synthetic.num_samples": _COUNT,
    "data.synthetic.seed": _SEED,
    "data.synthetic.image_sizes[][]": _COUNT,
    "data.synthetic.video_frames": _COUNT,
    "checkpoint.every_steps": _COUNT,
    "checkpoint.keep_last": _COUNT,
    "logging.every_steps": _COUNT,
}
_FINITE = Range()


def _numbers(obj: Any, path: str = "", pattern: str = "") -> typing.Iterator[tuple[str, Range, float]]:
    """``(dotted key, its range, value)`` for every number in the recipe's dataclasses and their lists
    (free-form mappings such as ``model.options`` are the builder's to check)."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            if not f.metadata.get("internal"):
                sep = "." if path else ""
                yield from _numbers(getattr(obj, f.name), f"{path}{sep}{f.name}", f"{pattern}{sep}{f.name}")
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _numbers(item, f"{path}[{i}]", f"{pattern}[]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, NUMERIC_RANGES.get(pattern, _FINITE), obj


# ----------------------------------------------------------------------------------------------------------------
# Cross-field validation


def validate(recipe: Recipe, origins: Mapping[str, str] | None = None) -> None:
    """Semantic checks that a schema cannot express (raise :class:`RecipeError` naming file and field)."""
    origins = origins or {}

    def err(key: str, msg: str) -> RecipeError:
        source = _origin(origins, re.sub(r"\[\d+\]", "", key)) or recipe.source or None
        return RecipeError(source, key, msg)

    if not recipe.name:
        raise err("name", "every recipe needs a name")
    if not recipe.output_dir:
        raise err("output_dir", "set an output directory (e.g. output_dir=runs/my-stage)")
    if not recipe.data.path and recipe.data.synthetic is None:
        raise err("data.path", "set the training data: a LLaVA .json/.jsonl file or a mixture .yaml")
    if recipe.data.synthetic is not None and not isinstance(recipe.data.path, str):
        raise err("data.path", "data.synthetic generates one mixture .yaml: give one path, not a list")
    for key, rule, value in _numbers(recipe):
        if not rule.allows(value):
            raise err(key, f"must be {rule.describe()}, got {value!r}")
    for mod in ("image", "multi_image"):
        try:
            recipe.visual.strategy(mod)
        except ConfigError as exc:
            raise err(f"visual.{mod}", str(exc).removeprefix(f"visual.{mod}: ")) from None
    v = recipe.visual.video
    if "video" in recipe.data.modalities:
        if v.newline_position is None:
            raise err(
                "visual.video.newline_position",
                "required when data.modalities includes video "
                "(OneVision: one_token; LLaVA-Video: grid); there is no silent default",
            )
        if v.force_sample and v.frames_upbound < 1:
            raise err("visual.video.force_sample", "force_sample needs frames_upbound >= 1")
    if not recipe.data.modalities:
        raise err("data.modalities", "list at least one modality")
    if len(recipe.optim.betas) != 2:
        raise err("optim.betas", f"must be two numbers in [0, 1), got {recipe.optim.betas}")
    trainable = [n for n in COMPONENTS if recipe.component(n).trainable != "frozen"]
    if not trainable:
        raise err(
            "components",
            "nothing is trainable; set components.<name>.trainable: full for at least one of "
            + ", ".join(COMPONENTS),
        )
    e = recipe.engine
    if e.backend == "single" and e.num_processes != 1:
        raise err(
            "engine.num_processes", "backend 'single' runs one process; use ddp, zero2 or zero3 for more"
        )
    if e.backend in ("zero2", "zero3"):
        from onevision.train.deepspeed_config import load_deepspeed_config

        path = recipe.deepspeed_config_path()
        load_deepspeed_config(path, stage=int(e.backend[-1]))
    elif e.deepspeed_config is not None:
        raise err("engine.deepspeed_config", f"only used with backend zero2/zero3 (backend is {e.backend!r})")
    _validate_model(recipe.model, err)
    lora_recipe.validate_lora(recipe, err)
    if recipe.model.builder == "onevision" and not (
        recipe.model.preset or recipe.init_from or (recipe.model.vision_tower and recipe.model.language_model)
    ):
        raise err(
            "model",
            "say where the model comes from: model.preset, init_from, or both model.vision_tower "
            "and model.language_model",
        )


def _validate_model(model: ModelConfig, err: Any) -> None:
    """The model section's registry keys exist and its options are a partial model config."""
    from onevision.archs import list_archs
    from onevision.llm import list_llms

    if model.vision_arch not in list_archs():
        raise err(
            "model.vision_arch", f"unknown encoder family {model.vision_arch!r}; registered: {list_archs()}"
        )
    if model.llm_type not in list_llms():
        raise err("model.llm_type", f"unknown LLM family {model.llm_type!r}; registered: {list_llms()}")
    unknown = sorted(set(model.options) - {"vision", "projector", "llm"})
    if unknown:
        raise err(
            "model.options",
            f"unknown key(s) {unknown}; options is a partial model config (vision, projector, llm)",
        )
