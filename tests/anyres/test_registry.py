"""The strategy registry, parameter validation, drawing and the `onevision tokens` command."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import anyres
from anyres import GeometryError, ImageSize

from .conftest import natural_image


def test_builtin_names():
    assert anyres.list_strategies() == ["anyres", "anyres_max", "hd", "pad"]
    assert anyres.get_strategy("anyres_max_16").max_num_patches == 16
    assert anyres.get_strategy("anyres_max_16").strategy_name == "anyres_max_16"


def test_unknown_names_and_parameters_are_clear():
    with pytest.raises(
        ValueError, match=r"unknown strategy 'anyres-max-9'.*registered: anyres, anyres_max, hd, pad"
    ):
        anyres.get_strategy("anyres-max-9")
    with pytest.raises(TypeError, match=r"no parameter\(s\) \['tile'\]"):
        anyres.get_strategy("pad", tile=3)
    with pytest.raises(ValueError, match="conflicts"):
        anyres.get_strategy("anyres_max_9", max_num_patches=4)
    with pytest.raises(GeometryError, match="rounding"):
        anyres.get_strategy("anyres_max_9", rounding="nearest")
    with pytest.raises(GeometryError, match="patch_size"):
        anyres.get_strategy("pad", patch_size=500)


def test_third_party_strategy_registration():
    @dataclass(frozen=True, kw_only=True)
    class Thumbnail(anyres.PadStrategy):
        """A pad variant without newline, registered under its own name."""

        name: ClassVar[str] = "thumb"
        newline: bool = False

    anyres.register_strategy("thumb", Thumbnail)
    try:
        strategy = anyres.get_strategy("thumb", tile_size=64, patch_size=8)
        assert strategy.num_tokens(ImageSize(10, 20)) == 64
        with pytest.raises(ValueError, match="already registered"):
            anyres.register_strategy("thumb", Thumbnail)
        with pytest.raises(TypeError):
            anyres.register_strategy("bad", dict)  # type: ignore[arg-type]
    finally:
        from anyres import strategies

        strategies._REGISTRY.pop("thumb")


def test_pack_rejects_mismatched_features():
    strategy = anyres.get_strategy("anyres_max_9")
    layout = strategy.layout(ImageSize(480, 640))
    with pytest.raises(GeometryError, match="5 tiles"):
        strategy.pack(torch.zeros(4, 729, 8), layout, torch.zeros(8))
    with pytest.raises(GeometryError, match="728 tokens per tile"):
        strategy.pack(torch.zeros(5, 728, 8), layout, torch.zeros(8))
    with pytest.raises(GeometryError, match="no newline"):
        strategy.pack(torch.zeros(5, 729, 8), layout, None)


def test_hd_global_image_position():
    first = anyres.get_strategy("hd", tile_size=32, patch_size=8)
    last = anyres.get_strategy("hd", tile_size=32, patch_size=8, base_position="last")
    layout_first, layout_last = first.layout(ImageSize(40, 70)), last.layout(ImageSize(40, 70))
    feats = torch.randn(layout_first.num_tiles, 17, 3)  # CLIP-style: CLS + 4x4
    newline = torch.randn(3)
    a, b = first.pack(feats, layout_first, newline), last.pack(feats, layout_last, newline)
    assert torch.equal(a[:16], feats[0, 1:])
    assert torch.equal(b[-16:], feats[0, 1:])
    assert torch.equal(a[16:], b[:-16])


def test_draw_layout_renders(tmp_path):
    img = natural_image(900, 1600)
    for name in ("anyres_max_9", "pad", "hd"):
        picture = anyres.draw_layout(img, name)
        assert picture.width >= 560 and picture.height > 100
        # the caption region holds dark text pixels
        caption = picture.crop((0, picture.height - 40, picture.width, picture.height)).convert("L")
        assert min(caption.getdata()) < 100


def test_tokens_cli_prints_table_and_draws(tmp_path, capsys):
    from onevision.cli import main

    path = tmp_path / "sample.jpg"
    natural_image(1080, 1920).save(path)
    out_png = tmp_path / "layout.png"
    assert main(["tokens", str(path), "--draw", str(out_png)]) == 0
    printed = capsys.readouterr().out
    assert "7269" in printed and "1080x1920" in printed and "3x5" in printed and "60x108 (capped)" in printed
    assert out_png.exists() and out_png.stat().st_size > 1000
    assert main(["tokens", str(path), "--strategy", "pad", "--json"]) == 0
    assert '"num_tokens": 730' in capsys.readouterr().out


def test_tokens_cli_reports_bad_input(tmp_path, capsys):
    from onevision.cli import main

    assert main(["tokens", str(tmp_path / "nope.jpg")]) == 2
    err = capsys.readouterr().err
    assert "nope.jpg" in err and "does not exist" in err
