"""FramePooling: §5.5 token counts, parity with transformers' LLaVA-OneVision video path, and layouts."""

from __future__ import annotations

import math

import pytest
import torch

import video

# §5.5 of the algorithms reference: frames -> (one_token, grid, frame, no_token, avg/max one_token, avg grid)
TABLE_5_5 = {
    8: (1569, 1680, 1576, 1568, 1353, 1456),
    16: (3137, 3360, 3152, 3136, 2705, 2912),
    32: (6273, 6720, 6304, 6272, 5409, 5824),
    64: (12545, 13440, 12608, 12544, 10817, 11648),
}


@pytest.mark.parametrize("frames", sorted(TABLE_5_5))
def test_token_counts_match_reference_table(frames: int) -> None:
    one, grid, frame, none, pooled_one, average_grid = TABLE_5_5[frames]
    assert video.FramePooling().layout(frames).num_tokens == one
    assert video.FramePooling(newline="grid").layout(frames).num_tokens == grid
    assert video.FramePooling(newline="frame").layout(frames).num_tokens == frame
    assert video.FramePooling(newline="no_token").layout(frames).num_tokens == none
    assert video.FramePooling(mode="average").layout(frames).num_tokens == pooled_one
    assert video.FramePooling(mode="max").layout(frames).num_tokens == pooled_one
    assert video.FramePooling(mode="average", newline="grid").layout(frames).num_tokens == average_grid


def test_layout_fields() -> None:
    layout = video.FramePooling(newline="grid").layout(8)
    assert layout == video.VideoLayout(
        num_frames=8, grid=(14, 14), tokens_per_frame=196, newlines=112, num_tokens=1680, newline="grid"
    )
    assert video.FramePooling(mode="average").grid == (13, 13)
    assert video.FramePooling(tile_size=336).grid == (12, 12)  # CLIP-336: 24 -> 12
    assert video.FramePooling(tile_size=384, stride=3).grid == (9, 9)
    assert video.FramePooling(mode="max", stride=4).grid == (6, 6)  # floor(27 / 4)
    with pytest.raises(ValueError):
        video.FramePooling().layout(0)


def _tiny_hf_model(image_size: int, patch_size: int):
    from transformers import LlavaOnevisionModel

    from onevision.testing import TINY

    spec = TINY.replace(image_size=image_size, patch_size=patch_size, llm_layers=1, max_positions=512)
    config = spec.hf_config(
        vocab_size=128,
        image_token_id=1,
        video_token_id=2,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    return LlavaOnevisionModel(config).eval()


def test_pack_equals_transformers_video_features_end_to_end() -> None:
    model = _tiny_hf_model(64, 8)  # 8x8 patches per frame -> 4x4 after bilinear pooling (§5.6 geometry)
    captured = {}
    hook = model.multi_modal_projector.register_forward_hook(
        lambda m, i, o: captured.setdefault("features", o)
    )
    pixels = torch.randn(1, 8, 3, 64, 64)
    with torch.no_grad():
        expected = model.get_video_features(
            pixel_values_videos=pixels, vision_feature_layer=-1, vision_feature_select_strategy="full"
        ).pooler_output[0]
    hook.remove()
    pooling = video.FramePooling(tile_size=64, patch_size=8)
    layout = pooling.layout(8)
    with torch.no_grad():
        packed = pooling.pack(captured["features"], layout, model.image_newline)
    assert layout.num_tokens == 129 == expected.shape[0]  # 8 * 16 + 1
    torch.testing.assert_close(packed, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("frames", [1, 3, 8])
def test_pack_equals_transformers_apply_pooling_on_siglip_geometry(frames: int) -> None:
    model = _tiny_hf_model(384, 14)  # 27x27 grid -> 14x14
    torch.manual_seed(frames)
    features = torch.randn(frames, 729, 64)
    with torch.no_grad():
        pooled = model.apply_pooling(features).reshape(frames * 196, 64)
        expected = torch.cat([pooled, model.image_newline[None]], dim=0)
        packed = video.FramePooling().pack(features, newline=model.image_newline)
    assert packed.shape == (196 * frames + 1, 64)
    torch.testing.assert_close(packed, expected, rtol=0, atol=1e-6)


def _blocks(features: torch.Tensor, side: int, stride: int) -> torch.Tensor:
    """[F, side*side, D] -> [F, rows, cols, stride*stride, D] non-overlapping blocks (floor)."""
    frames, _, dim = features.shape
    out = side // stride
    x = features.reshape(frames, side, side, dim)[:, : out * stride, : out * stride]
    x = x.reshape(frames, out, stride, out, stride, dim).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(frames, out, out, stride * stride, dim)


@pytest.mark.parametrize("mode", ["average", "max"])
def test_average_and_max_pool_blocks(mode: str) -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 729, 5, dtype=torch.float64)
    pooling = video.FramePooling(mode=mode, newline="no_token")
    blocks = _blocks(features, 27, 2)
    expected = blocks.mean(dim=3) if mode == "average" else blocks.amax(dim=3)
    torch.testing.assert_close(pooling.pack(features), expected.reshape(-1, 5), rtol=0, atol=1e-12)


def _bilinear_reference(grid: torch.Tensor, out: int) -> torch.Tensor:
    """Independent align_corners=False bilinear resize of [side, side, D] to [out, out, D]."""
    side = grid.shape[0]
    scale = side / out
    coords = [(i + 0.5) * scale - 0.5 for i in range(out)]
    result = torch.empty(out, out, grid.shape[2], dtype=grid.dtype)
    for r, y in enumerate(coords):
        y = max(y, 0.0)
        y0 = min(math.floor(y), side - 1)
        y1, wy = min(y0 + 1, side - 1), y - y0
        for c, x in enumerate(coords):
            x = max(x, 0.0)
            x0 = min(math.floor(x), side - 1)
            x1, wx = min(x0 + 1, side - 1), x - x0
            result[r, c] = (1 - wy) * ((1 - wx) * grid[y0, x0] + wx * grid[y0, x1]) + wy * (
                (1 - wx) * grid[y1, x0] + wx * grid[y1, x1]
            )
    return result


def test_bilinear_matches_an_independent_implementation() -> None:
    torch.manual_seed(1)
    features = torch.randn(2, 729, 3, dtype=torch.float64)
    packed = video.FramePooling(newline="no_token").pack(features)
    expected = torch.stack([_bilinear_reference(f.reshape(27, 27, 3), 14) for f in features])
    torch.testing.assert_close(packed, expected.reshape(-1, 3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["bilinear", "average", "max"])
@pytest.mark.parametrize("newline", ["one_token", "grid", "frame", "no_token"])
def test_newline_layouts_are_consistent(mode: str, newline: str) -> None:
    torch.manual_seed(2)
    frames, dim = 3, 4
    features = torch.randn(frames, 729, dim)
    token = torch.full((dim,), 99.0)
    pooling = video.FramePooling(mode=mode, newline=newline)
    layout = pooling.layout(frames)
    packed = pooling.pack(features, layout, token)
    assert packed.shape == (layout.num_tokens, dim)
    is_newline = (packed == 99.0).all(dim=1)
    assert int(is_newline.sum()) == layout.newlines
    rows, cols = layout.grid
    positions = is_newline.nonzero().flatten().tolist()
    if newline == "one_token":
        assert positions == [layout.num_tokens - 1]
    elif newline == "grid":
        assert positions == [k * (cols + 1) + cols for k in range(frames * rows)]
    elif newline == "frame":
        assert positions == [f * (rows * cols + 1) + rows * cols for f in range(frames)]
    pooled = pooling.pool(features).reshape(-1, dim)
    torch.testing.assert_close(packed[~is_newline], pooled)  # same tokens, same row-major order


def test_pack_validation() -> None:
    pooling = video.FramePooling()
    with pytest.raises(ValueError, match="729 patches"):
        pooling.pack(torch.zeros(2, 576, 4), newline=torch.zeros(4))
    with pytest.raises(ValueError, match="needs the newline"):
        pooling.pack(torch.zeros(2, 729, 4))
    with pytest.raises(ValueError, match="does not match"):
        pooling.pack(torch.zeros(2, 729, 4), pooling.layout(3), torch.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        pooling.pack(torch.zeros(2, 729, 4), newline=torch.zeros(5))


def test_pack_keeps_dtype() -> None:
    features = torch.randn(2, 729, 8, dtype=torch.bfloat16)
    packed = video.FramePooling().pack(features, newline=torch.zeros(8))
    assert packed.dtype == torch.bfloat16 and packed.shape == (393, 8)


def test_dict_round_trip_and_validation() -> None:
    pooling = video.FramePooling(mode="average", newline="grid", stride=3)
    assert video.FramePooling.from_dict(pooling.to_dict()) == pooling
    assert video.FramePooling.from_dict({}) == video.FramePooling()
    with pytest.raises(ValueError, match="unknown FramePooling keys"):
        video.FramePooling.from_dict({"pool": "max"})
    for bad in ({"mode": "mean"}, {"newline": "row"}, {"stride": 0}, {"tile_size": 10, "patch_size": 14}):
        with pytest.raises(ValueError):
            video.FramePooling(**bad)


def test_from_llava_config() -> None:
    assert video.FramePooling.from_llava_config({}) == video.FramePooling()  # missing key -> one_token
    video_cfg = {
        "mm_spatial_pool_mode": "average",
        "mm_newline_position": "grid",
        "mm_spatial_pool_stride": 2,
    }
    assert video.FramePooling.from_llava_config(video_cfg) == video.FramePooling(
        mode="average", newline="grid"
    )
    with pytest.warns(UserWarning, match="ignored by the reference"):
        compat = video.FramePooling.from_llava_config({"mm_spatial_pool_stride": 4})
    assert compat.stride == 2
    assert video.FramePooling.from_llava_config({"mm_spatial_pool_stride": 4}, compat=False).stride == 4
    flat = video.FramePooling.from_llava_config({"mm_patch_merge_type": "flat"})
    assert flat.newline == "no_token"
    with pytest.raises(ValueError, match="add_faster_video"):
        video.FramePooling.from_llava_config({"add_faster_video": True})
