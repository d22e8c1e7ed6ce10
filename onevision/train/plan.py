"""What a recipe costs before it is launched: tokens per epoch by modality, training FLOPs, time on N GPUs at a
stated MFU, and memory per GPU under ZeRO-2, ZeRO-3 and LoRA (``onevision plan``).

FLOPs (model FLOPs: what MFU counts, gradient-checkpointing recomputation excluded), per epoch:

* LLM, per sample of length ``s``: forward ``2 N s + 2 L d s^2`` (``N``: LLM weights that multiply activations,
  LM head included, embedding lookup not; the second term is causal attention, ``QK^T`` + ``AV``). Backward: twice
  the forward when the LLM trains; when it is frozen its weight gradients are skipped but activation gradients
  still flow to the projector, so ``2 N s`` (not ``4 N s``) plus the attention term's ``4 L d s^2``.
* vision tower, per patch it computes (``P`` per tile): forward ``2 N_v + 4 L_v d_v P`` (full attention); backward
  twice that when it trains, none when frozen (nothing below it trains).
* projector: ``2 N_p`` per visual token forward, twice that backward (it always trains or passes gradients).

Time = FLOPs / (GPUs x peak bf16 dense FLOP/s x MFU). Memory per GPU (bf16 weights and gradients, fp32 Adam:
master copy + two moments = 12 bytes per trainable parameter): ZeRO-2 keeps the weights whole and partitions
gradients and optimizer states over the GPUs; ZeRO-3 partitions all three; LoRA (rank ``r`` on every linear layer
of the LLM, base frozen in bf16, or 4-bit for QLoRA) trains the adapters plus the recipe's other trainable parts.
Activations, with gradient checkpointing: the bf16 input of every LLM layer for the micro-batch's tokens, plus one
layer recomputed (``34 d`` bytes per token, flash attention: no ``s^2`` buffers), plus the logits (fp32 logits and
their gradient for every token with transformers' loss; one chunk with ``train.loss: chunked``). A framework
overhead (CUDA context, allocator, communication buffers) is added as a constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onevision.errors import RecipeError
from onevision.train.plan_data import EpochTokens


@dataclass(frozen=True)
class GPUSpec:
    """One accelerator: its dense bf16 tensor-core peak and its memory."""

    name: str
    bf16_tflops: float
    memory_gib: float


#: accelerators by key (dense bf16 peak, no sparsity, vendor data sheets)
GPUS: dict[str, GPUSpec] = {
    "a100-40g": GPUSpec("NVIDIA A100 40GB SXM", 312.0, 40.0),
    "a100-80g": GPUSpec("NVIDIA A100 80GB SXM", 312.0, 80.0),
    "h100-80g": GPUSpec("NVIDIA H100 80GB SXM", 989.0, 80.0),
    "h200-141g": GPUSpec("NVIDIA H200 141GB SXM", 989.0, 141.0),
    "l40s-48g": GPUSpec("NVIDIA L40S 48GB", 362.0, 48.0),
}
OVERHEAD_GIB = 3.0  # CUDA context, allocator fragmentation, NCCL buffers
GIB = 2**30


@dataclass(frozen=True)
class Stack:
    """A transformer stack's dimensions (LLM or vision tower)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    gated_mlp: bool  # SwiGLU (3 matrices) vs GELU MLP (2)
    vocab: int = 0
    tied: bool = False
    patches: int = 0  # vision: patches per tile (CLS included)

    def layer_params(self) -> int:
        head_dim = self.hidden // self.heads
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head_dim
        return attention + (3 if self.gated_mlp else 2) * self.hidden * self.intermediate

    def linear_params(self) -> int:
        """Weights that multiply activations (the 2N of the forward): layers and the LM head."""
        return self.layers * self.layer_params() + self.vocab * self.hidden

    def params(self) -> int:
        """Stored parameters: layers, embeddings, an untied LM head."""
        return self.layers * self.layer_params() + self.vocab * self.hidden * (1 if self.tied else 2)

    def lora_params(self, rank: int) -> int:
        """LoRA adapters of rank ``rank`` on every linear layer (q, k, v, o and the MLP)."""
        head_dim = self.hidden // self.heads
        kv = self.kv_heads * head_dim
        shapes = [
            (self.hidden, self.hidden),
            (self.hidden, kv),
            (self.hidden, kv),
            (self.hidden, self.hidden),
        ]
        shapes += [(self.hidden, self.intermediate)] * (2 if self.gated_mlp else 1)
        shapes += [(self.intermediate, self.hidden)]
        return self.layers * sum(rank * (a + b) for a, b in shapes)


def _hf_dims(part: str, cfg: Any, source: str) -> dict[str, Any]:
    """The architecture dict of ``model.<part>``: its ``config``, else a locally cached transformers config."""
    dims = dict(cfg.config or {})
    if "hidden_size" not in dims and cfg.pretrained:
        try:
            from transformers import AutoConfig

            hf = AutoConfig.from_pretrained(cfg.pretrained, local_files_only=True)
            dims = getattr(hf, "vision_config", hf).to_dict()
        except (OSError, ValueError):
            dims = {}
    if "hidden_size" not in dims:
        raise RecipeError(
            source,
            f"model.options.{part}.config",
            f"the plan needs the {part} architecture (hidden_size, intermediate_size, num_hidden_layers, ...); "
            "set it there or have the pretrained config cached",
        )
    return dims


def model_stacks(config: Any, source: str) -> tuple[Stack, Stack, int]:
    """The LLM and vision-tower stacks of a ``OneVisionConfig`` and the projector's parameter count."""
    from onevision.archs import get_arch

    llm = _hf_dims("llm", config.llm, source)
    vis = _hf_dims("vision", config.vision, source)
    heads = int(llm["num_attention_heads"])
    lm = Stack(
        hidden=int(llm["hidden_size"]),
        intermediate=int(llm["intermediate_size"]),
        layers=int(llm["num_hidden_layers"]),
        heads=heads,
        kv_heads=int(llm.get("num_key_value_heads") or heads),
        gated_mlp=True,
        vocab=int(llm["vocab_size"]),
        tied=bool(llm.get("tie_word_embeddings", False)),
    )
    arch = get_arch(config.vision.arch)
    layers = int(vis["num_hidden_layers"])
    feature = config.vision.feature_layer if config.vision.feature_layer is not None else arch.feature_layer
    used = layers + 1 + feature if feature < 0 else feature  # blocks after the feature layer are cut
    side = int(vis["image_size"]) // int(vis["patch_size"])
    vheads = int(vis.get("num_attention_heads") or 16)
    tower = Stack(
        hidden=int(vis["hidden_size"]),
        intermediate=int(vis["intermediate_size"]),
        layers=used,
        heads=vheads,
        kv_heads=vheads,
        gated_mlp=False,
        patches=side * side + (1 if arch.has_cls else 0),
    )
    projector = tower.hidden * lm.hidden + lm.hidden * lm.hidden  # mlp2x_gelu; linear is the first term only
    if config.projector.type == "linear":
        projector = tower.hidden * lm.hidden
    return lm, tower, projector


@dataclass(frozen=True)
class Flops:
    """Training FLOPs of one epoch, by part."""

    llm: float
    vision: float
    projector: float

    @property
    def total(self) -> float:
        return self.llm + self.vision + self.projector


def epoch_flops(
    tokens: EpochTokens, lm: Stack, tower: Stack, projector: int, trains: dict[str, bool]
) -> Flops:
    """The formulas of the module docstring over one epoch."""
    n_tok = tokens.total("text_tokens") + tokens.total("visual_tokens")
    attn = 2.0 * lm.layers * lm.hidden * tokens.total("squared_lengths")
    linear = 2.0 * lm.linear_params() * n_tok
    llm = linear * (3 if trains["llm"] else 2) + attn * 3
    patches = tokens.total("vision_patches")
    tiles = patches / max(tower.patches, 1)
    v_fwd = 2.0 * tower.layer_params() * tower.layers * patches
    v_fwd += 4.0 * tower.layers * tower.hidden * tower.patches**2 * tiles
    vision = v_fwd * (3 if trains["vision"] else 1)
    proj = 6.0 * projector * tokens.total("visual_tokens")
    return Flops(llm, vision, proj)


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU, by kind, for one setup."""

    setup: str
    weights: float
    gradients: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + OVERHEAD_GIB * GIB


def memory_per_gpu(
    lm: Stack,
    tower: Stack,
    projector: int,
    trains: dict[str, bool],
    *,
    gpus: int,
    row_tokens: int,
    chunk_tokens: int | None,
    lora_rank: int,
) -> list[Memory]:
    """ZeRO-2, ZeRO-3, LoRA and QLoRA memory per GPU for micro-batches of ``row_tokens`` tokens."""
    vision = tower.layers * tower.layer_params()
    total = lm.params() + vision + projector
    others = (vision if trains["vision"] else 0) + projector  # projector and newline always train
    trainable = others + (lm.params() if trains["llm"] else 0)
    logits = (chunk_tokens or row_tokens) * lm.vocab * (4 + 4 if chunk_tokens else 2 + 4 + 4)
    acts = 2.0 * row_tokens * lm.hidden * lm.layers + 34.0 * row_tokens * lm.hidden + logits
    if trains["vision"]:
        acts += (
            2.0 * tower.hidden * tower.layers * row_tokens
        )  # checkpointed tower inputs, about one per token
    lora = lm.lora_params(lora_rank) + others
    return [
        Memory("ZeRO-2", 2.0 * total, 2.0 * trainable / gpus, 12.0 * trainable / gpus, acts),
        Memory("ZeRO-3", 2.0 * total / gpus, 2.0 * trainable / gpus, 12.0 * trainable / gpus, acts),
        Memory(f"LoRA r={lora_rank} (ZeRO-2)", 2.0 * total, 2.0 * lora / gpus, 12.0 * lora / gpus, acts),
        Memory(
            f"QLoRA r={lora_rank} (4-bit LLM)",
            0.5 * lm.params() + 2.0 * (vision + projector),
            2.0 * lora / gpus,
            12.0 * lora / gpus,
            acts,
        ),
    ]


@dataclass(frozen=True)
class Plan:
    """Everything ``onevision plan`` prints."""

    recipe: str
    tokens: EpochTokens
    epochs: int
    flops: Flops
    gpu: GPUSpec
    gpus: int
    mfu: float
    memory: list[Memory]
    params: dict[str, int]
    trains: dict[str, bool]
    row_tokens: int  # the most tokens one micro-batch holds (its activations)

    @property
    def seconds(self) -> float:
        return self.flops.total * self.epochs / (self.gpus * self.gpu.bf16_tflops * 1e12 * self.mfu)


def plan_recipe(
    recipe: Any,
    *,
    gpus: int = 8,
    gpu: str = "a100-80g",
    mfu: float = 0.4,
    profile: str | None = None,
    sample: int = 2000,
    lora_rank: int = 128,
) -> Plan:
    """Plan ``recipe`` (see the module docstring for every formula)."""
    from onevision.train.model_config import recipe_model_config
    from onevision.train.plan_data import epoch_tokens

    if gpu not in GPUS:
        raise RecipeError(None, "--gpu", f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    if not 0 < mfu <= 1:
        raise RecipeError(None, "--mfu", f"must be in (0, 1], got {mfu}")
    if gpus < 1:
        raise RecipeError(None, "--gpus", f"must be >= 1, got {gpus}")
    config = recipe_model_config(recipe)
    lm, tower, projector = model_stacks(config, recipe.source)
    trains = {name: getattr(recipe.components, name).trainable != "frozen" for name in ("vision", "llm")}
    tokens = epoch_tokens(recipe, profile=profile, sample=sample)
    budget = recipe.train.micro_batch_tokens  # a sample longer than the budget runs alone
    row = max(budget, tokens.max_length) if budget else recipe.train.micro_batch_size * tokens.max_length
    chunk = recipe.train.loss_chunk_tokens if recipe.train.loss == "chunked" else None
    memory = memory_per_gpu(
        lm, tower, projector, trains, gpus=gpus, row_tokens=row, chunk_tokens=chunk, lora_rank=lora_rank
    )
    params = {
        "llm": lm.params(),
        "vision": tower.layers * tower.layer_params(),
        "projector": projector,
    }
    flops = epoch_flops(tokens, lm, tower, projector, trains)
    return Plan(
        recipe.name, tokens, recipe.train.epochs, flops, GPUS[gpu], gpus, mfu, memory, params, trains, row
    )


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"


def format_plan(plan: Plan) -> str:
    """The plan as the text ``onevision plan`` prints."""
    t = plan.tokens
    lines = [f"{plan.recipe}: {plan.epochs} epoch(s); tokens from the {t.source}", ""]
    lines.append(
        f"{'modality':12}{'samples':>12}{'text tok':>16}{'visual tok':>16}{'total tok':>16}{'max len':>9}"
    )
    for name, m in t.by_modality.items():
        lines.append(
            f"{name:12}{m.samples:12,}{m.text_tokens:16,}{m.visual_tokens:16,}{m.tokens:16,}{m.max_length:9,}"
        )
    lines.append(
        f"{'all':12}{t.total('samples'):12,}{t.total('text_tokens'):16,}{t.total('visual_tokens'):16,}"
        f"{t.total('text_tokens') + t.total('visual_tokens'):16,}{t.max_length:9,}"
    )
    p, tr = plan.params, plan.trains
    lines += [
        "",
        f"parameters: LLM {_count(p['llm'])} ({'trains' if tr['llm'] else 'frozen'}), vision tower "
        f"{_count(p['vision'])} ({'trains' if tr['vision'] else 'frozen'}), projector {_count(p['projector'])}",
        f"FLOPs per epoch (forward + backward, model FLOPs): LLM {plan.flops.llm:.3g}, vision {plan.flops.vision:.3g},"
        f" projector {plan.flops.projector:.3g}, total {plan.flops.total:.3g}",
        f"time on {plan.gpus} x {plan.gpu.name} ({plan.gpu.bf16_tflops:g} TFLOP/s bf16 dense) at {plan.mfu:.0%} MFU: "
        f"{plan.seconds / 3600:.1f} h for {plan.epochs} epoch(s)",
        "",
        f"memory per GPU ({plan.gpu.memory_gib:g} GiB), GiB:",
        f"{'setup':28}{'weights':>9}{'grads':>8}{'optim':>8}{'activ.':>8}{'total':>8}  fits",
    ]
    for m in plan.memory:
        g = [v / GIB for v in (m.weights, m.gradients, m.optimizer, m.activations, m.total)]
        fits = "yes" if m.total / GIB <= plan.gpu.memory_gib else "no"
        lines.append(f"{m.setup:28}{g[0]:9.1f}{g[1]:8.1f}{g[2]:8.1f}{g[3]:8.1f}{g[4]:8.1f}  {fits}")
    lines.append(
        f"(activations: micro-batches of up to {plan.row_tokens:,} tokens, gradient checkpointing; "
        f"+{OVERHEAD_GIB:g} GiB framework overhead in the total)"
    )
    return "\n".join(lines)
