"""LoRA adapter directories: write one, and load one onto its base (checked by SHA-256), merged or not.

Layout: ``adapter_config.json`` (a ``peft.LoraConfig``) and ``adapter_model.safetensors`` (the LoRA weights, in
peft's naming) as peft writes them; ``trained_modules.safetensors`` (the weights of the modules trained fully
beside the adapter: the projector, the newline, ``modules_to_save``), ``onevision_adapter.json`` (the base
checkpoint by path and by the SHA-256 of its weight files, the components trained with LoRA, the model config
with the stage's processor policy) and the tokenizer. A directory is an adapter because ``adapter_config.json``
is there (:func:`onevision.checkpoints.detect.detect_format`), whatever its name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onevision.bundle import Bundle, restore_bundle
from onevision.checkpoints.detect import ADAPTER_CONFIG, detect_format
from onevision.checkpoints.io import open_state_dict, weight_files, write_json
from onevision.checkpoints.native import native_config
from onevision.config import OneVisionConfig
from onevision.errors import CheckpointError, ConfigError
from onevision.llm import load_tokenizer

ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINED_WEIGHTS = "trained_modules.safetensors"
MANIFEST = "onevision_adapter.json"


def base_checksum(directory: str | Path) -> str:
    """SHA-256 over the base checkpoint's weight files (names and bytes, in order; shards and index included)."""
    h = hashlib.sha256()
    for path in sorted(weight_files(directory), key=lambda p: p.name):
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def is_adapter(directory: str | Path) -> bool:
    """Whether ``directory`` holds an adapter (its ``adapter_config.json``)."""
    return (Path(directory) / ADAPTER_CONFIG).is_file()


def save_adapter(
    bundle: Bundle,
    directory: str | Path,
    *,
    base: str | Path,
    full_components: Sequence[str],
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write the adapter of a model carrying ``model.lora`` (see :func:`onevision.lora.apply_lora`) into
    ``directory``; ``base`` is the native checkpoint it was trained on, ``full_components`` the components that
    trained fully (their weights are stored whole). ``state_dict``: the model's tensors (e.g. gathered)."""
    import torch
    from safetensors.torch import save_file

    from onevision.lora import lora_state_dict

    model = bundle.model
    state = getattr(model, "lora", None)
    if state is None:
        raise CheckpointError("the model carries no LoRA adapter (onevision.lora.apply_lora)")
    if detect_format(base) != "onevision":
        raise CheckpointError(f"{base}: an adapter's base must be a native onevision checkpoint")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    full = dict(model.state_dict()) if state_dict is None else dict(state_dict)
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    components = model.component_parameters()
    trained = {names[id(p)] for c in full_components for p in components[c]}
    for module_name in (n for names_ in state.saved.values() for n in names_):
        trained |= {f"{module_name}.{n}" for n, _ in model.get_submodule(module_name).named_parameters()}
    lora = lora_state_dict(model, full)

    def contiguous(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to("cpu").contiguous()

    save_file({k: contiguous(v) for k, v in lora.items()}, str(d / ADAPTER_WEIGHTS))
    save_file({k: contiguous(full[k]) for k in sorted(trained)}, str(d / TRAINED_WEIGHTS))
    state.config.save_pretrained(str(d))
    bundle.processor.tokenizer.save_pretrained(str(d))
    base = Path(base).resolve()
    manifest = {
        "format": "onevision-adapter",
        "base": {
            "path": str(base),
            "relative_path": os.path.relpath(base, d.resolve()),
            "sha256": base_checksum(base),
        },
        "lora_components": {c: dataclasses.asdict(s) for c, s in state.components.items()},
        "full_components": list(full_components),
        "trained_modules": sorted(trained),
        "config": native_config(bundle).to_dict(),
    }
    write_json(manifest, d / MANIFEST)
    return d


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; an onevision adapter directory records its base there")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def find_base(directory: str | Path, manifest: dict[str, Any] | None = None) -> Path:
    """The adapter's base checkpoint: its recorded path, else the same path relative to the adapter directory,
    verified by SHA-256 (a mismatch names the manifest and both checksums)."""
    d = Path(directory)
    manifest = manifest or read_manifest(d)
    ref = manifest["base"]
    candidates = [Path(ref["path"]), d / ref["relative_path"]]
    base = next((c for c in candidates if c.is_dir()), None)
    if base is None:
        raise CheckpointError(
            f"{d / MANIFEST}: base checkpoint not found at {ref['path']} (nor {candidates[1]}); put the base "
            "there or edit base.path"
        )
    actual = base_checksum(base)
    if actual != ref["sha256"]:
        raise CheckpointError(
            f"{d / MANIFEST}: base {base} has SHA-256 {actual[:16]}... but the adapter was trained on "
            f"{ref['sha256'][:16]}...; point base.path at the checkpoint the adapter was trained on"
        )
    return base


def load_adapter(
    directory: str | Path,
    *,
    dtype: Any = None,
    device: Any = None,
    attn_implementation: str | None = None,
    merge: bool = False,
    quantization: str | None = None,
    quantization_skip: Sequence[str] = ("vision",),
) -> Bundle:
    """The base model with the adapter applied: its fully-trained modules loaded, then the LoRA layers
    (``merge=True`` folds them into the weights). ``quantization`` quantizes the base before the LoRA layers
    are added (as QLoRA trained it; the fully-trained components stay unquantized)."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    from onevision.lora import ComponentLora, load_lora, merge_lora, set_lora_state_dict

    d = Path(directory)
    manifest = read_manifest(d)
    base = find_base(d, manifest)
    if merge and quantization is not None:
        raise ConfigError("merge=True and quantization cannot be combined; merge first, then load quantized")
    config = OneVisionConfig.from_dict(manifest["config"])
    bundle = restore_bundle(
        config,
        load_tokenizer(str(d)),
        open_state_dict(base),
        str(base),
        dtype=dtype,
        device=device,
        attn_implementation=attn_implementation,
    )
    model = bundle.model
    trained = load_file(str(d / TRAINED_WEIGHTS)) if (d / TRAINED_WEIGHTS).is_file() else {}
    expected = set(manifest["trained_modules"])
    if set(trained) != expected:
        raise CheckpointError(
            f"{d / TRAINED_WEIGHTS}: holds {len(trained)} of the {len(expected)} tensors listed"
        )
    own = dict(model.named_parameters())
    for name, tensor in trained.items():
        own[name].data.copy_(tensor.to(own[name].dtype))
    if quantization is not None:
        from onevision.quantization import quantize_model

        skip = {*quantization_skip, *manifest["full_components"]} - {"newline"}
        quantize_model(model, quantization, skip=skip)
    components = {
        c: ComponentLora(
            **{
                **s,
                "target_modules": _tuple(s["target_modules"]),
                "modules_to_save": tuple(s["modules_to_save"]),
            }
        )
        for c, s in manifest["lora_components"].items()
    }
    load_lora(model, LoraConfig.from_pretrained(str(d)), components)
    set_lora_state_dict(model, load_file(str(d / ADAPTER_WEIGHTS)), str(d / ADAPTER_WEIGHTS))
    if merge:
        merge_lora(model)
    model.eval()
    return bundle


def _tuple(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)
