"""A procedurally generated, seeded dataset whose answers need resolution (or not), for the CPU demo.

* **Single images** (128x128 by default): a big coloured shape on a grey background (coarse question: its colour),
  the whole picture striped with a 1-pixel pattern (detail question: ``lines``, ``bars`` or ``checks``). At
  base resolution (one 64 px tile, a 2x bicubic squash) the three patterns become exactly the same flat colour --
  a period-2 pattern has no energy left after a 2x antialiased downscale -- while AnyRes tiles keep every pixel.
* **Multi-image** samples: two or three such images, "what colour is the shape in the second image?" (coarse).
* **Videos** (PyAV-encoded H.264, 8 frames): a square flashes in colours over time; "which colour appears first?"
  and "how many times does the square flash?".

Everything is written in the LLaVA JSONL conversation format plus OneVision mixture YAMLs, so the demo exercises
the real data path. The same seed always gives the same files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: channel values stay within [56, 200] so that adding the +-48 pattern never clips (clipping would leak the pattern
#: into the base-resolution view)
COLOURS = {"red": (200, 56, 56), "green": (56, 176, 72), "blue": (60, 88, 200), "yellow": (200, 190, 56)}
SHAPES = ("circle", "square", "triangle")
PATTERNS = ("lines", "bars", "checks")
COUNTS = {1: "one", 2: "two", 3: "three"}
ORDINALS = ("first", "second", "third")

#: question type of every question template (detail needs resolution; coarse does not)
QUESTIONS = {
    "pattern": ("detail", "What pattern covers the picture?"),
    "colour": ("coarse", "What color is the shape?"),
    "multi_colour": ("coarse", "What color is the shape in the {ordinal} image?"),
    "first_colour": ("coarse", "Which color appears first?"),
    "flashes": ("coarse", "How many times does the square flash?"),
}
#: the answers a question can have (chance level is 1 / len)
ANSWERS = {
    "pattern": PATTERNS,
    "colour": tuple(COLOURS),
    "multi_colour": tuple(COLOURS),
    "first_colour": tuple(COLOURS),
    "flashes": tuple(COUNTS.values()),
}


@dataclass(frozen=True)
class DemoDataSpec:
    """Sizes of the generated dataset (``quick`` shrinks everything for tests)."""

    seed: int = 0
    image_size: int = 128
    pattern_contrast: int = 48
    video_size: int = 32
    video_frames: int = 8
    train_single: int = 1200
    train_multi: int = 360
    train_video: int = 960
    train_captions: int = 600
    eval_per_question: int = 100

    @classmethod
    def quick(cls, seed: int = 0) -> DemoDataSpec:
        return cls(
            seed=seed,
            train_single=360,
            train_multi=120,
            train_video=240,
            train_captions=160,
            eval_per_question=30,
        )


@dataclass(frozen=True)
class SceneInfo:
    colour: str
    shape: str
    pattern: str


def draw_scene(
    rng: np.random.Generator, spec: DemoDataSpec, colour: str | None = None, pattern: str | None = None
) -> tuple[Image.Image, SceneInfo]:
    """One single image: a big coloured shape on grey, the whole picture striped with a 1-pixel pattern.

    ``colour`` and ``pattern`` are drawn at random unless given (the held-out questions cycle through them, so
    every answer is equally frequent and chance is also the best constant guess)."""
    size = spec.image_size
    grey = int(rng.integers(90, 160))
    img = Image.new("RGB", (size, size), (grey, grey, grey))
    draw = ImageDraw.Draw(img)
    colour = colour or str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(SHAPES))
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = int(rng.integers(r, size - r)), int(rng.integers(r, size - r))
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    pattern = pattern or str(rng.choice(PATTERNS))
    stripes = np.rint(pattern_bits(pattern, size) * pattern_envelope(size) * spec.pattern_contrast)
    arr = np.asarray(img, dtype=np.int16) + stripes.astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), SceneInfo(colour, shape, pattern)


def pattern_envelope(size: int, margin: int = 4, ramp: int = 16) -> np.ndarray:
    """Pattern amplitude per pixel, ``[size, size, 1]`` in 0..1: zero in a ``margin`` along the border, then a cosine
    ramp over ``ramp`` pixels. A hard pattern edge would survive the base-resolution squash (the resampling windows
    there are cut off or straddle the edge) and leak the answer; the ramp keeps that leak within one uint8 level."""
    d = np.minimum(np.arange(size), size - 1 - np.arange(size)).astype(np.float64)
    ramp_1d = 0.5 - 0.5 * np.cos(np.pi * np.clip((d - margin + 0.5) / ramp, 0.0, 1.0))
    return np.minimum.outer(ramp_1d, ramp_1d)[:, :, None]


def pattern_bits(pattern: str, size: int) -> np.ndarray:
    """``+1/-1`` per pixel for 1-pixel ``lines`` (horizontal), ``bars`` (vertical) or ``checks``, as ``[size, size, 1]``.

    The phase is tied to the image's pixel grid, and every pattern has the same mean: after a 2x antialiased
    downscale (the base-resolution view) the three are indistinguishable.
    """
    yy, xx = np.mgrid[0:size, 0:size]
    bits = {"lines": yy % 2, "bars": xx % 2, "checks": (xx + yy) % 2}[pattern]
    return (2 * bits - 1).astype(np.int16)[:, :, None]


def write_video(path: Path, rng: np.random.Generator, spec: DemoDataSpec) -> tuple[str, int]:
    """A short H.264 clip: a square flashes 1-3 times, each flash in a colour; returns (first colour, flashes)."""
    import av

    n, side = spec.video_frames, spec.video_size
    flashes = int(rng.integers(1, 4))
    # choose `flashes` disjoint on-intervals separated by at least one off frame
    starts = sorted(rng.choice(np.arange(0, n - 1, 2), size=flashes, replace=False).tolist())
    colours = [str(c) for c in rng.choice(list(COLOURS), size=flashes)]
    frames = np.full((n, side, side, 3), 128, dtype=np.uint8)
    half = side // 4
    for start, colour in zip(starts, colours):
        frames[start, side // 2 - half : side // 2 + half, side // 2 - half : side // 2 + half] = COLOURS[
            colour
        ]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return colours[0], flashes


def _turns(question: str, answer: str, tags: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": f"{tags}\n{question}"}, {"from": "gpt", "value": answer}]


def _records(root: Path, split: str, spec: DemoDataSpec, rng: np.random.Generator) -> dict[str, list[dict]]:
    images, videos = root / "images", root / "videos"
    out: dict[str, list[dict]] = {"captions": [], "single": [], "multi": [], "video": []}
    counter = iter(range(10**9))

    def save(img: Image.Image) -> str:
        name = f"{split}_{next(counter):06d}.png"
        img.save(images / name)
        return name

    train = split == "train"
    n_single = spec.train_single if train else spec.eval_per_question
    for _ in range(spec.train_captions if train else 0):
        img, info = draw_scene(rng, spec)
        caption = f"A {info.colour} {info.shape} on {info.pattern}."
        out["captions"].append(
            {
                "id": f"cap{len(out['captions'])}",
                "image": save(img),
                "conversations": _turns("", caption, "<image>"),
            }
        )
    for i in range(n_single if train else n_single * 2):
        kind = ("pattern", "colour")[i % 2]
        if train:
            img, info = draw_scene(rng, spec)
        else:  # held-out answers cycle (equally frequent); the other attribute stays random
            j = i // 2
            given = {"pattern": PATTERNS[j % 3]} if kind == "pattern" else {"colour": list(COLOURS)[j % 4]}
            img, info = draw_scene(rng, spec, **given)
        answer = {"pattern": info.pattern, "colour": info.colour}[kind]
        out["single"].append(
            {
                "id": f"{split}-single-{i}",
                "image": save(img),
                "question_type": kind,
                "conversations": _turns(QUESTIONS[kind][1], answer, "<image>"),
            }
        )
    for i in range(spec.train_multi if train else spec.eval_per_question):
        count = 2 + int(rng.integers(0, 2))
        scenes = [draw_scene(rng, spec) for _ in range(count)]
        which = int(rng.integers(0, count))
        question = QUESTIONS["multi_colour"][1].format(ordinal=ORDINALS[which])
        out["multi"].append(
            {
                "id": f"{split}-multi-{i}",
                "image": [save(img) for img, _ in scenes],
                "question_type": "multi_colour",
                "conversations": _turns(question, scenes[which][1].colour, "<image>" * count),
            }
        )
    for i in range(spec.train_video if train else spec.eval_per_question * 2):
        name = f"{split}_{i:05d}.mp4"
        first, flashes = write_video(videos / name, rng, spec)
        kind = ("first_colour", "flashes")[i % 2]
        answer = first if kind == "first_colour" else COUNTS[flashes]
        out["video"].append(
            {
                "id": f"{split}-video-{i}",
                "video": name,
                "question_type": kind,
                "conversations": _turns(QUESTIONS[kind][1], answer, "<video>"),
            }
        )
    return out


def generate(root: str | os.PathLike, spec: DemoDataSpec | None = None) -> Path:
    """Write the dataset under ``root`` (skipped when ``root/spec.json`` already records the same spec)."""
    spec = spec or DemoDataSpec()
    root = Path(root)
    marker = root / "spec.json"
    if marker.is_file() and json.loads(marker.read_text()) == asdict(spec):
        return root
    for sub in ("images", "videos"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split, offset in (("train", 0), ("eval", 1)):
        rng = np.random.default_rng([spec.seed, offset])
        for name, records in _records(root, split, spec, rng).items():
            if records:
                with open(root / f"{split}_{name}.jsonl", "w") as fh:
                    fh.writelines(json.dumps(r) + "\n" for r in records)
    mixtures = {
        "stage1.yaml": [("train_captions.jsonl", "all")],
        "single_image.yaml": [("train_single.jsonl", "all")],
        # OneVision stage: half of the single-image questions keep them fresh while multi-image and video arrive
        "onevision.yaml": [
            ("train_single.jsonl", "random:50%"),
            ("train_multi.jsonl", "all"),
            ("train_video.jsonl", "all"),
        ],
    }
    for name, files in mixtures.items():
        lines = ["datasets:"] + [f"  - json_path: {f}\n    sampling_strategy: {how}" for f, how in files]
        (root / name).write_text("\n".join(lines) + "\n")
    marker.write_text(json.dumps(asdict(spec), indent=2))
    return root


def iter_eval(root: str | os.PathLike) -> Iterator[dict]:
    """Held-out evaluation records (single, multi-image and video), each with ``question_type``."""
    for name in ("eval_single.jsonl", "eval_multi.jsonl", "eval_video.jsonl"):
        path = Path(root) / name
        if path.is_file():
            with open(path) as fh:
                yield from (json.loads(line) for line in fh if line.strip())


def eval_question(record: dict) -> str:
    """The question of a held-out record as a user asks it: the data format's leading media tags (``<image>`` /
    ``<video>``, one per item, then a newline) removed, since the media go in as message parts. (Typed into a
    prompt, a tag is plain text, not a media slot.)"""
    return re.sub(r"^(?:<image>|<video>)+\n", "", record["conversations"][0]["value"])


def corpus(root: str | os.PathLike) -> list[str]:
    """Every text of the training files (to train the demo tokenizer offline)."""
    texts = []
    for path in sorted(Path(root).glob("train_*.jsonl")):
        with open(path) as fh:
            for line in fh:
                for turn in json.loads(line)["conversations"]:
                    texts.append(turn["value"])
    return texts
