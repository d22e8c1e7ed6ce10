"""Shared fixtures for the data tests: the synthetic mixture, a tiny recipe's encoder and the mixture packed into
shards once per session (tests copy the shards before damaging them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from onevision.train.recipe import SyntheticData, load_recipe
from onevision.train.synthetic import ensure_synthetic_dataset

RECIPE = "tiny/stage2_ov"


def loose(mixture: Path, *extra: str):
    root = mixture.parent
    media = [f"data.image_root={root / 'images'}", f"data.video_root={root / 'videos'}"]
    common = ["init_from=null", "data.synthetic=null", "logging.progress=false"]
    return load_recipe(RECIPE, [f"data.path={mixture}", *media, *common, *extra])


def sharded(path: str | Path, *extra: str):
    return load_recipe(RECIPE, [f"data.path={path}", "init_from=null", "data.synthetic=null", *extra])


@pytest.fixture(scope="session")
def mixture(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data-mixture")
    return ensure_synthetic_dataset(root / "mixture.yaml", SyntheticData(num_samples=28, seed=0))


@pytest.fixture(scope="session")
def encoder(mixture):
    from onevision.train.build import build_encoder, build_model

    recipe = loose(mixture)
    return build_encoder(recipe, build_model(recipe))


@pytest.fixture(scope="session")
def shards(mixture, encoder, tmp_path_factory) -> Path:
    from onevision.data.pack import pack

    out = tmp_path_factory.mktemp("data-shards") / "shards"
    pack(loose(mixture), encoder, out, shard_size=8, progress=False)
    return out
