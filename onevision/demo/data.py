"""A procedurally generated, seeded dataset whose answers need resolution (or not), for the CPU demo.

* **Single images** (192x192 by default): a big coloured shape on a grey background (coarse questions: its colour,
  its kind) and a small box holding a 1-pixel pattern (detail question: ``lines``, ``bars`` or ``checks``). At base
  resolution (one 64 px tile, a 3x squash) every pattern averages to the same grey; AnyRes tiles keep every pixel.
* **Multi-image** samples: two or three such images, "what colour is the shape in the second image?" (coarse).
* **Videos** (PyAV-encoded H.264, 8 frames): a square flashes in colours over time; "which colour appears first?"
  and "how many times does the square flash?".

Everything is written in the LLaVA JSONL conversation format plus OneVision mixture YAMLs, so the demo exercises
the real data path. The same seed always gives the same files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (235, 210, 40)}
SHAPES = ("circle", "square", "triangle")
PATTERNS = ("lines", "bars", "checks")
COUNTS = {1: "one", 2: "two", 3: "three"}
ORDINALS = ("first", "second", "third")

#: question type of every question template (detail needs resolution; coarse does not)
QUESTIONS = {
    "pattern": ("detail", "What pattern is in the small box?"),
    "colour": ("coarse", "What color is the big shape?"),
    "shape": ("coarse", "What shape is the big shape?"),
    "multi_colour": ("coarse", "What color is the shape in the {ordinal} image?"),
    "first_colour": ("coarse", "Which color appears first?"),
    "flashes": ("coarse", "How many times does the square flash?"),
}
#: the answers a question can have (chance level is 1 / len)
ANSWERS = {
    "pattern": PATTERNS,
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "multi_colour": tuple(COLOURS),
    "first_colour": tuple(COLOURS),
    "flashes": tuple(COUNTS.values()),
}


@dataclass(frozen=True)
class DemoDataSpec:
    """Sizes of the generated dataset (``quick`` shrinks everything for tests)."""

    seed: int = 0
    image_size: int = 192
    box_size: int = 32
    video_size: int = 64
    video_frames: int = 8
    train_single: int = 1200
    train_multi: int = 240
    train_video: int = 240
    train_captions: int = 600
    eval_per_question: int = 100

    @classmethod
    def quick(cls, seed: int = 0) -> DemoDataSpec:
        return cls(
            seed=seed,
            train_single=360,
            train_multi=80,
            train_video=80,
            train_captions=160,
            eval_per_question=40,
        )


@dataclass(frozen=True)
class SceneInfo:
    colour: str
    shape: str
    pattern: str


def draw_scene(rng: np.random.Generator, spec: DemoDataSpec) -> tuple[Image.Image, SceneInfo]:
    """One single image: a big shape (colour, kind) and a small box with a 1-pixel pattern."""
    size, box = spec.image_size, spec.box_size
    grey = int(rng.integers(90, 160))
    img = Image.new("RGB", (size, size), (grey, grey, grey))
    draw = ImageDraw.Draw(img)
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(SHAPES))
    r = int(rng.integers(size // 6, size // 4))
    cx, cy = int(rng.integers(r, size - r)), int(rng.integers(r, size - r))
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    pattern = str(rng.choice(PATTERNS))
    x0, y0 = int(rng.integers(0, size - box)), int(rng.integers(0, size - box))
    arr = np.array(img)
    arr[y0 : y0 + box, x0 : x0 + box] = pattern_box(pattern, box)[:, :, None]
    return Image.fromarray(arr), SceneInfo(colour, shape, pattern)


def pattern_box(pattern: str, box: int) -> np.ndarray:
    """A ``box`` x ``box`` grey patch of 1-pixel ``lines``, ``bars`` or ``checks`` around mid-grey.

    The pattern's amplitude tapers to zero at the border, so it has no low-frequency content at all: squashed to
    a third of its size (the base-resolution view) every pattern becomes the same flat grey patch.
    """
    yy, xx = np.mgrid[0:box, 0:box]
    bits = {"lines": yy % 2, "bars": xx % 2, "checks": (xx + yy) % 2}[pattern]
    ramp = np.minimum(np.arange(box) + 0.5, box - np.arange(box) - 0.5) / 4.0
    taper = np.sin(np.clip(ramp, 0.0, 1.0) * np.pi / 2) ** 2
    envelope = taper[:, None] * taper[None, :]
    return np.round(128 + 127 * envelope * (2 * bits - 1)).astype(np.uint8)


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
        caption = f"A {info.colour} {info.shape} and a box of {info.pattern}."
        out["captions"].append(
            {
                "id": f"cap{len(out['captions'])}",
                "image": save(img),
                "conversations": _turns("", caption, "<image>"),
            }
        )
    for i in range(n_single if train else n_single * 3):
        img, info = draw_scene(rng, spec)
        kind = ("pattern", "colour", "shape")[i % 3]
        answer = {"pattern": info.pattern, "colour": info.colour, "shape": info.shape}[kind]
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
        "stage1.yaml": ["train_captions.jsonl"],
        "single_image.yaml": ["train_single.jsonl"],
        "onevision.yaml": ["train_single.jsonl", "train_multi.jsonl", "train_video.jsonl"],
    }
    for name, files in mixtures.items():
        lines = ["datasets:"] + [f"  - json_path: {f}\n    sampling_strategy: all" for f in files]
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


def corpus(root: str | os.PathLike) -> list[str]:
    """Every text of the training files (to train the demo tokenizer offline)."""
    texts = []
    for path in sorted(Path(root).glob("train_*.jsonl")):
        with open(path) as fh:
            for line in fh:
                for turn in json.loads(line)["conversations"]:
                    texts.append(turn["value"])
    return texts
