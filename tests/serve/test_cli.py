"""``onevision serve`` option checks: bad values are refused with one line (exit 2) before any model loads."""

from __future__ import annotations

import pytest

from onevision.cli import main
from onevision.commands.serve import parse_models
from onevision.serve.media import parse_per_prompt


def _serve(capsys, *args) -> tuple[int, str]:
    try:
        code = main(["serve", *args])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "70000"], "from 0 to 65535"),
        (["--max-batch-size", "0"], "at least 1"),
        (["--batch-window-ms", "-1"], ">= 0"),
        (["--request-timeout", "0"], "> 0"),
        (["--limit-media-per-prompt", "image=two"], "whole number"),
        (["--limit-media-per-prompt", "audio=1"], "unknown media kind"),
        (["--allowed-local-media-path", "/no/such/dir"], "no such directory"),
    ],
)
def test_bad_options_exit_2_with_one_line(capsys, model_dir, args, says):
    code, err = _serve(capsys, "--model", str(model_dir), *args)
    assert code == 2
    assert says in err


def test_the_same_name_twice_is_refused(capsys, model_dir):
    code, err = _serve(capsys, "--model", f"a={model_dir}", "--model", f"a={model_dir}")
    assert code == 2 and "given twice" in err


def test_model_names():
    assert parse_models(["tiny=/x/y", "/x/z", "org/model-id"]) == {
        "tiny": "/x/y",
        "/x/z": "/x/z",
        "org/model-id": "org/model-id",
    }


def test_default_name_is_the_directory_name(model_dir):
    assert parse_models([str(model_dir)]) == {model_dir.name: str(model_dir)}


def test_per_prompt_limits():
    assert parse_per_prompt("image=4") == {"image": 4, "video": 1}
    assert parse_per_prompt('{"image": 2, "video": 0}') == {"image": 2, "video": 0}
    with pytest.raises(ValueError, match="KIND=N"):
        parse_per_prompt("image")
    with pytest.raises(ValueError, match=">= 0"):
        parse_per_prompt("video=-1")
