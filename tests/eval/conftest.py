"""Fixtures for the lmms-eval plugin, the demo tasks and the judge: everything tiny, generated, offline.

* ``demo``: a generated demo dataset (a few held-out questions per row of the demo's table) and the demo's tiny
  model with random weights, laid out as ``onevision demo`` lays them out (``data/``, ``runs/random``).
* ``demo_tasks``: the shipped ``onevision_demo`` tasks prepared from that data (lmms-eval ``--include_path``).
* ``tiny_dir``: ``onevision.testing.tiny_pipeline()`` saved as a native checkpoint, with ``media`` to ask about.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.util
import sys
import warnings
from pathlib import Path

import pytest

if importlib.util.find_spec("lmms_eval") is None:
    # The `eval` extra pins PyAV < 16, so the README's test command runs these tests in their own venv
    # (.venv-eval, with ".[dev,eval]"); elsewhere they are left out, loudly, instead of failing collection.
    collect_ignore_glob = ["test_*.py"]
    warnings.warn(
        "tests/eval not collected: lmms-eval is not installed (pip install -e '.[dev,eval]'; see docs/evaluation.md)",
        stacklevel=1,
    )

#: the demo dataset: 2 questions per held-out question type (8 single, 2 multi, 4 video documents), little train
DEMO_SPEC = {
    "train_single": 6,
    "train_multi": 2,
    "train_video": 2,
    "train_captions": 4,
    "eval_per_question": 2,
}


@pytest.fixture(scope="session", autouse=True)
def _datasets_cache(tmp_path_factory):
    """lmms-eval's dataset cache in a temporary folder (read by lmms-eval at load time)."""
    previous = os.environ.get("LMMS_EVAL_DATASETS_CACHE")
    os.environ["LMMS_EVAL_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("datasets-cache"))
    yield
    if previous is None:
        os.environ.pop("LMMS_EVAL_DATASETS_CACHE", None)
    else:
        os.environ["LMMS_EVAL_DATASETS_CACHE"] = previous


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> dict[str, Path]:
    from onevision.demo.data import DemoDataSpec, generate
    from onevision.demo.run import DemoOptions, init_model

    root = tmp_path_factory.mktemp("onevision-demo")
    data = generate(root / "data", DemoDataSpec(**DEMO_SPEC))
    (root / "runs").mkdir()
    model = init_model(root / "runs" / "random", data, DemoOptions(output=root))
    return {"root": root, "data": data, "model": model}


@pytest.fixture(scope="session")
def demo_tasks(demo, tmp_path_factory) -> Path:
    from onevision.eval.demo_tasks import prepare_demo_tasks

    return prepare_demo_tasks(demo["data"], tmp_path_factory.mktemp("demo-tasks"))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    import onevision.testing

    d = tmp_path_factory.mktemp("tiny-model")
    onevision.testing.tiny_pipeline(seed=0).save(str(d))
    return d


@pytest.fixture(scope="session")
def tiny_pipe(tiny_dir):
    import onevision

    return onevision.load(str(tiny_dir))


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, str]:
    import numpy as np
    from PIL import Image

    from video.testing import write_counter_video

    d = tmp_path_factory.mktemp("eval-media")
    rng = np.random.default_rng(0)
    for name, (w, h) in {"a.png": (96, 64), "b.png": (64, 80)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(d / name)
    write_counter_video(d / "clip.mp4", num_frames=12, width=64, height=48)
    return {"a": str(d / "a.png"), "b": str(d / "b.png"), "clip": str(d / "clip.mp4")}


def lmms_eval_env(tmp: Path) -> dict[str, str]:
    """The environment of an ``lmms_eval`` subprocess: offline, caches in ``tmp``, one thread."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(tmp / "hf-home"),
        LMMS_EVAL_DATASETS_CACHE=str(tmp / "datasets-cache"),
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_MODE="disabled",
    )
    return env


PYTHON = sys.executable
