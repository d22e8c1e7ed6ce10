"""The processor: policy per modality, exact counts, tag assignment, labels, collation and bad input."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

import anyres
from onevision.errors import ContextOverflowError, InputError
from tests.model.conftest import chatml, random_frames, random_image


def test_count_tokens_matches_the_processed_inputs(pipe, image_a, image_b, frames8):
    p = pipe.processor
    for text, images, videos in [
        (chatml("<image>\nQ"), [image_a], None),
        (chatml("<image>\n<image>\nQ"), [image_a, image_b], None),
        (chatml("<video>\nQ"), None, [frames8]),
        (chatml("Q only"), None, None),
    ]:
        count = p.count_tokens(text, images=images, videos=videos)
        inputs = p(text=text, images=images, videos=videos)
        assert count.total == inputs.input_ids.shape[1]
        assert count.visual == sum(part.tokens for part in count.parts)
        assert count.text == count.total - count.visual
    single = p.count_tokens("<image>", images=[image_a])
    assert single.parts[0].policy == "anyres_max_9"
    assert single.parts[0].breakdown["base"] == 64
    assert sum(single.parts[0].breakdown.values()) == 724
    multi = p.count_tokens("<image><image>", images=[image_a, image_b])
    assert [(x.policy, x.tokens) for x in multi.parts] == [("pad", 65), ("pad", 65)]
    video = p.count_tokens("<video>", videos=[frames8])
    assert video.parts[0].tokens == 129 and video.parts[0].kind == "video"


def test_count_tokens_from_sizes_files_and_conversations(pipe, tmp_path, image_a):
    from video.testing import write_counter_video

    p = pipe.processor
    assert p.count_tokens("<image>", images=[anyres.ImageSize(130, 200)]).visual == 724
    assert p.count_tokens("<video>", videos=[32]).visual == 32 * 16 + 1
    path = tmp_path / "a.png"
    image_a.save(path)
    clip = write_counter_video(tmp_path / "v.mp4", num_frames=20, width=64, height=48)
    by_file = p.count_tokens("<image>\n<video>", images=[str(path)], videos=[str(clip)])
    frames = p.policy.sampling.num_frames  # the policy's sampling (32 for an imported HF checkpoint)
    assert [x.tokens for x in by_file.parts] == [724, frames * 16 + 1]
    assert p.count_tokens("<video>", videos=[str(clip)], num_frames=5).visual == 5 * 16 + 1
    for conv in (
        [{"role": "user", "content": "<image>\nWhat?"}, {"role": "assistant", "content": "A cat."}],
        [{"from": "human", "value": "What is in <image> here?"}, {"from": "gpt", "value": "A cat."}],
    ):
        counted = p.count_tokens(conversation=conv, images=[anyres.ImageSize(130, 200)])
        built = p.build_sample(conv, images=[image_a])
        assert counted.total == built["input_ids"].shape[0]
        assert counted.visual == int((built["input_ids"] == p.image_token_id).sum())


def test_images_are_assigned_in_order_across_the_batch(pipe, image_a, image_b):
    p = pipe.processor
    flat = p(text=[chatml("<image>\nA"), chatml("B <image> and <image>")], images=[image_a, image_b, image_a])
    assert [lay.strategy for lay in flat.image_layouts] == ["anyres_max_9", "pad", "pad"]
    assert [lay.image_size for lay in flat.image_layouts] == [
        anyres.ImageSize(130, 200),
        anyres.ImageSize(90, 60),
        anyres.ImageSize(130, 200),
    ]
    nested = p(
        text=[chatml("<image>\nA"), chatml("B <image> and <image>")], images=[[image_a], [image_b, image_a]]
    )
    assert torch.equal(flat.input_ids, nested.input_ids) and torch.equal(
        flat.pixel_values, nested.pixel_values
    )


def test_placeholders_are_inserted_as_ids(pipe, image_a):
    p = pipe.processor
    inputs = p(text="before<image>after", images=[image_a])
    ids = inputs.input_ids[0].tolist()
    run = [i for i, t in enumerate(ids) if t == p.image_token_id]
    assert len(run) == 724 and run == list(range(run[0], run[0] + 724))
    text_ids = p.tokenizer("before", add_special_tokens=False)["input_ids"]
    assert ids[: len(text_ids)] == text_ids


@pytest.mark.parametrize(
    ("text", "images", "message"),
    [
        ("<image> <image>", 1, "2 <image> tag(s) but 1 image"),
        ("<image>", 2, "1 <image> tag(s) but 2 image"),
        ("no tags", 1, "add <image> where each image goes"),
    ],
)
def test_tag_and_image_counts_must_agree(pipe, image_a, text, images, message):
    with pytest.raises(InputError, match=re.escape(message)):
        pipe.processor(text=text, images=[image_a] * images)


def test_nested_counts_name_the_sample(pipe, image_a):
    with pytest.raises(InputError, match=re.escape("sample 1: 1 <image> tag(s) but 0 image(s)")):
        pipe.processor(text=["<image>", "<image>"], images=[[image_a], []])
    with pytest.raises(InputError, match="1 <video> tag"):
        pipe.processor(text="<video>")


def test_context_overflow_fails_before_any_pixel_work(pipe, image_a, monkeypatch):
    p = pipe.processor
    small = type(p)(p.tokenizer, dataclasses.replace(p.config, max_length=500))

    def boom(*args, **kwargs):
        raise AssertionError("pixels were processed before the length check")

    monkeypatch.setattr(anyres.Strategy, "preprocess_batch", boom)
    with pytest.raises(ContextOverflowError) as err:
        small(text=chatml("<image>\nQ"), images=[image_a])
    total = p.count_tokens(chatml("<image>\nQ"), images=[anyres.ImageSize(130, 200)]).total
    assert err.value.total == total and err.value.budget == 500 and err.value.visual == 724
    assert f"{total} tokens (724 visual" in str(err.value) and "500" in str(err.value)
    with pytest.raises(ContextOverflowError):
        small.build_sample([{"role": "user", "content": "<image>\nQ"}], images=[image_a])


def test_default_budget_is_the_llm_context(pipe):
    assert pipe.processor.max_length == pipe.model.language_model.config.max_position_embeddings == 8192


def _labelled(p, sample):
    ids, labels = sample["input_ids"], sample["labels"]
    return p.tokenizer.decode(ids[labels != -100])


def test_build_sample_trains_only_on_assistant_answers(pipe, image_a):
    p = pipe.processor
    conv = [
        {"from": "human", "value": "What is this <image>?"},
        {"from": "gpt", "value": "A red car."},
        {"from": "human", "value": "Sure?"},
        {"from": "gpt", "value": "Yes."},
    ]
    sample = p.build_sample(conv, images=[image_a])
    assert _labelled(p, sample) == "A red car.<|im_end|>Yes.<|im_end|>"
    ids = sample["input_ids"]
    assert (sample["labels"][ids == p.image_token_id] == -100).all()
    text = p.tokenizer.decode(ids[ids != p.image_token_id])
    assert "<|im_start|>user\n\nWhat is this ?" in text  # the single <image> moved to the front (reference)
    legacy = p.build_sample(conv, images=[image_a], label_mask="llava_next")
    kept = p.tokenizer.convert_ids_to_tokens(legacy["input_ids"][legacy["labels"] != -100].tolist())
    assert (
        kept.count("<|im_start|>") == 5 and kept.count("<|im_end|>") == 5
    )  # unmasked everywhere (reference)
    assert (legacy["labels"] != -100).sum() > (sample["labels"] != -100).sum()


def test_training_and_inference_build_identical_ids(pipe, image_a, frames8):
    p = pipe.processor
    conv = [
        {"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "Both?"}]}
    ]
    sample = p.build_sample(conv, images=[image_a], videos=[frames8], add_generation_prompt=True)
    inputs = p(text=p.apply_chat_template(conv), images=[image_a], videos=[frames8])
    assert torch.equal(sample["input_ids"], inputs.input_ids[0])
    assert torch.equal(sample["pixel_values"], inputs.pixel_values)
    assert torch.equal(sample["pixel_values_videos"], inputs.pixel_values_videos)


def test_legacy_video_tag(pipe, frames8):
    conv = [{"from": "human", "value": "<image>\nWhat happens?"}, {"from": "gpt", "value": "Nothing."}]
    sample = pipe.processor.build_sample(conv, videos=[frames8], legacy_video_tag=True)
    assert int((sample["input_ids"] == pipe.processor.video_token_id).sum()) == 129
    with pytest.raises(InputError, match="1 <image> tag"):
        pipe.processor.build_sample(conv, videos=[frames8])


def test_collate_pads_and_masks_from_lengths(pipe, image_a):
    p = pipe.processor
    pad = p.pad_token_id
    a = p.build_sample([{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Ok"}])
    a["input_ids"][3] = pad  # typed text cannot produce the pad id (it is plain text), so put one in directly
    b = p.build_sample(
        [{"role": "user", "content": "<image>\nQ"}, {"role": "assistant", "content": "A"}], images=[image_a]
    )
    assert (a["input_ids"] == pad).any()  # a real token equal to the pad id
    right = p.collate([a, b])
    la, lb = a["input_ids"].shape[0], b["input_ids"].shape[0]
    assert right.attention_mask.sum(1).tolist() == [la, lb]
    assert right.attention_mask[0, :la].all() and not right.attention_mask[0, la:].any()
    assert (right.labels[0, la:] == -100).all()
    assert right.image_layouts == b["image_layouts"] and right.pixel_values.shape[0] == 13
    left = p.collate([a, b], padding_side="left")
    assert left.attention_mask[0, -la:].all() and not left.attention_mask[0, :-la].any()
    assert torch.equal(left.input_ids[0, -la:], a["input_ids"])


def test_video_inputs_accept_paths_clips_and_tensors(pipe, tmp_path):
    import video
    from video.testing import write_counter_video

    p = pipe.processor
    path = write_counter_video(tmp_path / "c.mp4", num_frames=30, width=96, height=64)
    by_path = p(text="<video>", videos=[str(path)], num_frames=4)
    assert by_path.video_layouts[0].num_frames == 4 and by_path.pixel_values_videos.shape == (4, 3, 64, 64)
    clip = video.load(path, video.Sampling(num_frames=4))
    by_clip = p(text="<video>", videos=[clip])
    by_tensor = p(text="<video>", videos=[torch.from_numpy(clip.frames).permute(0, 3, 1, 2)])
    assert torch.equal(by_path.pixel_values_videos, by_clip.pixel_values_videos)
    assert torch.equal(by_clip.pixel_values_videos, by_tensor.pixel_values_videos)
    with pytest.raises(InputError, match="uint8"):
        p(text="<video>", videos=[clip.frames.astype("float32")])


def test_bad_images_raise_typed_errors(pipe, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(anyres.ImageError, match=r"broken\.jpg"):
        pipe.processor(text="<image>", images=[str(bad)])


def test_many_images_in_one_sample_all_use_pad(pipe):
    images = [random_image(40 + 10 * i, 30 + 7 * i, seed=i) for i in range(4)]
    inputs = pipe.processor(text="<image>" * 4, images=images)
    assert [lay.num_tokens for lay in inputs.image_layouts] == [65] * 4
    assert inputs.pixel_values.shape[0] == 4


def test_frames_given_as_video_are_pooled_not_tiled(pipe):
    frames = random_frames(32, 40, 50, seed=4)
    as_video = pipe.processor.count_tokens("<video>", videos=[frames])
    assert as_video.visual == 32 * 16 + 1


def test_time_instruction_from_the_sampling_spec(pipe, tmp_path, frames8):
    import video
    from video.testing import write_counter_video

    p = pipe.processor
    config = _with_video(p.config, num_frames=4, time_instruction=True)
    timed = type(p)(p.tokenizer, config, max_length=p.max_length)
    path = write_counter_video(tmp_path / "t.mp4", num_frames=30, width=64, height=48, fps=30)
    conv = [
        {"role": "user", "content": "What happens in <video>?"},
        {"role": "assistant", "content": "Nothing."},
    ]
    sample = timed.build_sample(conv, videos=[str(path)])
    ids = sample["input_ids"]
    text = p.tokenizer.decode(ids[ids != p.video_token_id])
    clip = video.load(path, video.Sampling(num_frames=4))
    expected = video.time_instruction(clip)
    assert "frames are located at 0.00s,0.30s,0.63s,0.97s.Please answer" in expected
    # the reference: the tag moved first, then "<tag>\n{instruction}\n" + the rest (hence the double newline)
    assert f"<|im_start|>user\n\n{expected}\n\nWhat happens in ?<|im_end|>" in text
    assert timed.count_tokens(conversation=conv, videos=[str(path)]).total == ids.shape[0]
    with pytest.raises(InputError, match="needs frame times"):
        timed.build_sample(conv, videos=[frames8])


def test_fps_policy_is_the_onevision_frame_rule(pipe, tmp_path):
    """A ``fps=1, max_frames=32`` policy is ``video.Sampling(fps=1, max_frames=32)`` on every path (the processor
    passes ``num_frames=None`` when the caller gives none): 1 frame per second, at most 32 frames."""
    import video
    from onevision.config import ProcessorConfig
    from video.testing import write_counter_video

    p = pipe.processor
    config = _with_video(p.config, num_frames=None, video_fps=1, frames_upbound=32)
    ov = type(p)(p.tokenizer, config, max_length=p.max_length)
    want = video.Sampling(fps=1, max_frames=32)
    assert ov.policy.frame_sampling() == want
    assert ov.policy.frame_sampling(num_frames=None) == want
    assert ov.policy.frame_sampling(num_frames=None, fps=None) == want
    assert ov.policy.frame_sampling(num_frames=4) == video.Sampling(
        num_frames=4
    )  # explicit count replaces it
    assert type(ov.policy).from_config(ProcessorConfig.from_dict(config.__dict__)).frame_sampling() == want
    short = write_counter_video(tmp_path / "short.mp4", num_frames=45, width=64, height=48, fps=15)  # 3 s
    long = write_counter_video(tmp_path / "long.mp4", num_frames=200, width=64, height=48, fps=5)  # 40 s
    for path, frames in ((short, 3), (long, 32)):
        inputs = ov(text="<video>", videos=[str(path)])
        assert inputs.video_layouts[0].num_frames == frames
        assert ov.count_tokens("<video>", videos=[str(path)]).visual == inputs.video_layouts[0].num_tokens
    clip = video.load(long, want)
    assert clip.indices.tolist() == want.indices(200, 5.0).tolist()


def _with_video(config, **video):
    """``config`` with its visual policy's video fields replaced."""
    visual = dataclasses.replace(config.visual, video=dataclasses.replace(config.visual.video, **video))
    return dataclasses.replace(config, visual=visual)
