"""The real lmms-eval CLI (``python -m lmms_eval --model onevision``) and ``onevision eval`` on the shipped demo
tasks, offline: logged responses equal ``pipe.generate``, multiple choice picks the highest summed log-probability
computed from the model, ``onevision eval`` reproduces the demo's own evaluation, and a bad model fails loudly."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

import onevision
from onevision.cli import main
from tests.eval.conftest import PYTHON, lmms_eval_env


def _lmms_eval(tmp: Path, model: str, tasks: str, include: Path, out: Path, *extra: str):
    cmd = [
        PYTHON, "-m", "lmms_eval",
        "--model", "onevision",
        "--model_args", f"pretrained={model},dtype=float32,device=cpu",
        "--tasks", tasks,
        "--include_path", str(include),
        "--batch_size", "4",
        "--output_path", str(out),
        "--log_samples",
        *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=lmms_eval_env(tmp), timeout=600)


def _samples(out: Path, task: str, tasks_dir: Path) -> list[dict]:
    """The CLI's logged samples of ``task``, each with its document (the CLI logs ``doc_id`` and ``input``)."""
    (path,) = sorted(out.rglob(f"*_samples_{task}.jsonl"))
    group = task.removeprefix("onevision_demo_").removeprefix("mc_")
    docs = [json.loads(x) for x in (tasks_dir / "onevision_demo" / f"{group}.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for s in samples:
        s["doc"] = docs[s["doc_id"]]
        assert s["input"] == s["doc"]["question"]
    return samples


@pytest.fixture(scope="module")
def cli_run(demo, demo_tasks, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lmms-eval-cli")
    out = tmp / "out"
    proc = _lmms_eval(tmp, str(demo["model"]), "onevision_demo,onevision_demo_mc", demo_tasks, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = sorted(out.rglob("*_results.json"))
    return {"out": out, "results": json.loads(results.read_text()), "stdout": proc.stdout}


GEN_TASKS = [
    f"onevision_demo_{g}" for g in ("single_detail", "single_coarse", "multi_coarse", "video_coarse")
]
MC_TASKS = [t.replace("onevision_demo_", "onevision_demo_mc_") for t in GEN_TASKS]


def _media(doc):
    return {"video": doc["video"]} if doc["video"] else {"images": doc["images"]}


def test_cli_logged_responses_equal_pipe_generate(cli_run, demo, demo_tasks):
    pipe = onevision.load(str(demo["model"]))
    modalities = set()
    for task in GEN_TASKS:
        samples = _samples(cli_run["out"], task, demo_tasks)
        assert samples, task
        for s in samples:
            doc = s["doc"]
            expected = pipe.generate(doc["question"], max_new_tokens=4, **_media(doc))
            assert s["filtered_resps"] == expected.split("\n\n")[0], (
                task,
                doc["id"],
            )  # until: the task's default
            modalities.add(doc["modality"])
    assert modalities == {"single", "multi", "video"}
    table = cli_run["results"]["results"]
    assert set(GEN_TASKS + MC_TASKS) <= set(table)
    assert "onevision_demo" in cli_run["results"]["groups"]


def _option_logprob(pipe, doc, option):
    """log p(option | question and media), summed over the option's tokens, straight from the model's forward."""
    media = (
        [{"type": "video", "video": doc["video"]}]
        if doc["video"]
        else [{"type": "image", "image": p} for p in doc["images"]]
    )
    sample = pipe.processor.build_sample(
        [
            {"role": "user", "content": [*media, {"type": "text", "text": doc["question"]}]},
            {"role": "assistant", "content": option},
        ],
        tags_in_text=False,
    )
    ids = pipe.processor.tokenizer(option, add_special_tokens=False)["input_ids"]
    positions = (sample["labels"] != -100).nonzero().flatten()[: len(ids)]
    assert sample["input_ids"][positions].tolist() == ids
    inputs = pipe.processor.collate([sample])
    inputs.pop("labels")
    with torch.no_grad():
        logits = pipe.model(**inputs).logits[0].float()
    return float(torch.log_softmax(logits[positions - 1], -1).gather(1, torch.tensor(ids)[:, None]).sum())


def test_cli_multiple_choice_picks_the_highest_log_probability(cli_run, demo, demo_tasks):
    pipe = onevision.load(str(demo["model"]))
    picked_non_first = False
    for task in MC_TASKS:
        samples = _samples(cli_run["out"], task, demo_tasks)
        correct = []
        for s in samples:
            doc = s["doc"]
            direct = [_option_logprob(pipe, doc, c) for c in doc["choices"]]
            logged = [float(r[0]) for r in s["filtered_resps"]]  # the CLI logs them as strings
            assert logged == pytest.approx(direct, abs=1e-4)
            best = max(range(len(direct)), key=direct.__getitem__)
            picked_non_first |= best != 0
            assert s["accuracy"] == float(doc["choices"][best] == doc["answer"])
            correct.append(s["accuracy"])
        assert cli_run["results"]["results"][task]["accuracy,none"] == pytest.approx(
            sum(correct) / len(correct)
        )
    assert picked_non_first  # the choice really follows the scores, not the option order


def test_cli_wrong_pretrained_fails_loudly(demo_tasks, tmp_path):
    out = tmp_path / "out"
    proc = _lmms_eval(
        tmp_path, str(tmp_path / "no-such-model"), "onevision_demo", demo_tasks, out, "--limit", "1"
    )
    # lmms-eval's CLI logs the error and exits 0; the plugin's error says what failed and nothing is written
    assert "onevision: cannot load pretrained=" in proc.stdout + proc.stderr
    assert not list(out.rglob("*_results.json"))


def test_onevision_eval_reproduces_the_demo_table(demo, tmp_path, capsys):
    from onevision.demo.run import MODALITY_OF, evaluate, summarise

    code = main(
        ["eval", "--model", str(demo["model"]), "--tasks", "onevision_demo", "--output", str(tmp_path)]
    )
    printed = capsys.readouterr().out
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "samples_onevision_demo_video_coarse.jsonl").is_file()
    assert (tmp_path / "table.txt").read_text().strip() == printed.strip()
    demo_table = summarise(evaluate(demo["model"], demo["data"]))  # the demo's own evaluation
    for task in GEN_TASKS:
        modality, kind = task.removeprefix("onevision_demo_").split("_")
        row = demo_table[f"{MODALITY_OF[modality]} / {kind}"]
        assert results["results"][task]["accuracy,none"] == pytest.approx(row["accuracy"])
        assert results["results"][task]["chance,none"] == pytest.approx(row["chance"])
        assert results["n-samples"][task]["effective"] == row["n"]
        assert f"{MODALITY_OF[modality]} / {kind}" in printed


def test_onevision_eval_exits_non_zero_when_evaluation_fails(demo, tmp_path, capsys):
    code = main(["eval", "--model", str(tmp_path / "missing"), "--tasks", "onevision_demo",
                 "--demo-data", str(demo["data"]), "--output", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "cannot load pretrained=" in err
    assert not (tmp_path / "out" / "results.json").exists()
    code = main(
        ["eval", "--model", str(demo["model"]), "--tasks", "no_such_task", "--output", str(tmp_path / "o")]
    )
    assert code == 2 and "unknown task" in capsys.readouterr().err
    code = main(
        [
            "eval",
            "--model",
            str(tmp_path / "elsewhere"),
            "--tasks",
            "onevision_demo",
            "--output",
            str(tmp_path),
        ]
    )
    assert code == 2 and "--demo-data" in capsys.readouterr().err


def test_prepare_demo_writes_the_tasks_and_their_data(demo, tmp_path, capsys):
    from onevision.eval.tasks import TASKS_DIR

    assert main(["eval", "prepare-demo", "--data", str(demo["data"]), "--output", str(tmp_path)]) == 0
    folder = tmp_path / "onevision_demo"
    shipped = {p.name for p in (TASKS_DIR / "onevision_demo").iterdir() if p.suffix == ".yaml"}
    assert shipped <= {p.name for p in folder.iterdir()} and "onevision_demo.yaml" in shipped
    rows = [json.loads(x) for x in (folder / "video_coarse.jsonl").read_text().splitlines()]
    assert rows and all(Path(r["video"]).is_file() and r["answer"] in r["choices"] for r in rows)
    assert main(["eval", "prepare-demo", "--data", str(tmp_path / "nothing"), "--output", str(tmp_path)]) == 2
