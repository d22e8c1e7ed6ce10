"""A small deterministic dataset on disk (images, videos, LLaVA JSON/JSONL, a mixture YAML) for tests and demos.

All four modalities and both turn styles appear; one JPEG carries an EXIF rotation (its upright size differs from
its stored size), so length planning is exercised on what real data contains.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from onevision.train.recipe import SyntheticData

WORDS = [
    "cat",
    "dog",
    "red",
    "blue",
    "small",
    "large",
    "tree",
    "house",
    "car",
    "road",
    "sky",
    "cloud",
    "river",
    "boat",
    "person",
    "table",
    "chair",
    "window",
    "light",
    "green",
    "yellow",
    "left",
    "right",
    "top",
    "bottom",
    "near",
    "far",
    "two",
    "three",
    "many",
    "one",
    "old",
    "new",
    "bright",
    "dark",
]


def ensure_synthetic_dataset(path: str | os.PathLike, spec: SyntheticData) -> Path:
    """Create the dataset whose mixture file is ``path`` unless it exists; returns ``path``."""
    target = Path(path)
    if target.is_file():
        return target
    root = target.parent
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    write_synthetic_dataset(tmp, spec, mixture_name=target.name)
    root.mkdir(parents=True, exist_ok=True)
    for item in tmp.iterdir():
        dest = root / item.name
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        os.replace(item, dest)
    tmp.rmdir()
    return target


def _text(rng: np.random.Generator, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi + 1))))


def write_synthetic_dataset(
    root: str | os.PathLike, spec: SyntheticData, *, mixture_name: str = "mixture.yaml"
) -> Path:
    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    n = spec.num_samples
    n_multi, n_video, n_text = max(1, n * 15 // 100), max(1, n * 15 // 100), max(1, n * 20 // 100)
    n_image = max(1, n - n_multi - n_video - n_text)

    def image(name: str, hw: list[int], exif_rotate: bool = False) -> str:
        h, w = hw
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr)
        if exif_rotate:  # stored w x h, displayed rotated: peek_size must report (h, w)
            exif = img.getexif()
            exif[0x0112] = 6
            img.save(root / "images" / f"{name}.jpg", exif=exif, quality=90)
            return f"{name}.jpg"
        img.save(root / "images" / f"{name}.png")
        return f"{name}.png"

    sizes = spec.image_sizes
    singles = []
    for i in range(n_image):
        fname = image(f"img{i:04d}", sizes[i % len(sizes)], exif_rotate=(i == 0))
        singles.append(
            {
                "id": f"image-{i}",
                "image": fname,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{_text(rng, 2, 8)}?"},
                    {"from": "gpt", "value": _text(rng, 3, 60)},
                ],
            }
        )
    multis = []
    for i in range(n_multi):
        names = [image(f"multi{i:04d}_{k}", sizes[(i + k) % len(sizes)]) for k in range(2)]
        multis.append(
            {
                "id": f"multi-{i}",
                "image": names,
                "conversations": [
                    {"role": "user", "content": f"<image> first. <image> second. {_text(rng, 2, 6)}?"},
                    {"role": "assistant", "content": _text(rng, 3, 40)},
                ],
            }
        )
    videos = []
    for i in range(n_video):
        fname = f"vid{i:04d}.mp4"
        _write_video(root / "videos" / fname, rng, frames=spec.video_frames + i % 3, fps=4)
        videos.append(
            {
                "id": f"video-{i}",
                "video": fname,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{_text(rng, 2, 6)}?"},
                    {"from": "gpt", "value": _text(rng, 3, 30)},
                ],
            }
        )
    texts = [
        {
            "id": f"text-{i}",
            "conversations": [
                {"from": "human", "value": f"{_text(rng, 2, 10)}?"},
                {"from": "gpt", "value": _text(rng, 3, 50)},
                {"from": "human", "value": f"{_text(rng, 2, 6)}?"},
                {"from": "gpt", "value": _text(rng, 2, 20)},
            ],
        }
        for i in range(n_text)
    ]
    _jsonl(root / "single.jsonl", singles)
    (root / "multi.json").write_text(json.dumps(multis, indent=1))
    _jsonl(root / "video.jsonl", videos)
    (root / "text.json").write_text(json.dumps(texts, indent=1))
    mixture = root / mixture_name
    mixture.write_text(
        "datasets:\n"
        "  - json_path: single.jsonl\n    sampling_strategy: all\n"
        "  - json_path: multi.json\n    sampling_strategy: all\n"
        "  - json_path: video.jsonl\n    sampling_strategy: all\n"
        "  - json_path: text.json\n    sampling_strategy: all\n"
    )
    return mixture


def _jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _write_video(
    path: Path, rng: np.random.Generator, *, frames: int, fps: int, size: tuple[int, int] = (48, 64)
) -> None:
    import av

    h, w = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for _ in range(frames):
            arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
