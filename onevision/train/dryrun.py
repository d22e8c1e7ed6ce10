"""``onevision train --dry-run``: the resolved recipe, the trainable-parameter table and the token budget.

A recipe that fails validation never gets here (:func:`~onevision.train.recipe.load_recipe` raises). A recipe the
model builder rejects (unknown preset, tile size not the encoder's, components the model lacks) is reported by
:func:`dry_run_report` as an error, so ``onevision train --dry-run`` exits non-zero; a model that cannot be built
for other reasons (hub weights offline, ``init_from`` not trained yet) is only noted.
"""

from __future__ import annotations

import statistics

from onevision.train.recipe import Recipe, RecipeError

#: Reference image sizes (height, width) for the per-image token budget.
REFERENCE_SIZES = ((384, 384), (768, 1024), (1080, 1920), (2160, 3840))


def token_budget(recipe: Recipe) -> str:
    """Tokens per image / video under the recipe's visual policy, and the batch geometry."""
    from onevision.train.data import video_tokens

    lines = ["token budget:"]
    t = recipe.train
    geometry = f"grad_accum {t.grad_accum} x {recipe.engine.num_processes} process(es)"
    if t.micro_batch_tokens is None:
        batch = recipe.global_batch_size
        geometry = (
            f"micro-batch {t.micro_batch_size} x {geometry} = global batch {batch} samples "
            f"(<= {batch * recipe.data.model_max_length:,} tokens)"
        )
    else:
        geometry = f"micro-batches of <= {t.micro_batch_tokens:,} tokens x {geometry}"
    lines.append(f"  model_max_length {recipe.data.model_max_length:,} tokens per sample; {geometry}")
    lines.append(
        f"  modalities: {', '.join(recipe.data.modalities)}; over-length samples: {recipe.data.over_length}"
    )
    for modality in ("image", "multi_image"):
        if modality not in recipe.data.modalities:
            continue
        s = recipe.image_strategy(modality)
        counts = ", ".join(f"{w}x{h}: {s.num_tokens((h, w)):,}" for h, w in REFERENCE_SIZES)
        lines.append(
            f"  {modality} ({s.strategy_name}, tile {s.tile_size}/patch {s.patch_size}): {counts} (WxH)"
        )
    if "video" in recipe.data.modalities:
        v = recipe.visual.video
        n = v.frames_upbound or 32
        tokens = video_tokens(n, v, recipe.visual.tile_size, recipe.visual.patch_size)
        lines.append(
            f"  video ({v.pool_mode}/{v.pool_stride}, {v.newline_position}): {tokens:,} tokens at {n} frames "
            f"({'at most ' if not v.force_sample else ''}{v.frames_upbound or 'uncapped'} frames at "
            f"{v.video_fps:g} fps)"
        )
    return "\n".join(lines)


def dry_run(recipe: Recipe, *, build: bool = True) -> str:
    """Everything ``onevision train`` would print before training, without training."""
    return dry_run_report(recipe, build=build)[0]


def dry_run_report(recipe: Recipe, *, build: bool = True) -> tuple[str, RecipeError | None]:
    """:func:`dry_run`'s text and the :class:`RecipeError` that building the model raised (``None`` if none)."""
    out = [f"# {recipe.name} ({recipe.source})", recipe.to_yaml().rstrip(), "", token_budget(recipe)]
    if not build:
        return "\n".join(out), None
    from onevision.train.build import build_encoder, build_model, check_init_from

    try:
        check_init_from(recipe)
    except RecipeError as exc:  # the previous stage is not trained yet: the recipe itself may be fine
        out += ["", f"trainable parameters: unavailable ({exc})"]
        return "\n".join(out), None
    try:
        from onevision.lora import lora_parameters
        from onevision.train.lora_stage import no_base_write
        from onevision.train.optim import apply_trainable, build_param_groups, format_table

        with no_base_write():  # a LoRA stage writes its base only when it trains
            model = build_model(recipe)
        params = model.component_parameters()
        rows = apply_trainable(
            params, recipe, all_parameters=list(model.parameters()), lora=lora_parameters(model)
        )
        build_param_groups(model.component_parameters(), recipe)
        out += ["", "trainable parameters:", format_table(rows)]
        encoder = build_encoder(recipe, model)
    except RecipeError as exc:  # the recipe does not fit the model: an error, not a note
        out += ["", f"trainable parameters: invalid recipe ({exc})"]
        return "\n".join(out), exc
    except Exception as exc:  # e.g. hub weights not available offline: still show the recipe and budget
        out += ["", f"trainable parameters: unavailable ({type(exc).__name__}: {exc})"]
        return "\n".join(out), None
    from onevision.train.data import data_parts
    from onevision.train.prepare import prepare_data
    from onevision.train.sampler import GroupedBatchSampler
    from onevision.train.shards import url_fs

    parts = data_parts(recipe.data.path)
    missing = [p for p in parts if not url_fs(p)[0].exists(url_fs(p)[1])]
    if recipe.data.synthetic is None and missing:
        out.append(f"\ndata: {missing[0]} not found (lengths not measured)")
        return "\n".join(out), None
    if recipe.data.synthetic is not None and missing:
        out.append(f"\ndata: synthetic, generated at {recipe.data.path} on the first run")
        return "\n".join(out), None
    dataset, stats = prepare_data(recipe, encoder, is_main=False)
    planned = dataset.planned
    out += ["", f"data: {stats.summary()}"]
    if planned:
        lengths = dataset.lengths
        sampler = GroupedBatchSampler.from_recipe(recipe, lengths, dataset.modalities)
        steps = recipe.train.max_steps or sampler.total_steps(recipe.train.epochs)
        out.append(
            f"  sample length min {min(lengths):,} / median {int(statistics.median(lengths)):,} / max "
            f"{max(lengths):,}; {sampler.steps_per_epoch(0)} steps per epoch, {steps} optimizer steps; "
            f"planned padding {100 * sampler.padding_fraction(0):.1f}%"
        )
    return "\n".join(out), None
