"""The LLaVA instruction-data recipe as data and pure functions: COCO captions and boxes to a text context, the
shipped (editable) prompts and few-shot examples per kind, and model replies parsed into LLaVA records.

A context is the image's captions, one per line, then (with instances) one line per box as
``category: [x1, y1, x2, y2]`` with coordinates normalised by the image size and rounded to 3 decimals, as
LLaVA did. ``conversation`` replies are ``Question:`` / ``Answer:`` blocks separated by ``===`` lines, parsed
into alternating turns; ``detail`` and ``complex`` replies are one answer to an instruction drawn (seeded by the
image id) from the shipped lists. The first human turn starts with ``<image>``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from onevision.errors import DataError

Kind = Literal["conversation", "detail", "complex"]
KINDS: tuple[Kind, ...] = ("conversation", "detail", "complex")
_SEPARATOR = re.compile(r"^\s*===\s*$", re.MULTILINE)


class MalformedReply(DataError):
    """A model reply that does not follow its kind's format (counted and logged, never written)."""


@dataclass(frozen=True)
class ImageContext:
    """One COCO image: its id, file name and the text the model is shown."""

    image_id: str
    file_name: str
    context: str


@dataclass(frozen=True)
class Prompts:
    """A kind's system prompt and few-shot ``(context, reply)`` pairs, read from the package's text files."""

    kind: Kind
    system: str
    examples: tuple[tuple[str, str], ...]

    def messages(self, context: str) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}]
        for ctx, reply in self.examples:
            out += [{"role": "user", "content": ctx}, {"role": "assistant", "content": reply}]
        return [*out, {"role": "user", "content": context}]


def prompts_dir() -> Path:
    return Path(str(resources.files("onevision.data") / "prompts"))


def load_prompts(kind: Kind, directory: Path | None = None) -> Prompts:
    """``<dir>/<kind>/system.txt`` and its ``example_NN_context.txt`` / ``example_NN_reply.txt`` pairs."""
    d = (directory or prompts_dir()) / kind
    system = d / "system.txt"
    if not system.is_file():
        raise DataError(f"{system}: missing system prompt for kind {kind!r}")
    examples = []
    for ctx in sorted(d.glob("example_*_context.txt")):
        reply = ctx.with_name(ctx.name.replace("_context.txt", "_reply.txt"))
        if not reply.is_file():
            raise DataError(f"{ctx}: few-shot context without its reply file {reply.name}")
        examples.append((ctx.read_text().strip(), reply.read_text().strip()))
    return Prompts(kind, system.read_text().strip(), tuple(examples))


def load_instructions(kind: Kind, directory: Path | None = None) -> tuple[str, ...]:
    path = (directory or prompts_dir()) / f"instructions_{kind}.txt"
    if not path.is_file():
        raise DataError(f"{path}: missing instruction list for kind {kind!r}")
    lines = tuple(x.strip() for x in path.read_text().splitlines() if x.strip())
    if not lines:
        raise DataError(f"{path}: the instruction list is empty")
    return lines


def _read_coco(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not data["images"]:
        raise DataError(f"{path}: no 'images' list; a COCO {what} file names its images in 'images'")
    if not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: no 'annotations' list")
    return data


def _box(bbox: Any, width: float, height: float) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [round(x / width, 3), round(y / height, 3), round((x + w) / width, 3), round((y + h) / height, 3)]


def read_contexts(captions: str | Path, instances: str | Path | None = None) -> list[ImageContext]:
    """One context per captioned image of a COCO captions file (file order), with boxes from ``instances``."""
    cap_path = Path(captions)
    caps = _read_coco(cap_path, "captions")
    images: dict[Any, dict[str, Any]] = {}
    for i, im in enumerate(caps["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise DataError(f"{cap_path}: images[{i}] needs an 'id' and a 'file_name'")
        images[im["id"]] = im
    texts: dict[Any, list[str]] = {}
    for i, ann in enumerate(caps["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str):
            raise DataError(f"{cap_path}: annotations[{i}] needs a 'caption' string")
        if ann.get("image_id") not in images:
            raise DataError(
                f"{cap_path}: annotations[{i}] names image_id {ann.get('image_id')!r}, not in 'images'"
            )
        texts.setdefault(ann["image_id"], []).append(" ".join(ann["caption"].split()))
    boxes: dict[Any, list[str]] = {}
    if instances is not None:
        inst_path = Path(instances)
        inst = _read_coco(inst_path, "instances")
        names = {c["id"]: c["name"] for c in inst.get("categories", []) if isinstance(c, dict)}
        sizes = {im["id"]: im for im in inst["images"] if isinstance(im, dict) and "id" in im}
        for i, ann in enumerate(inst["annotations"]):
            im = sizes.get(ann.get("image_id")) if isinstance(ann, dict) else None
            if (
                im is None
                or ann.get("category_id") not in names
                or not im.get("width")
                or not im.get("height")
            ):
                raise DataError(
                    f"{inst_path}: annotations[{i}] needs an image_id with width/height and a known category_id"
                )
            box = _box(ann["bbox"], im["width"], im["height"])
            boxes.setdefault(ann["image_id"], []).append(f"{names[ann['category_id']]}: {box}")
    out = []
    for image_id, im in images.items():
        if image_id not in texts:
            continue
        context = "\n".join(texts[image_id])
        if boxes.get(image_id):
            context += "\n\n" + "\n".join(boxes[image_id])
        out.append(ImageContext(str(image_id), im["file_name"], context))
    return out


def parse_conversation(reply: str) -> list[tuple[str, str]]:
    """``[(question, answer), ...]`` from ``Question:`` / ``Answer:`` blocks split by ``===`` lines."""
    blocks = [b.strip() for b in _SEPARATOR.split(reply) if b.strip()]
    if not blocks or len(blocks) % 2:
        raise MalformedReply(f"{len(blocks)} blocks; expected Question/Answer pairs separated by ===")
    pairs = []
    for q, a in zip(blocks[::2], blocks[1::2]):
        if not q.startswith("Question:") or not a.startswith("Answer:"):
            raise MalformedReply("blocks must alternate 'Question:' and 'Answer:'")
        q, a = q[len("Question:") :].strip(), a[len("Answer:") :].strip()
        if not q or not a:
            raise MalformedReply("an empty question or answer")
        pairs.append((q, a))
    return pairs


def make_record(
    ctx: ImageContext, kind: Kind, reply: str, instructions: tuple[str, ...], *, seed: int = 0
) -> dict:
    """The LLaVA record for one reply (raises :class:`MalformedReply`)."""
    reply = reply.strip()
    if not reply:
        raise MalformedReply("an empty reply")
    if kind == "conversation":
        pairs = parse_conversation(reply)
    else:
        if _SEPARATOR.search(reply) or reply.startswith("Question:"):
            raise MalformedReply(f"a {kind} reply must be one answer, not Question/Answer blocks")
        rng = random.Random(f"{seed}:{ctx.image_id}:{kind}")
        pairs = [(rng.choice(instructions), reply)]
    turns = []
    for i, (q, a) in enumerate(pairs):
        turns += [{"from": "human", "value": ("<image>\n" + q) if i == 0 else q}, {"from": "gpt", "value": a}]
    return {"id": record_id(ctx, kind), "image": ctx.file_name, "kind": kind, "conversations": turns}


def record_id(ctx: ImageContext, kind: Kind) -> str:
    return f"{ctx.image_id}_{kind}"
