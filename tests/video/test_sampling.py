"""Sampling specs: index maths against the reference formulas, serialisation, and the time instruction."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import video
from video.sampling import fps_indices, snap_to_keyframes, uniform_indices


def reference_decord_indices(total, avg_fps, video_fps, frames_upbound, force_sample):
    """Transcription of LLaVA-NeXT `process_video_with_decord` frame selection (with the step >= 1 fix)."""
    step = max(1, round(avg_fps / video_fps))
    frame_idx = list(range(0, total, step))
    if frames_upbound > 0 and (len(frame_idx) > frames_upbound or force_sample):
        frame_idx = np.linspace(0, total - 1, frames_upbound, dtype=int).tolist()
    return frame_idx


@settings(max_examples=300, deadline=None)
@given(total=st.integers(1, 20_000), num=st.integers(1, 300))
def test_linspace_rule_is_the_reference_formula(total: int, num: int) -> None:
    got = video.Sampling(num_frames=num).indices(total, 30.0)
    np.testing.assert_array_equal(got, np.linspace(0, total - 1, num, dtype=int))
    assert got.dtype == np.int64 and len(got) == num
    assert got[0] == 0 and got[-1] == (total - 1 if num > 1 else 0)
    assert np.all(np.diff(got) >= 0)
    if num <= total:
        assert len(np.unique(got)) == num  # no repeats while there are enough frames


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 20_000), num=st.integers(1, 300))
def test_arange_rule_is_the_hf_processor_formula(total: int, num: int) -> None:
    got = video.Sampling(num_frames=num, uniform="arange").indices(total, 30.0)
    np.testing.assert_array_equal(got, np.arange(num) * total // num)
    assert got.max() < total


@settings(max_examples=300, deadline=None)
@given(
    total=st.integers(1, 50_000),
    avg_fps=st.floats(1.0, 240.0),
    fps=st.sampled_from([0.5, 1.0, 2.0, 3.0, 5.0]),
    cap=st.one_of(st.none(), st.integers(1, 128)),
    force=st.booleans(),
)
def test_fps_rule_is_the_reference_formula(total, avg_fps, fps, cap, force) -> None:
    if cap is None:
        force = False
    spec = video.Sampling(fps=fps, max_frames=cap, force_sample=force)
    expected = reference_decord_indices(total, avg_fps, fps, cap or 0, force)
    got = spec.indices(total, avg_fps)
    np.testing.assert_array_equal(got, expected)
    if cap is not None:
        assert len(got) <= cap
        if force:
            assert len(got) == cap


def test_onevision_training_rule_examples() -> None:
    spec = video.Sampling(fps=1, max_frames=32)  # finetune_ov.sh: 1 fps, frames_upbound 32
    assert len(spec.indices(600, 30.0)) == 20  # 20 s: 1 fps
    np.testing.assert_array_equal(spec.indices(600, 30.0), np.arange(0, 600, 30))
    np.testing.assert_array_equal(
        spec.indices(1800, 30.0), np.linspace(0, 1799, 32, dtype=int)
    )  # 60 s: capped
    forced = video.Sampling(fps=1, max_frames=64, force_sample=True)  # LLaVA-Video
    np.testing.assert_array_equal(forced.indices(300, 30.0), np.linspace(0, 299, 64, dtype=int))
    assert spec.indices(10, 0.4).tolist() == list(range(10))  # step round(0.4) = 0 is clamped to 1
    assert video.Sampling(fps=1).indices(100, 29.97).tolist() == list(range(0, 100, 30))


def test_round_half_to_even_like_the_reference() -> None:
    assert fps_indices(100, 2.5, 1.0).tolist() == list(range(0, 100, 2))  # round(2.5) == 2
    assert fps_indices(100, 3.5, 1.0).tolist() == list(range(0, 100, 4))  # round(3.5) == 4


def test_start_end_range_cfr() -> None:
    spec = video.Sampling(num_frames=3, start=1.0, end=2.0)
    np.testing.assert_array_equal(spec.indices(300, 30.0), [30, 44, 59])  # frames 30..59 are in [1, 2)
    assert video.Sampling(fps=10, end=1.0).indices(300, 30.0).tolist() == list(range(0, 30, 3))
    assert video.Sampling(num_frames=2, start=9.95).indices(300, 30.0).tolist() == [299, 299]
    with pytest.raises(ValueError, match="selects no frame"):
        video.Sampling(num_frames=2, start=10.0).indices(300, 30.0)


def test_start_end_range_uses_timestamps_when_given() -> None:
    times = np.array([0.0, 0.5, 0.6, 2.0, 2.1, 4.0])
    spec = video.Sampling(num_frames=10, start=0.55, end=2.1)
    assert set(spec.indices(6, 1.0, times).tolist()) == {2, 3}


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.integers(0, 5000), min_size=1, max_size=40),
    idx=st.lists(st.integers(0, 5000), min_size=1, max_size=40),
)
def test_snap_to_keyframes_picks_the_nearest(keys, idx) -> None:
    snapped = snap_to_keyframes(idx, keys)
    key_array = np.array(sorted(set(keys)))
    for i, s in zip(idx, snapped):
        assert s in key_array
        distance = np.abs(key_array - i)
        assert abs(s - i) == distance.min()
        assert s == key_array[distance == distance.min()].min()  # ties go to the earlier keyframe


@st.composite
def specs(draw) -> video.Sampling:
    by_count = draw(st.booleans())
    start = draw(st.one_of(st.none(), st.floats(0, 100, allow_nan=False)))
    end = draw(st.one_of(st.none(), st.floats(0, 200, allow_nan=False)))
    if start is not None and end is not None and end <= start:
        end = None
    common = {
        "start": start,
        "end": end,
        "uniform": draw(st.sampled_from(["linspace", "arange"])),
        "mode": draw(st.sampled_from(["exact", "keyframes"])),
        "time_instruction": draw(st.booleans()),
    }
    if by_count:
        return video.Sampling(num_frames=draw(st.integers(1, 256)), **common)
    cap = draw(st.one_of(st.none(), st.integers(1, 256)))
    force = cap is not None and draw(st.booleans())
    return video.Sampling(fps=draw(st.floats(0.1, 60)), max_frames=cap, force_sample=force, **common)


@settings(max_examples=200, deadline=None)
@given(spec=specs())
def test_dict_round_trip(spec: video.Sampling) -> None:
    data = json.loads(json.dumps(spec.to_dict()))  # survives a JSON checkpoint config
    assert video.Sampling.from_dict(data) == spec
    assert hash(video.Sampling.from_dict(data)) == hash(spec)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_frames": 8, "fps": 1},
        {"num_frames": 0},
        {"num_frames": True},
        {"num_frames": 8, "max_frames": 4},
        {"fps": 1, "force_sample": True},
        {"fps": 0},
        {"fps": float("inf")},
        {"fps": 1, "max_frames": 0},
        {"num_frames": 8, "start": -1},
        {"num_frames": 8, "start": 5, "end": 5},
        {"num_frames": 8, "uniform": "random"},
        {"num_frames": 8, "mode": "fast"},
    ],
)
def test_invalid_specs_are_rejected(kwargs) -> None:
    with pytest.raises(ValueError):
        video.Sampling(**kwargs)


def test_from_dict_rejects_unknown_keys_and_spec_is_frozen() -> None:
    with pytest.raises(ValueError, match="frames_upbound"):
        video.Sampling.from_dict({"fps": 1, "frames_upbound": 32})
    spec = video.Sampling(num_frames=8)
    with pytest.raises(AttributeError):
        spec.num_frames = 16  # type: ignore[misc]


def test_uniform_indices_validation() -> None:
    with pytest.raises(ValueError):
        uniform_indices(0, 4)
    with pytest.raises(ValueError):
        uniform_indices(10, 4, "random")  # type: ignore[arg-type]


def test_time_instruction_exact_string() -> None:
    text = video.time_instruction([0.0, 1.5, 3.0333], 4.0)
    assert text == (
        "The video lasts for 4.00 seconds, and 3 frames are uniformly sampled from it. "
        "These frames are located at 0.00s,1.50s,3.03s.Please answer the following questions related to this video."
    )
    with pytest.raises(ValueError, match="duration is required"):
        video.time_instruction([0.0, 1.0])


def test_time_instruction_from_a_clip(ntsc) -> None:
    clip = video.load(ntsc, video.Sampling(num_frames=4))  # indices 0, 14, 29, 44 at 30000/1001 fps
    expected_times = ",".join(f"{i * 1001 / 30000:.2f}s" for i in (0, 14, 29, 44))
    assert expected_times == "0.00s,0.47s,0.97s,1.47s"
    assert video.time_instruction(clip) == (
        f"The video lasts for {45 * 1001 / 30000:.2f} seconds, and 4 frames are uniformly sampled from it. "
        f"These frames are located at {expected_times}.Please answer the following questions related to this video."
    )
    assert video.time_instruction(clip, duration=10) == video.time_instruction(clip.timestamps, 10)


def test_numpy_scalars_are_normalised_for_json() -> None:
    spec = video.Sampling(fps=np.float32(2.0), max_frames=np.int64(16), start=np.float64(1.5))
    data = spec.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert type(data["max_frames"]) is int and type(data["fps"]) is float
    assert spec == video.Sampling(fps=2.0, max_frames=16, start=1.5)
