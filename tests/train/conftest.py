"""Shared fixtures for the trainer tests: a generated dataset and tiny recipes pointing at it."""

from __future__ import annotations

from pathlib import Path

import pytest

from onevision.train.recipe import SyntheticData
from onevision.train.synthetic import ensure_synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A synthetic mixture (images incl. one EXIF-rotated JPEG, multi-image, videos, text) shared by the session."""
    root = tmp_path_factory.mktemp("tiny-data")
    return ensure_synthetic_dataset(root / "mixture.yaml", SyntheticData(num_samples=28, seed=0))


def data_overrides(mixture: Path) -> list[str]:
    root = mixture.parent
    return [
        f"data.path={mixture}",
        f"data.image_root={root / 'images'}",
        f"data.video_root={root / 'videos'}",
    ]
