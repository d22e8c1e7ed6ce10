"""LLaVA records, mixtures, exact lengths from geometry, the length policy, bad media, labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from onevision.train.build import build_encoder, build_model
from onevision.train.data import (
    Collator,
    DataError,
    MediaError,
    TrainDataset,
    load_media,
    load_samples,
    load_video,
    parse_record,
    plan_samples,
    read_records,
    select,
    video_frame_count,
    video_sampling,
    video_tokens,
)
from onevision.train.recipe import VideoPolicy, load_recipe

from .conftest import data_overrides


def test_parse_both_turn_styles_and_every_modality():
    conv = [{"from": "human", "value": "What? <image>"}, {"from": "gpt", "value": "A cat."}]
    s = parse_record({"id": 1, "image": "a.jpg", "conversations": conv}, source="f#0", image_root="/img")
    assert s.modality == "image" and s.images == ("/img/a.jpg",) and s.turns[0].text == "<image>\nWhat?"
    assert conv[0]["value"] == "What? <image>"  # records are never mutated
    multi = parse_record(
        {
            "image": ["a", "b"],
            "conversations": [
                {"role": "user", "content": "<image> <image> hi"},
                {"role": "assistant", "content": "ok"},
            ],
        },
        source="f#1",
    )
    assert multi.modality == "multi_image" and multi.turns[1].role == "assistant"
    vid = parse_record(
        {
            "video": "v.mp4",
            "conversations": [{"from": "human", "value": "<video>\nwhat"}, {"from": "gpt", "value": "x"}],
        },
        source="f#2",
        video_root="/v",
    )
    assert vid.modality == "video" and vid.video == "/v/v.mp4"
    text = parse_record(
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}, source="f#3"
    )
    assert text.modality == "text" and text.media == ()


@pytest.mark.parametrize(
    "record, match",
    [
        ({"conversations": []}, "non-empty 'conversations'"),
        ({"conversations": [{"from": "robot", "value": "x"}]}, "unknown role 'robot'"),
        ({"conversations": [{"from": "human", "value": "x"}]}, "no assistant turn"),
        (
            {
                "image": ["a", "b"],
                "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}],
            },
            "2 images but 1",
        ),
        (
            {"image": "a", "video": "b", "conversations": [{"from": "gpt", "value": "x"}]},
            "both 'image' and 'video'",
        ),
    ],
)
def test_invalid_records_name_the_source(record, match):
    with pytest.raises(DataError, match=match) as err:
        parse_record(record, source="data.json#7")
    assert "data.json#7" in str(err.value)


def test_mixture_strategies_are_seeded_and_identical_on_every_rank(tmp_path):
    records = [
        {"id": i, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": str(i)}]}
        for i in range(50)
    ]
    (tmp_path / "a.json").write_text(json.dumps(records))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "mix.yaml").write_text(
        "datasets:\n  - json_path: a.json\n    sampling_strategy: first:10%\n"
        "  - json_path: b.jsonl\n    sampling_strategy: end:3\n"
        "  - json_path: a.json\n    sampling_strategy: random:20%\n"
    )
    ids = [[r["id"] for _, r in read_records(tmp_path / "mix.yaml", seed=s)] for s in (1, 1, 2)]
    assert ids[0][:5] == [0, 1, 2, 3, 4] and ids[0][5:8] == [47, 48, 49] and len(ids[0]) == 18
    assert ids[0] == ids[1]  # every rank (every process) selects the same subset
    assert ids[0][8:] != ids[2][8:] and ids[0][:8] == ids[2][:8]  # only random: depends on the seed
    assert select(list(range(7)), "first:50%", seed=0) == [0, 1, 2, 3]  # ceil(50 * 7 / 100)
    with pytest.raises(DataError, match=r"sampling_strategy 'first:1\.5%'"):
        select([1], "first:1.5%", seed=0)
    (tmp_path / "bad.yaml").write_text("datasets:\n  - json_path: a.json\n    sampling_stratgy: all\n")
    with pytest.raises(DataError, match="did you mean 'sampling_strategy'"):
        read_records(tmp_path / "bad.yaml")
    brace = read_records(f"{tmp_path}/{{a.json,b.jsonl}}")
    assert len(brace) == 100


def test_video_token_rule():
    ov = VideoPolicy(newline_position="one_token")
    assert video_tokens(32, ov, 384, 14) == 6273  # user-needs R7
    assert video_tokens(64, VideoPolicy(newline_position="grid"), 384, 14) == 13440
    assert video_tokens(32, VideoPolicy(pool_mode="average", newline_position="one_token"), 384, 14) == 5409


@pytest.fixture(scope="module")
def ov_setup(tiny_data):
    recipe = load_recipe("tiny/stage2_ov", ["init_from=null", *data_overrides(tiny_data)])
    model = build_model(recipe)
    return recipe, build_encoder(recipe, model)


def test_planned_length_equals_encoded_length_for_every_sample(ov_setup):
    recipe, encoder = ov_setup
    samples, stats = load_samples(recipe)
    planned, stats = plan_samples(samples, recipe, encoder, stats, log=False)
    assert stats.kept == len(samples) == 28 and set(stats.by_modality) == {
        "image",
        "multi_image",
        "video",
        "text",
    }
    ds = TrainDataset(planned, recipe, encoder)
    for i, p in enumerate(planned):  # TrainDataset raises if encode() disagrees with the plan
        item = ds[i]
        assert item["input_ids"].shape[0] == p.length
    rotated = next(p for p in planned if p.sample.images and p.sample.images[0].endswith(".jpg"))
    with Image.open(rotated.sample.images[0]) as im:
        stored = im.size  # (w, h) as stored; EXIF says rotate 90 degrees
    upright = recipe.image_strategy().num_tokens((stored[0], stored[1]))  # (height, width) after rotation
    assert rotated.visual_tokens == (upright,) and upright != recipe.image_strategy().num_tokens(stored[::-1])


def test_labels_train_only_assistant_turns(ov_setup):
    recipe, encoder = ov_setup
    samples, _ = load_samples(recipe)
    planned, _ = plan_samples([s for s in samples if s.modality == "text"][:1], recipe, encoder, log=False)
    item = TrainDataset(planned, recipe, encoder)[0]
    trained = encoder.processor.tokenizer.decode(item["labels"][item["labels"] != -100])
    answers = [t.text for t in planned[0].sample.turns if t.role == "assistant"]
    assert all(a in trained for a in answers)
    assert not any(t.text in trained for t in planned[0].sample.turns if t.role == "user")


def test_over_length_drop_cap_error(ov_setup, caplog):
    recipe, encoder = ov_setup
    samples, _ = load_samples(recipe)
    lengths = {p.sample.id: p.length for p in plan_samples(samples, recipe, encoder, log=False)[0]}
    budget = sorted(lengths.values())[len(lengths) // 2]
    base = ["init_from=null", *data_overrides(recipe_path(recipe)), f"data.model_max_length={budget}"]
    _, stats = plan_samples(samples, load_recipe("tiny/stage2_ov", [*base, "data.over_length=drop"]), encoder)
    assert stats.dropped["over length"] == sum(v > budget for v in lengths.values()) > 0
    assert "tokens > model_max_length" in caplog.text
    capped_recipe = load_recipe("tiny/stage2_ov", [*base, "data.over_length=cap"])
    capped, cstats = plan_samples(samples, capped_recipe, encoder, log=False)
    assert cstats.capped > 0 and all(p.length <= budget for p in capped)
    ds = TrainDataset(capped, capped_recipe, encoder)
    for i, p in enumerate(capped):
        if p.truncate_to:
            ids = ds[i]["input_ids"]
            visual = (ids == encoder.processor.image_token_id) | (ids == encoder.processor.video_token_id)
            assert int(visual.sum()) == sum(p.visual_tokens)  # never cut inside a visual span
    with pytest.raises(DataError, match=f"exceed data.model_max_length={budget}"):
        plan_samples(samples, load_recipe("tiny/stage2_ov", [*base, "data.over_length=error"]), encoder)


def recipe_path(recipe):
    from pathlib import Path

    return Path(recipe.data.path)


def test_bad_media_is_skipped_and_counted_unless_strict(ov_setup, tmp_path):
    recipe, encoder = ov_setup
    root = recipe_path(recipe).parent
    (tmp_path / "broken.png").write_bytes(b"not an image")
    good = {
        "id": "ok",
        "image": str(next((root / "images").glob("img*.png"))),
        "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}],
    }
    records = [
        good,
        {**good, "id": "missing", "image": str(tmp_path / "nope.png")},
        {**good, "id": "broken", "image": str(tmp_path / "broken.png")},
        {"id": "invalid"},
    ]
    (tmp_path / "d.json").write_text(json.dumps(records))
    outside = "data.allow_outside_roots=true"  # these records name their media by absolute path
    lenient = load_recipe("tiny/stage2_ov", ["init_from=null", f"data.path={tmp_path / 'd.json'}", outside])
    samples, stats = load_samples(lenient)
    planned, stats = plan_samples(samples, lenient, encoder, stats, log=False)
    assert [p.sample.id for p in planned] == ["ok"]
    assert stats.dropped == {"bad or missing media": 2, "invalid record": 1}
    strict = load_recipe(
        "tiny/stage2_ov", ["init_from=null", f"data.path={tmp_path / 'd.json'}", "data.strict=true", outside]
    )
    with pytest.raises(DataError, match=r"d\.json#3: needs a non-empty"):
        load_samples(strict)
    with pytest.raises(MediaError, match=r"missing.*data\.strict"):
        plan_samples(samples, strict, encoder, log=False)
    # a file that breaks after planning is skipped at load time; an all-failed micro-batch becomes "empty"
    (tmp_path / "later.png").write_bytes(Path(good["image"]).read_bytes())
    item = {**good, "id": "later", "image": str(tmp_path / "later.png")}
    (tmp_path / "e.json").write_text(json.dumps([item]))
    r2 = load_recipe("tiny/stage2_ov", ["init_from=null", f"data.path={tmp_path / 'e.json'}", outside])
    planned2, _ = plan_samples(load_samples(r2)[0], r2, encoder, log=False)
    (tmp_path / "later.png").write_bytes(b"\x89PNG truncated")
    ds = TrainDataset(planned2, r2, encoder)
    assert ds[0] is None and Collator(encoder)([ds[0]]) == {"empty": True, "skipped": 1}


def test_video_policy_is_one_sampling_spec():
    import video

    assert video_sampling(VideoPolicy()) == video.Sampling(fps=1, max_frames=32)  # OneVision: 1 fps, <= 32
    forced = VideoPolicy(frames_upbound=64, video_fps=2, force_sample=True)
    assert video_sampling(forced) == video.Sampling(fps=2, max_frames=64, force_sample=True)
    assert video_sampling(VideoPolicy(frames_upbound=0)) == video.Sampling(fps=1)  # 0 = uncapped


@pytest.mark.parametrize(
    "overrides",
    [
        [],  # tiny: 1 fps, at most 8 frames
        ["visual.video.frames_upbound=4", "visual.video.force_sample=true"],
        ["visual.video.frames_upbound=0", "visual.video.video_fps=3"],
    ],
)
def test_dataset_and_inference_processor_pick_identical_frames(tiny_data, tmp_path, overrides):
    """user-needs R13: for the same video and spec, the training dataset (plan and load) and the inference
    processor of the saved model select the same frame indices, hence the same pixels."""
    import torch

    import video
    from onevision.processor import OneVisionProcessor
    from onevision.train.build import build_encoder, build_model, save_model
    from video.testing import read_counter, write_counter_video

    recipe = load_recipe("tiny/stage2_ov", ["init_from=null", *data_overrides(tiny_data), *overrides])
    model = build_model(recipe)
    encoder = build_encoder(recipe, model)
    save_model(recipe, model, encoder, tmp_path / "model", None)
    inference = OneVisionProcessor.from_pretrained(str(tmp_path / "model"))
    spec = video_sampling(recipe.visual.video)
    assert inference.policy.frame_sampling() == spec == encoder.processor.policy.frame_sampling()
    videos = [
        write_counter_video(tmp_path / "a.mp4", num_frames=75, width=64, height=48, fps=25),  # 3 s
        write_counter_video(tmp_path / "b.mp4", num_frames=130, width=64, height=48, fps=10),  # 13 s
        *sorted((Path(recipe.data.video_root)).glob("*.mp4"))[:1],  # the synthetic dataset's own
    ]
    for path in videos:
        sample = parse_record(
            {
                "video": str(path),
                "conversations": [{"from": "human", "value": "<video>\nq"}, {"from": "gpt", "value": "a"}],
            },
            source="t#0",
            allow_outside_roots=True,  # absolute paths, no video_root
        )
        info = video.probe(path)
        want = spec.indices(info.num_frames, info.fps).tolist()
        clip = load_media(sample, recipe).video
        assert clip.indices.tolist() == want and clip.sampling == spec
        assert video_frame_count(str(path), recipe.visual.video) == len(want)
        if path.name in ("a.mp4", "b.mp4"):  # frame counters burned in: the decoded frames are those indices
            assert [read_counter(f) for f in clip.frames] == want
        by_path = inference(text="<video>", videos=[str(path)])  # inference samples the file itself
        by_clip = inference(text="<video>", videos=[clip])
        assert by_path.video_layouts[0].num_frames == len(want)
        assert torch.equal(by_path.pixel_values_videos, by_clip.pixel_values_videos)
        planned, _ = plan_samples([sample], recipe, encoder, log=False)
        item = TrainDataset(planned, recipe, encoder)[0]
        assert torch.equal(item["pixel_values_videos"], by_path.pixel_values_videos)


def test_video_errors_become_counted_media_errors(ov_setup, tmp_path, monkeypatch):
    import video

    recipe, encoder = ov_setup
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    with pytest.raises(MediaError, match=r"bad\.mp4"):
        video_frame_count(str(bad), recipe.visual.video)
    with pytest.raises(MediaError, match=r"nope\.mp4: file not found"):
        load_video(str(tmp_path / "nope.mp4"), recipe.visual.video)
    conv = [{"from": "human", "value": "<video>\nq"}, {"from": "gpt", "value": "a"}]
    (tmp_path / "d.json").write_text(json.dumps([{"id": "bad", "video": str(bad), "conversations": conv}]))
    outside = "data.allow_outside_roots=true"  # these records name their media by absolute path
    lenient = load_recipe("tiny/stage2_ov", ["init_from=null", f"data.path={tmp_path / 'd.json'}", outside])
    samples, stats = load_samples(lenient)
    planned, stats = plan_samples(samples, lenient, encoder, stats, log=False)
    assert planned == [] and stats.dropped == {"bad or missing media": 1}
    # a video that breaks after planning is skipped at load time (None -> counted by the collator)
    good = next(Path(recipe.data.video_root).glob("*.mp4"))
    later = tmp_path / "later.mp4"
    later.write_bytes(good.read_bytes())
    (tmp_path / "e.json").write_text(
        json.dumps([{"id": "later", "video": str(later), "conversations": conv}])
    )
    r2 = load_recipe("tiny/stage2_ov", ["init_from=null", f"data.path={tmp_path / 'e.json'}", outside])
    planned2, _ = plan_samples(load_samples(r2)[0], r2, encoder, log=False)
    assert len(planned2) == 1
    later.write_bytes(good.read_bytes()[:200])
    assert TrainDataset(planned2, r2, encoder)[0] is None

    # a missing decoder backend is a setup error, not a bad sample
    def unavailable(*args, **kwargs):
        raise video.BackendUnavailableError(later, "no usable video backend is installed")

    monkeypatch.setattr(video, "load", unavailable)
    with pytest.raises(video.BackendUnavailableError):
        TrainDataset(planned2, r2, encoder)[0]


def test_video_decoding_uses_one_thread_inside_dataloader_workers(ov_setup, monkeypatch):
    import torch.utils.data

    import video

    recipe, _ = ov_setup
    seen = []
    real = video.load

    def spy(path, sampling, **kwargs):
        seen.append(kwargs.get("threads"))
        return real(path, sampling, **kwargs)

    monkeypatch.setattr(video, "load", spy)
    path = str(next(Path(recipe.data.video_root).glob("*.mp4")))
    load_video(path, recipe.visual.video)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    load_video(path, recipe.visual.video)
    assert seen == [0, 1]
