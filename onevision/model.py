"""``OneVisionModel``: vision tower -> projector -> exact token packing -> causal LM.

Visual features replace the placeholder tokens the processor inserted, using the exact counts of the ``anyres``
(images) and ``video`` (frames) layouts that travel with the inputs. Each image is packed by the ``pack`` of the
policy strategy that made its layout and each video by the policy's ``video.FramePooling``, so a new token
structure needs no change here. One batch may mix single-image, multi-image, video and text-only samples: every
tile and frame of the batch goes through the vision tower in one call.

The model owns its native directory (nanoVLM-style): :meth:`OneVisionModel.save_pretrained` writes
``config.json`` + safetensors and :meth:`OneVisionModel.from_pretrained` rebuilds it offline, through the tensor IO
of :mod:`onevision.checkpoints.io` (which sits below this module).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import anyres
from onevision.attention import VARLEN, packable, spans_from_positions, varlen_kwargs
from onevision.checkpoints.detect import detect_format
from onevision.checkpoints.io import as_tensor, open_state_dict, read_config, write_state_dict
from onevision.config import OneVisionConfig
from onevision.encoders import VisionEncoder, build_encoder
from onevision.errors import CheckpointError, ConfigError, InputError, KeyMismatchError
from onevision.llm import build_llm, export_llm_config, set_activation_checkpointing
from onevision.loss import LossConfig, chunked_lm_loss
from onevision.placement import DISK, DiskOffload, execution_device, placed, resolve_device_map
from onevision.policy import ModalityPolicy
from onevision.projectors import build_projector

_LM_HEAD = "language_model.lm_head.weight"
_EMBED = "language_model.model.embed_tokens.weight"


@contextlib.contextmanager
def fast_init() -> Iterator[None]:
    """Skip random initialisation of weights that a checkpoint overwrites anyway."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        yield
        return
    with no_init_weights():
        yield


@contextlib.contextmanager
def empty_init() -> Iterator[None]:
    """Build modules with their parameters on the meta device (no memory, no random init); buffers stay real, so
    the ones a checkpoint does not store (rotary ``inv_freq``, ``position_ids``) are computed as usual."""
    from accelerate import init_empty_weights

    with fast_init(), init_empty_weights(include_buffers=False):
        yield


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding (the rule transformers' ``generate`` uses): ``cumsum - 1``, pads at 0."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


class OneVisionModel(nn.Module):
    """A LLaVA-OneVision-style VLM. Components: ``vision_tower``, ``projector``, ``language_model``,
    ``image_newline``; build with :meth:`from_config` (or :func:`onevision.load` for checkpoints)."""

    def __init__(
        self,
        config: OneVisionConfig,
        *,
        vision_tower: VisionEncoder | None = None,
        language_model: nn.Module | None = None,
    ):
        super().__init__()
        self.vision_tower = vision_tower if vision_tower is not None else build_encoder(config.vision)
        self.language_model = language_model if language_model is not None else build_llm(config.llm)
        hidden = self.language_model.get_input_embeddings().embedding_dim
        self.projector = build_projector(config.projector, self.vision_tower.info.width, hidden)
        self.image_newline = nn.Parameter(torch.randn(hidden) / math.sqrt(hidden))
        self.config = config
        self._policy: tuple[Any, ModalityPolicy] | None = None
        self.loss = LossConfig()  # the trainer sets the recipe's (see onevision.loss)

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: OneVisionConfig) -> OneVisionModel:
        """Build the components the config names (pretrained component weights when ``pretrained`` is set)."""
        return cls(config)

    def export_config(self) -> OneVisionConfig:
        """The config a native directory stores: components rebuildable offline (the vision tower already cut to
        its feature layer, ``pretrained=None``), the model's policy and placeholder ids."""
        return dataclasses.replace(
            self.config,
            vision=self.vision_tower.export_config(),
            llm=export_llm_config(self.language_model, self.config.llm),
        )

    def checkpoint_state_dict(
        self, state_dict: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint stores (the module's own, or ``state_dict``, e.g. gathered from ZeRO-3 shards),
        without duplicates: a tied LM head is stored once, as the input embeddings."""
        state = dict(self.state_dict() if state_dict is None else state_dict)
        if getattr(self.language_model.config, "tie_word_embeddings", False):
            state.pop(_LM_HEAD, None)
        return state

    def load_checkpoint_state(
        self,
        state: dict[str, Any],
        source: str,
        *,
        drop: Iterable[str] = (),
        dtype: Any = None,
        device: Any = None,
        device_map: Any = None,
        max_memory: dict[Any, Any] | None = None,
        offload_folder: str | os.PathLike[str] | None = None,
        quantize: Any = None,
    ) -> None:
        """Load native-named ``state`` (tensors or :class:`~onevision.checkpoints.io.LazyTensor`) strictly:
        :class:`KeyMismatchError` names missing/unexpected weights, :class:`CheckpointError` mismatched shapes.
        Vision blocks past the feature layer and the keys in ``drop`` are ignored; a tied LM head may be absent.

        On a model built with :func:`empty_init` (meta parameters), or when ``dtype`` / ``device`` /
        ``device_map`` is given, each parameter is materialised once, read from the file straight into ``dtype``
        on its device (``device_map``: a dict ``module prefix -> device`` or ``"auto"`` with ``max_memory``, through
        accelerate; modules on ``"disk"`` read their weights at each forward, see :mod:`onevision.placement`). Otherwise the tensors are copied into the existing parameters."""
        state = self._checked_state(state, source, drop)
        tied = bool(getattr(self.language_model.config, "tie_word_embeddings", False))
        meta = any(t.is_meta for t in self.parameters())
        if not meta and dtype is None and device is None and device_map is None and quantize is None:
            self.load_state_dict({k: as_tensor(v) for k, v in state.items()}, strict=False)
        else:
            self._materialize(state, dtype, device, device_map, max_memory, tied, offload_folder, quantize)
        if tied:
            self.language_model.tie_weights()

    def _checked_state(self, state: dict[str, Any], source: str, drop: Iterable[str]) -> dict[str, Any]:
        expected = self.state_dict()
        kept = self.vision_tower.info.num_layers
        dropped = set(drop)
        # vision blocks past the feature layer (cut when the tower was built), in the encoder's declared key layout
        block = re.compile(r"vision_tower\." + self.vision_tower.block_pattern)
        state = {
            k: v
            for k, v in state.items()
            if k not in dropped and not ((m := block.match(k)) and int(m.group(1)) >= kept)
        }
        tied = bool(getattr(self.language_model.config, "tie_word_embeddings", False))
        optional = {_LM_HEAD} if tied else set()
        missing = [k for k in expected if k not in state and k not in optional]
        unexpected = [k for k in state if k not in expected]
        if missing or unexpected:
            raise KeyMismatchError(source, missing, unexpected)
        bad = [
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
            for k in state
            if tuple(state[k].shape) != tuple(expected[k].shape)
        ]
        if bad:
            raise CheckpointError(f"{source}: shape mismatch for {len(bad)} weight(s): " + "; ".join(bad[:8]))
        if tied and _EMBED in state:
            state.pop(_LM_HEAD, None)  # the head is the embedding matrix: read it once
        return state

    def _materialize(
        self, state, dtype, device, device_map, max_memory, tied, offload_folder=None, quantize=None
    ) -> None:
        placement = (
            resolve_device_map(self, device_map, max_memory, dtype) if device_map is not None else None
        )
        run_on = execution_device(placement) if placement is not None else None
        disk = DiskOffload(offload_folder)
        streaming = quantize.start(self, dtype) if quantize is not None else None

        def where(name: str) -> Any:
            if placement is None:
                return torch.device("cpu") if device is None else torch.device(device)
            return placed(placement, name)

        params = {n for n, _ in self.named_parameters(remove_duplicate=False)}
        for key, value in state.items():
            target = where(key)
            if str(target) == DISK and key in params:
                # stays on meta (in its target dtype): accelerate's hook reads it at each forward
                disk.add(key, value, dtype)
                meta_dtype = dtype if dtype is not None and value.is_floating_point() else value.dtype
                _assign(self, key, torch.empty(tuple(value.shape), dtype=meta_dtype, device="meta"))
            else:
                _assign(self, key, as_tensor(value, run_on if str(target) == DISK else target, dtype))
                if streaming is not None:
                    streaming.assigned(key)  # a layer whose tensors are all read is quantized at once
        for name, buffer in list(self.named_buffers()):
            target = where(name)
            target = run_on if str(target) == DISK else target
            if name not in state and buffer.device != target:
                _assign(self, name, buffer.to(target))
        if tied:
            self.language_model.tie_weights()
        left = [
            n
            for n, t in [*self.named_parameters(), *self.named_buffers()]
            if t.is_meta and n not in disk.index and not (tied and n == _LM_HEAD and _EMBED in disk.index)
        ]
        if streaming is not None:
            streaming.finish()
        if left and not (device is not None and torch.device(device).type == "meta"):  # meta: structure only
            raise CheckpointError(f"weights not in the checkpoint stayed unset: {left[:8]}")
        if placement is not None and (disk.index or len({str(d) for d in placement.values()}) > 1):
            disk.dispatch(self, placement)

    def save_pretrained(
        self,
        directory: str | os.PathLike[str],
        *,
        config: OneVisionConfig | None = None,
        state_dict: dict[str, torch.Tensor] | None = None,
        max_shard_bytes: int = 5 * 2**30,
    ) -> Path:
        """Write the model alone as a native directory: ``config.json`` (``config``, default
        :meth:`export_config`) + ``model.safetensors`` (sharded when large); ``config.json`` is written last.
        The tokenizer is not written; :meth:`onevision.pipeline.Pipeline.save` writes both.
        ``state_dict`` replaces the module's own tensors (e.g. a full state gathered from ZeRO-3 shards)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        config = self.export_config() if config is None else config
        write_state_dict(
            self.checkpoint_state_dict(state_dict),
            d,
            max_shard_bytes=max_shard_bytes,
            metadata={"onevision_format_version": "1"},
        )
        config.save(d / "config.json")
        return d

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike[str],
        *,
        dtype: Any = None,
        device: Any = None,
        device_map: Any = None,
        max_memory: dict[Any, Any] | None = None,
        offload_folder: str | os.PathLike[str] | None = None,
    ) -> OneVisionModel:
        """Load a native directory written by :meth:`save_pretrained` (or a whole native checkpoint), offline, in
        eval mode; ``dtype`` defaults to the stored one. No tokenizer is read: the stored LLM config already has
        the final vocabulary size. Use :func:`onevision.load` for HF/original formats."""
        d = Path(directory)
        fmt = detect_format(d)
        if fmt != "onevision":
            raise CheckpointError(
                f"{d}: a {fmt} checkpoint; OneVisionModel.from_pretrained reads native onevision directories "
                "(use onevision.load for the other formats)"
            )
        config = OneVisionConfig.from_dict(read_config(d))
        state = open_state_dict(d)
        if dtype is None:
            dtype = next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32)
        with empty_init():
            model = cls(config)
        model.load_checkpoint_state(
            state,
            str(d),
            dtype=dtype,
            device=device,
            device_map=device_map,
            max_memory=max_memory,
            offload_folder=offload_folder,
        )
        model.eval()
        return model

    @property
    def image_token_id(self) -> int:
        if self.config.image_token_id is None:
            raise ConfigError(
                "config.image_token_id is not set; build the model with its tokenizer/processor"
            )
        return self.config.image_token_id

    @property
    def video_token_id(self) -> int:
        if self.config.video_token_id is None:
            raise ConfigError(
                "config.video_token_id is not set; build the model with its tokenizer/processor"
            )
        return self.config.video_token_id

    @property
    def device(self) -> torch.device:
        return self.image_newline.device

    @property
    def dtype(self) -> torch.dtype:
        return self.image_newline.dtype

    def component_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per component (``vision``, ``projector``, ``llm``, ``newline``) for optimizer groups.

        Encoder weights the feature rule never uses (SigLIP's post-layernorm) are frozen and not listed.
        """
        return {
            "vision": self.vision_tower.feature_parameters(),
            "projector": list(self.projector.parameters()),
            "llm": list(self.language_model.parameters()),
            "newline": [self.image_newline],
        }

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict[str, Any] | None = None
    ) -> None:
        """Activation checkpointing in the LLM and the vision tower (non-reentrant by default)."""
        kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        set_activation_checkpointing(self.language_model, True, kwargs)
        self.vision_tower.set_grad_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        set_activation_checkpointing(self.language_model, False)
        self.vision_tower.set_grad_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    def policy(self) -> ModalityPolicy:
        """The visual policy of ``config.processor``, on this encoder's tiles (rebuilt when the config changes)."""
        processor = self.config.processor
        if self._policy is None or self._policy[0] is not processor:
            self._policy = (processor, processor.visual.resolved(self.vision_tower.info).build())
        return self._policy[1]

    def frame_pooling(self):
        """The ``video.FramePooling`` used to pack video features (from the config policy)."""
        return self.policy().frame_pooling()

    # -- visual features ------------------------------------------------------------------------------------
    def encode_tiles(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encoder features projected to the LLM width: ``[N, 3, S, S] -> [N, P, D]``."""
        return self.projector(self.vision_tower(pixel_values.to(self.dtype)))

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_layouts: Sequence[anyres.Layout] | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_layouts: Sequence[Any] | None = None,
    ) -> torch.Tensor:
        """Token embeddings with every placeholder run replaced by its packed visual features."""
        embeds = self.language_model.get_input_embeddings()(input_ids)
        image_layouts = tuple(image_layouts or ())
        video_layouts = tuple(video_layouts or ())
        _check_pixels(
            "pixel_values", pixel_values, image_layouts, sum(lay.num_tiles for lay in image_layouts)
        )
        _check_pixels(
            "pixel_values_videos",
            pixel_values_videos,
            video_layouts,
            sum(_frames(lay) for lay in video_layouts),
        )
        spans = [
            self._placeholder_positions(input_ids, self.image_token_id, image_layouts, "image"),
            self._placeholder_positions(input_ids, self.video_token_id, video_layouts, "video"),
        ]
        if not image_layouts and not video_layouts:
            if self.training and torch.is_grad_enabled():
                # keep every rank's vision tower in the graph (ZeRO-3 / DDP): a dummy tile, multiplied by 0
                dummy = self.encode_tiles(self.vision_tower.dummy_input())
                embeds = embeds + 0.0 * (dummy.sum() + self.image_newline.sum()).to(embeds.dtype)
            return embeds
        parts = [
            p
            for p in (pixel_values if image_layouts else None, pixel_values_videos if video_layouts else None)
            if p is not None
        ]
        features = self.encode_tiles(parts[0] if len(parts) == 1 else torch.cat(parts))
        n_img_tiles = sum(lay.num_tiles for lay in image_layouts)
        per_image = (
            features[:n_img_tiles].split([lay.num_tiles for lay in image_layouts]) if image_layouts else ()
        )
        per_video = (
            features[n_img_tiles:].split([_frames(lay) for lay in video_layouts]) if video_layouts else ()
        )
        newline = self.image_newline.to(features.dtype)
        direct = not torch.is_grad_enabled()  # inference: pack straight into inputs_embeds (no extra copy)
        if not direct and embeds.is_leaf and embeds.requires_grad:
            # frozen embeddings + transformers' input-require-grads hook (installed by gradient checkpointing):
            # the lookup is a leaf that requires grad, which autograd forbids writing into; splice into a copy
            embeds = embeds.clone()
        for (rows, cols), feats_list, layouts, packer in (
            (spans[0], per_image, image_layouts, self._pack_image),
            (spans[1], per_video, video_layouts, self._pack_video),
        ):
            start = 0
            for feats, layout in zip(feats_list, layouts):
                n = layout.num_tokens
                r, c0, c1 = rows[start], cols[start], cols[start + n - 1]
                contiguous = rows[start + n - 1] == r and c1 - c0 == n - 1  # always so from the processor
                if contiguous and direct and feats.dtype == embeds.dtype:
                    packer(feats, layout, newline, embeds[r, c0 : c1 + 1])
                elif contiguous:
                    embeds[r, c0 : c1 + 1] = packer(feats, layout, newline, None).to(embeds.dtype)
                else:
                    idx = (
                        torch.tensor(rows[start : start + n], device=embeds.device),
                        torch.tensor(cols[start : start + n], device=embeds.device),
                    )
                    embeds = embeds.index_put(idx, packer(feats, layout, newline, None).to(embeds.dtype))
                start += n
        return embeds

    def _pack_image(self, feats, layout, newline, out):
        return self.policy().strategy_for(layout).pack(feats, layout, newline, out=out)

    def _pack_video(self, feats, layout, newline, out):
        packed = self.frame_pooling().pack(feats, layout, newline)
        if out is not None:
            out.copy_(packed)
        return packed

    def _placeholder_positions(self, input_ids: torch.Tensor, token_id: int, layouts: tuple, kind: str):
        is_tok = input_ids == token_id
        expected = sum(lay.num_tokens for lay in layouts)
        found = int(is_tok.sum())
        if found != expected:
            per_sample = is_tok.sum(dim=1).tolist()
            raise InputError(
                f"{kind} placeholders and {kind} features do not match: the input ids hold {found} <{kind}> tokens "
                f"(per sample: {per_sample}) but the {len(layouts)} {kind} layout(s) need {expected}"
            )
        rows, cols = is_tok.nonzero(as_tuple=True)
        return rows.tolist(), cols.tolist()

    # -- forward / generate ---------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_layouts: Sequence[anyres.Layout] | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_layouts: Sequence[Any] | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        packed: bool = False,
        **kwargs: Any,
    ):
        """Logits (and the shifted causal-LM ``loss`` when ``labels`` are given; ``-100`` is ignored).

        Without explicit ``position_ids``, positions are counted from the attention mask, so left-padded rows get
        the same positions as unpadded ones. ``packed`` rows hold several samples whose ``position_ids`` restart at
        0: the LLM then gets no 2D mask and isolates the samples by those restarts (block-diagonal causal masks on
        eager/SDPA, varlen ``cu_seqlens`` on flash-attention). With ``self.loss.kind == "chunked"`` and labels, the
        output has the loss only (no logits).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise InputError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(
                input_ids, pixel_values, image_layouts, pixel_values_videos, video_layouts
            )
        if position_ids is None and attention_mask is not None and _cache_len(past_key_values) == 0:
            position_ids = positions_from_mask(attention_mask)
        if packed:  # transformers isolates restarting positions only without a 2D mask and without a cache
            attention_mask, use_cache = None, False
            implementation = self.language_model.config._attn_implementation
            if not packable(implementation):
                raise InputError(
                    f"packed rows need sdpa, eager or flash-attention LLM attention; {implementation!r} would attend "
                    "across the samples of a row (set the LLM's attn_implementation, or do not pack)"
                )
            # explicit cu_seqlens: transformers infers them from the positions for a single row only
            if implementation in VARLEN:
                rows, width = inputs_embeds.shape[:2]
                spans = kwargs.get("packed_spans") or spans_from_positions(position_ids, rows, width)
                if spans is not None:
                    kwargs.update(varlen_kwargs(spans, width, inputs_embeds.device))
        if labels is not None and self.loss.kind == "chunked":
            from transformers.modeling_outputs import CausalLMOutputWithPast

            hidden = self.language_model.get_decoder()(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
                **kwargs,
            ).last_hidden_state
            head = self.language_model.get_output_embeddings()
            return CausalLMOutputWithPast(loss=chunked_lm_loss(hidden, head, labels, self.loss.chunk_tokens))
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            labels=labels,
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_layouts: Sequence[anyres.Layout] | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_layouts: Sequence[Any] | None = None,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        streamer: Any = None,
        stopping_criteria: Any = None,
        seed: int | None = None,
        labels: Any = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """New tokens ``[B, <= max_new_tokens]`` (KV cache; greedy when ``temperature == 0``, else sampling).

        Batches must be left-padded (the processor's default). ``streamer`` is a transformers streamer (``put``
        / ``end``); ``stopping_criteria`` a transformers ``StoppingCriteriaList`` (it may end single rows: it
        returns one flag per row); other keyword arguments go to transformers' ``GenerationConfig``.
        """
        from transformers import GenerationConfig

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if bool((attention_mask[:, -1] == 0).any()):
            raise InputError("batched generation needs left padding (the last column has padding)")
        embeds = self.embed_inputs(input_ids, pixel_values, image_layouts, pixel_values_videos, video_layouts)
        sample = temperature is not None and temperature > 0
        params: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": sample}
        if sample:
            params.update(
                temperature=temperature,
                top_p=top_p if top_p is not None else 1.0,
                top_k=top_k if top_k is not None else 0,
            )
        if repetition_penalty is not None:
            params["repetition_penalty"] = repetition_penalty
        if eos_token_id is not None:
            params["eos_token_id"] = eos_token_id
        params["pad_token_id"] = (
            pad_token_id
            if pad_token_id is not None
            else (eos_token_id[0] if isinstance(eos_token_id, list) and eos_token_id else eos_token_id)
        )
        params.update(generate_kwargs)
        if seed is not None:
            torch.manual_seed(seed)
        return self.language_model.generate(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            generation_config=GenerationConfig(**params),
            streamer=streamer,
            stopping_criteria=stopping_criteria,
        )


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Put ``tensor`` in place of the parameter or buffer ``name`` (meta or not), keeping ``requires_grad``."""
    owner, _, leaf = name.rpartition(".")
    module = model.get_submodule(owner)
    old = module._parameters.get(leaf)
    if old is not None:
        module._parameters[leaf] = type(old)(tensor, requires_grad=old.requires_grad)
    elif leaf in module._buffers:
        module._buffers[leaf] = tensor
    else:
        raise CheckpointError(f"the model has no parameter or buffer {name!r}")


def _frames(layout: Any) -> int:
    return int(layout.num_frames)


def _cache_len(past_key_values: Any) -> int:
    if past_key_values is None:
        return 0
    get = getattr(past_key_values, "get_seq_length", None)
    return int(get()) if get is not None else 1


def _check_pixels(name: str, pixels: torch.Tensor | None, layouts: tuple, expected_tiles: int) -> None:
    if pixels is None and not layouts:
        return
    if pixels is None or not layouts:
        raise InputError(f"{name} and its layouts must be given together")
    if pixels.shape[0] != expected_tiles:
        raise InputError(f"{name} holds {pixels.shape[0]} tiles but the layouts describe {expected_tiles}")
