"""One error hierarchy (issue #14 point 4): every onevision error derives from ``OneVisionError``, keeps the builtin
base its callers catch, and the command line prints it as one line with exit status 2."""

from __future__ import annotations

import pytest

import onevision
import onevision.errors as errors
import onevision.train
from onevision.cli import main


def test_model_and_training_checkpoint_errors_are_one_class():
    assert onevision.train.CheckpointError is onevision.CheckpointError is errors.CheckpointError


@pytest.mark.parametrize(
    ("name", "builtin"),
    [
        ("ConfigError", ValueError),
        ("InputError", ValueError),
        ("CheckpointError", ValueError),
        ("RecipeError", ValueError),
        ("ComponentError", ValueError),
        ("DataError", ValueError),
        ("MediaError", ValueError),
        ("MediaPathError", ValueError),
        ("SyntheticDataError", ValueError),
        ("TrainingError", RuntimeError),
    ],
)
def test_every_error_derives_from_the_base_and_keeps_its_builtin_base(name, builtin):
    cls = getattr(errors, name)
    assert issubclass(cls, errors.OneVisionError) and issubclass(cls, builtin)


def test_the_training_modules_raise_the_classes_of_onevision_errors():
    from onevision.train import data, engine, optim, recipe, synthetic

    assert recipe.RecipeError is errors.RecipeError and optim.ComponentError is errors.ComponentError
    assert (data.DataError, data.MediaError, data.MediaPathError) == (
        errors.DataError,
        errors.MediaError,
        errors.MediaPathError,
    )
    assert synthetic.SyntheticDataError is errors.SyntheticDataError
    assert engine.TrainingError is errors.TrainingError


def _run(capsys, *argv):
    code = main(list(argv))
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_a_checkpoint_error_from_a_command_is_one_line_exit_2(tmp_path, capsys):
    code, lines = _run(capsys, "convert", str(tmp_path), str(tmp_path))
    assert code == 2 and lines == ["onevision convert: error: source and destination are the same directory"]


def test_a_training_error_from_a_command_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    import onevision.train.engine

    def diverge(recipe, **_kwargs):
        raise errors.TrainingError(f"{recipe.name}: 2 consecutive steps with a non-finite loss")

    monkeypatch.setattr(onevision.train.engine, "train", diverge)
    code, lines = _run(capsys, "train", "tiny/stage1", f"output_dir={tmp_path / 'out'}")
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("onevision train: error: ") and "2 consecutive steps" in lines[0]


def test_a_training_error_with_debug_adds_the_traceback(tmp_path, capsys, monkeypatch):
    import onevision.train.engine

    def diverge(recipe, **_kwargs):
        raise errors.TrainingError("stopped")

    monkeypatch.setattr(onevision.train.engine, "train", diverge)
    code, lines = _run(capsys, "--debug", "train", "tiny/stage1", f"output_dir={tmp_path / 'out'}")
    assert code == 2 and lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == "onevision train: error: stopped"
