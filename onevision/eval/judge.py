"""Judged scores (``onevision eval judge``): the LLaVA-Bench relative score with any OpenAI-compatible judge.

For every question the judge sees the image's text context, the question and two answers, the candidate's and a
reference answer, and rates each 1-10 for helpfulness, relevance, accuracy and level of detail (the LLaVA-Bench
rubric); its reply starts with a line holding the two scores. Each question is judged twice, the reference first
and then the candidate first, and the two ratings of each answer are averaged, which cancels the judge's position
bias. A category's score is ``mean(candidate) / mean(reference) x 100`` over its questions (conversation, detail,
complex reasoning), and ``all`` over every question.

Questions: JSONL, one ``{"question_id", "category", "question", "reference", "context"}`` per line (``context`` is
the image's description the text-only judge reads; ``image`` optional, used to generate answers). Answers: JSONL
``{"question_id", "answer"}``, or generated with ``--model`` (``pipe.generate``). The judge is called at
``<judge-url>/chat/completions`` with the key from ``$OPENAI_API_KEY`` (``--api-key-env`` names another
variable); failed calls and unreadable replies are retried with exponential backoff, at most ``concurrency``
calls are in flight, and every judgement (with the judge's raw reply) is appended to ``judgements.jsonl`` as it
arrives, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYSTEM_PROMPT = "You are a helpful and precise assistant for checking the quality of the answer."
#: the LLaVA-Bench rubric: two assistants rated 1-10 on helpfulness, relevance, accuracy and level of detail
RUBRIC = (
    "We would like to request your feedback on the performance of two AI assistants in response to the user "
    "question displayed above. The user asks the question on observing an image. For your reference, the visual "
    "content in the image is represented with a few sentences describing the image.\n"
    "Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each assistant "
    "receives an overall score on a scale of 1 to 10, where a higher score indicates better overall performance.\n"
    "Please first output a single line containing only two values indicating the scores for Assistant 1 and 2, "
    "respectively. The two scores are separated by a space.\n"
    "In the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any potential "
    "bias and ensuring that the order in which the responses were presented does not affect your judgment."
)
#: accepted category spellings -> the reported category
CATEGORIES = {
    "conv": "conversation",
    "conversation": "conversation",
    "detail": "detail",
    "complex": "complex reasoning",
    "complex_reasoning": "complex reasoning",
    "complex reasoning": "complex reasoning",
}
ORDERS = ("reference_first", "candidate_first")
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class JudgeError(RuntimeError):
    """The judge could not be reached, or its replies could not be read, after every retry."""


@dataclass(frozen=True)
class JudgeConfig:
    url: str
    model: str
    api_key: str | None = None
    concurrency: int = 4
    retries: int = 5
    backoff: float = 1.0  # seconds before the first retry; doubled each time (with jitter), at most 60 s
    timeout: float = 120.0
    temperature: float = 0.0
    max_tokens: int = 512

    @property
    def endpoint(self) -> str:
        url = self.url.rstrip("/")
        return url if url.endswith("/chat/completions") else url + "/chat/completions"


def judge_prompt(context: str, question: str, answer_1: str, answer_2: str) -> list[dict[str, str]]:
    """The judge's messages for one ordered pair of answers (Assistant 1 is rated first)."""
    content = (
        f"[Context]\n{context}\n\n[Question]\n{question}\n\n"
        f"[Assistant 1]\n{answer_1}\n\n[End of Assistant 1]\n\n"
        f"[Assistant 2]\n{answer_2}\n\n[End of Assistant 2]\n\n[System]\n{RUBRIC}\n\n"
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


_NUMBER = r"(\d+(?:\.\d+)?)"


def parse_scores(reply: str) -> tuple[float, float] | None:
    """The two scores on the reply's first non-empty line (``"8 6"``, ``"8, 6"``, ``"8/10 6/10"``), or
    ``None`` when that line does not hold exactly two scores within 1-10."""
    lines = [line for line in (reply or "").strip().splitlines() if line.strip()]
    if not lines:
        return None
    first = re.sub(r"/\s*10\b", " ", lines[0]).replace(",", " ")
    values = re.findall(_NUMBER, first)
    if len(values) != 2:
        return None
    a, b = float(values[0]), float(values[1])
    if not (0 <= a <= 10 and 0 <= b <= 10):
        return None
    return a, b


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    rows = []
    with open(path) as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
    return rows


def load_questions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Questions with ``question_id``, a known ``category``, ``question``, ``reference`` and ``context``."""
    out, seen = [], set()
    for i, q in enumerate(read_jsonl(path), 1):
        missing = [k for k in ("question_id", "category", "question", "reference") if k not in q]
        if missing:
            raise ValueError(f"{path}: question {i} lacks {missing}")
        category = CATEGORIES.get(str(q["category"]).lower())
        if category is None:
            raise ValueError(
                f"{path}: question {i}: unknown category {q['category']!r} (one of {sorted(CATEGORIES)})"
            )
        qid = str(q["question_id"])
        if qid in seen:
            raise ValueError(f"{path}: question_id {qid} appears twice")
        seen.add(qid)
        out.append({**q, "question_id": qid, "category": category, "context": q.get("context", "")})
    if not out:
        raise ValueError(f"{path}: no questions")
    return out


def load_answers(path: str | os.PathLike) -> dict[str, str]:
    answers = {}
    for i, a in enumerate(read_jsonl(path), 1):
        text = a.get("answer", a.get("text"))
        if "question_id" not in a or text is None:
            raise ValueError(f"{path}: answer {i} needs question_id and answer")
        answers[str(a["question_id"])] = str(text)
    return answers


def generate_answers(
    model: str,
    questions: Sequence[Mapping[str, Any]],
    out_path: Path,
    *,
    image_root: str | os.PathLike | None = None,
    max_new_tokens: int = 256,
) -> dict[str, str]:
    """Candidate answers from checkpoint ``model`` (``pipe.generate``, greedy), written to ``out_path``."""
    import onevision

    pipe = onevision.load(model)
    answers = {}
    with open(out_path, "w") as fh:
        for q in questions:
            images = []
            if q.get("image"):
                image = Path(q["image"])
                images = [
                    str(image if image.is_absolute() or image_root is None else Path(image_root) / image)
                ]
            answer = pipe.generate(q["question"], images=images, max_new_tokens=max_new_tokens)
            answers[q["question_id"]] = answer
            fh.write(json.dumps({"question_id": q["question_id"], "answer": answer}) + "\n")
    return answers


class JudgeClient:
    """One chat-completions call per judgement, retried with exponential backoff (also on unreadable replies)."""

    def __init__(self, config: JudgeConfig, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.sleep = sleep

    def _post(self, messages: list[dict[str, str]]) -> str:
        body = json.dumps(
            {
                "model": self.config.model,
                "messages": messages,
                "temperature": self.config.temperature,
                "max_tokens": self.config.max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        request = urllib.request.Request(self.config.endpoint, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
            payload = json.loads(response.read().decode())
        return str(payload["choices"][0]["message"]["content"] or "")

    def rate(self, messages: list[dict[str, str]]) -> tuple[tuple[float, float], str, int]:
        """``((score 1, score 2), raw reply, attempts)``; raises :class:`JudgeError` after the last retry."""
        problems = []
        for attempt in range(self.config.retries + 1):
            if attempt:
                delay = min(60.0, self.config.backoff * 2 ** (attempt - 1))
                self.sleep(delay * (1 + 0.1 * random.random()))
            try:
                reply = self._post(messages)
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUS:
                    raise JudgeError(f"judge {self.config.endpoint}: HTTP {exc.code} {exc.reason}") from exc
                problems.append(f"HTTP {exc.code}")
                continue
            except (
                urllib.error.URLError,
                TimeoutError,
                ConnectionError,
                json.JSONDecodeError,
                KeyError,
            ) as exc:
                problems.append(f"{type(exc).__name__}: {exc}")
                continue
            scores = parse_scores(reply)
            if scores is not None:
                return scores, reply, attempt + 1
            problems.append(f"unreadable reply {reply[:80]!r}")
        raise JudgeError(
            f"judge {self.config.endpoint}: no usable reply after {self.config.retries + 1} attempts "
            f"({'; '.join(problems[-3:])})"
        )


def run_judge(
    questions: Sequence[Mapping[str, Any]],
    answers: Mapping[str, str],
    config: JudgeConfig,
    output: str | os.PathLike,
    *,
    client: JudgeClient | None = None,
) -> dict[str, Any]:
    """Judge every question in both orders (resuming ``judgements.jsonl``); writes and returns ``scores.json``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    missing = [q["question_id"] for q in questions if q["question_id"] not in answers]
    if missing:
        raise ValueError(
            f"no candidate answer for question(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    log = output / "judgements.jsonl"
    # a judgement is reused only for the same candidate answer (changed answers are judged again)
    done = {
        (j["question_id"], j["order"]): j
        for j in _read_done(log)
        if j.get("question_id") in answers and j.get("candidate") == answers[j["question_id"]]
    }
    todo = [(q, order) for q in questions for order in ORDERS if (q["question_id"], order) not in done]
    client = client or JudgeClient(config)
    lock = threading.Lock()

    def judge(item: tuple[Mapping[str, Any], str]) -> dict[str, Any]:
        q, order = item
        candidate, reference = answers[q["question_id"]], str(q["reference"])
        first, second = (reference, candidate) if order == "reference_first" else (candidate, reference)
        (s1, s2), reply, attempts = client.rate(
            judge_prompt(str(q["context"]), str(q["question"]), first, second)
        )
        ref_score, cand_score = (s1, s2) if order == "reference_first" else (s2, s1)
        record = {
            "question_id": q["question_id"],
            "category": q["category"],
            "order": order,
            "reference_score": ref_score,
            "candidate_score": cand_score,
            "reply": reply,
            "attempts": attempts,
            "candidate": candidate,
        }
        with lock, open(log, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        return record

    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=max(1, config.concurrency)) as pool:
        for future in [pool.submit(judge, item) for item in todo]:
            try:
                record = future.result()
                done[(record["question_id"], record["order"])] = record
            except JudgeError as exc:
                errors.append(exc)
    if errors:
        raise JudgeError(
            f"{len(errors)} of {len(todo)} judgements failed; the {len(todo) - len(errors)} others are saved in "
            f"{log} and a rerun resumes from them. First failure: {errors[0]}"
        )
    scores = summarise(questions, done.values())
    scores["judge"] = {"url": config.endpoint, "model": config.model}
    (output / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def _read_done(log: Path) -> list[dict[str, Any]]:
    if not log.is_file():
        return []
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by an interruption: judged again
            continue
    return out


def summarise(
    questions: Sequence[Mapping[str, Any]], judgements: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """Per category and overall: mean candidate and reference scores (both orders averaged) and their ratio."""
    by_question: dict[str, list[Mapping[str, Any]]] = {}
    for j in judgements:
        by_question.setdefault(str(j["question_id"]), []).append(j)
    per_question = {}
    for q in questions:
        js = by_question.get(q["question_id"], [])
        if {j["order"] for j in js} != set(ORDERS):
            raise JudgeError(f"question {q['question_id']} lacks a judgement in both orders")
        per_question[q["question_id"]] = (
            q["category"],
            sum(float(j["candidate_score"]) for j in js) / len(js),
            sum(float(j["reference_score"]) for j in js) / len(js),
        )
    categories: dict[str, Any] = {}
    names = [c for c in dict.fromkeys(CATEGORIES.values()) if any(v[0] == c for v in per_question.values())]
    for name in [*names, "all"]:
        rows = [v for v in per_question.values() if name == "all" or v[0] == name]
        cand = sum(r[1] for r in rows) / len(rows)
        ref = sum(r[2] for r in rows) / len(rows)
        categories[name] = {
            "n": len(rows),
            "candidate": cand,
            "reference": ref,
            "relative": cand / ref * 100 if ref else float("nan"),
        }
    return {"categories": categories}


def format_scores(scores: Mapping[str, Any]) -> str:
    header = f"{'category':<20}{'n':>5}{'candidate':>11}{'reference':>11}{'relative':>10}"
    lines = [header, "-" * len(header)]
    for name, c in scores["categories"].items():
        lines.append(
            f"{name:<20}{c['n']:>5}{c['candidate']:>11.2f}{c['reference']:>11.2f}{c['relative']:>10.1f}"
        )
    return "\n".join(lines)
