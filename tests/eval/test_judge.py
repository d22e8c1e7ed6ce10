"""``onevision eval judge`` against a stub OpenAI-compatible judge on 127.0.0.1 (fixed ratings, scripted faults)."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from onevision.cli import main
from onevision.eval.judge import parse_scores

#: what the stub judge thinks of each answer; the answer in position 1 gets +1 (a position bias to cancel)
RATINGS = {"REF-A": 8, "REF-B": 9, "REF-C": 6, "cand-A": 6, "cand-B": 9, "cand-C": 3}
QUESTIONS = [
    {
        "question_id": "1",
        "category": "conv",
        "question": "What is it?",
        "reference": "REF-A",
        "context": "a cat",
    },
    {
        "question_id": "2",
        "category": "detail",
        "question": "Describe.",
        "reference": "REF-B",
        "context": "a dog",
    },
    {"question_id": "3", "category": "complex", "question": "Why?", "reference": "REF-C", "context": "rain"},
]
ANSWERS = {"1": "cand-A", "2": "cand-B", "3": "cand-C"}


class StubJudge:
    """A chat-completions endpoint: rates the two answers of the prompt from :data:`RATINGS`."""

    def __init__(self):
        self.requests: list[dict] = []
        self.faults: list[
            int | str
        ] = []  # consumed one per request: an HTTP status, or "garbage" for a bad reply
        self.fail_always: set[str] = set()  # answers whose judgement always gets HTTP 400
        self.in_flight = self.max_in_flight = 0
        self.delay = 0.0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.requests.append(
                        {"path": self.path, "auth": self.headers.get("Authorization"), **body}
                    )
                    fault = stub.faults.pop(0) if stub.faults else None
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    time.sleep(stub.delay)
                    prompt = body["messages"][-1]["content"]
                    first = re.search(
                        r"\[Assistant 1\]\n(.*?)\n\n\[End of Assistant 1\]", prompt, re.S
                    ).group(1)
                    second = re.search(
                        r"\[Assistant 2\]\n(.*?)\n\n\[End of Assistant 2\]", prompt, re.S
                    ).group(1)
                    if {first, second} & stub.fail_always:
                        fault = 400
                    if isinstance(fault, int):
                        self.send_response(fault)
                        self.end_headers()
                        return
                    reply = (
                        "I cannot say."
                        if fault == "garbage"
                        else (
                            f"{RATINGS.get(first, 5) + 1} {RATINGS.get(second, 5)}\nAssistant 1 is {first}; assistant 2 is {second}."
                        )
                    )
                    data = json.dumps(
                        {"choices": [{"message": {"role": "assistant", "content": reply}}]}
                    ).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with stub.lock:
                        stub.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def stub():
    s = StubJudge()
    yield s
    s.close()


@pytest.fixture()
def files(tmp_path):
    q = tmp_path / "questions.jsonl"
    q.write_text("".join(json.dumps(x) + "\n" for x in QUESTIONS))
    a = tmp_path / "answers.jsonl"
    a.write_text("".join(json.dumps({"question_id": k, "answer": v}) + "\n" for k, v in ANSWERS.items()))
    return q, a


def _judge(stub, files, out, *extra):
    q, a = files
    return main(
        ["eval", "judge", "--questions", str(q), "--answers", str(a), "--judge-url", stub.url,
         "--judge-model", "stub-judge", "--backoff", "0.01", "--output", str(out), *extra]
    )  # fmt: skip


def _expected(qid):
    q = next(x for x in QUESTIONS if x["question_id"] == qid)
    return RATINGS[ANSWERS[qid]] + 0.5, RATINGS[q["reference"]] + 0.5  # (+1 in one order of two) / 2


def test_judge_scores_both_orders_per_category(stub, files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert _judge(stub, files, tmp_path / "out") == 0
    printed = capsys.readouterr().out
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())["categories"]
    for qid, category in (("1", "conversation"), ("2", "detail"), ("3", "complex reasoning")):
        cand, ref = _expected(qid)
        assert scores[category]["candidate"] == pytest.approx(cand)
        assert scores[category]["reference"] == pytest.approx(ref)
        assert scores[category]["relative"] == pytest.approx(cand / ref * 100)
        assert category in printed
    cands, refs = zip(*(_expected(q) for q in ANSWERS))
    assert scores["all"]["relative"] == pytest.approx(sum(cands) / sum(refs) * 100)
    assert scores["conversation"]["relative"] == pytest.approx(6.5 / 8.5 * 100)
    # six calls: every question in both orders, to the chat-completions route, with the key and the judge model
    assert len(stub.requests) == 6
    assert {r["path"] for r in stub.requests} == {"/v1/chat/completions"}
    assert {r["auth"] for r in stub.requests} == {"Bearer sk-test"}
    assert {r["model"] for r in stub.requests} == {"stub-judge"}
    prompts = [r["messages"][-1]["content"] for r in stub.requests]
    for qid, cand in ANSWERS.items():
        ref = QUESTIONS[int(qid) - 1]["reference"]
        orders = {p.index(cand) < p.index(ref) for p in prompts if cand in p}
        assert orders == {True, False}
    rubric = prompts[0]
    for word in ("helpfulness, relevance, accuracy, level of details", "scale of 1 to 10", "[Context]\n"):
        assert word in rubric
    log = [json.loads(x) for x in (tmp_path / "out" / "judgements.jsonl").read_text().splitlines()]
    assert len(log) == 6 and all(
        j["reply"].split("\n")[0] == "{:g} {:g}".format(*parse_scores(j["reply"])) for j in log
    )


def test_judge_retries_with_backoff(stub, files, tmp_path):
    stub.faults = [500, 429, "garbage"]  # the first three calls fail, each differently
    assert _judge(stub, files, tmp_path / "out", "--concurrency", "1") == 0
    log = [json.loads(x) for x in (tmp_path / "out" / "judgements.jsonl").read_text().splitlines()]
    assert len(stub.requests) == 6 + 3
    assert sorted(j["attempts"] for j in log) == [1, 1, 1, 1, 1, 4]


def test_judge_gives_up_after_the_retries(stub, files, tmp_path, capsys):
    stub.faults = [503] * 20
    assert _judge(stub, files, tmp_path / "out", "--retries", "2", "--concurrency", "1") == 1
    assert "no usable reply after 3 attempts" in capsys.readouterr().err


def test_judge_respects_the_concurrency_limit(stub, files, tmp_path):
    stub.delay = 0.2
    assert _judge(stub, files, tmp_path / "out", "--concurrency", "2") == 0
    assert stub.max_in_flight == 2


def test_judge_resumes_an_interrupted_run(stub, files, tmp_path, capsys):
    out = tmp_path / "out"
    stub.fail_always = {"cand-C"}  # question 3 cannot be judged this time
    assert _judge(stub, files, out) == 1
    assert "2 of 6 judgements failed" in capsys.readouterr().err
    assert len((out / "judgements.jsonl").read_text().splitlines()) == 4
    stub.fail_always, stub.requests = set(), []
    assert _judge(stub, files, out) == 0
    assert len(stub.requests) == 2  # only question 3's two orders
    assert all("cand-C" in r["messages"][-1]["content"] for r in stub.requests)
    assert json.loads((out / "scores.json").read_text())["categories"]["all"]["n"] == 3


def test_parse_scores():
    assert parse_scores("8 6\nbecause") == (8.0, 6.0)
    assert parse_scores("\n 7.5, 9\n") == (7.5, 9.0)
    assert parse_scores("8/10 6/10") == (8.0, 6.0)
    assert parse_scores("Assistant 1 is better") is None
    assert parse_scores("8 6 4") is None and parse_scores("") is None and parse_scores("80 60") is None


def test_judge_rejects_bad_inputs(stub, files, tmp_path, capsys):
    q, a = files
    a.write_text(json.dumps({"question_id": "1", "answer": "x"}) + "\n")
    assert _judge(stub, files, tmp_path / "out") == 2
    assert "no candidate answer" in capsys.readouterr().err
    q.write_text(json.dumps({**QUESTIONS[0], "category": "poetry"}) + "\n")
    assert _judge(stub, files, tmp_path / "out") == 2
    assert "unknown category" in capsys.readouterr().err
    assert stub.requests == []


def test_judge_generates_candidate_answers_with_a_model(stub, files, tiny_dir, tiny_pipe, media, tmp_path):
    q, _ = files
    q.write_text("".join(json.dumps({**x, "image": media["a"]}) + "\n" for x in QUESTIONS))
    out = tmp_path / "out"
    code = main(["eval", "judge", "--questions", str(q), "--model", str(tiny_dir), "--judge-url", stub.url,
                 "--judge-model", "m", "--output", str(out)])  # fmt: skip
    answers = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["answer"] for a in answers] == [
        tiny_pipe.generate(x["question"], images=[media["a"]], max_new_tokens=256) for x in QUESTIONS
    ]
    assert code == 0
    scores = json.loads((out / "scores.json").read_text())["categories"]
    assert scores["conversation"]["candidate"] == pytest.approx(5.5)  # the stub rates unknown answers 5
