"""The one error hierarchy of onevision: every error the library raises on purpose derives from OneVisionError.

Each class also keeps the builtin base callers already catch (``ValueError`` for bad configs, inputs, checkpoints,
recipes and data; ``RuntimeError`` for a training run that cannot go on). The command line prints any
:data:`USER_ERRORS` as one line and exits with status 2.

    OneVisionError
    ├── ConfigError (ValueError) ── UnknownComponentError
    ├── InputError (ValueError) ── ContextOverflowError
    ├── CheckpointError (ValueError) ── KeyMismatchError, ExportError
    ├── RecipeError (ValueError) ── ComponentError
    ├── DataError (ValueError) ── MediaError, MediaPathError, SyntheticDataError
    └── TrainingError (RuntimeError)
"""

from __future__ import annotations

from collections.abc import Iterable


class OneVisionError(Exception):
    """Base class of every onevision error; the message says what is wrong and what to do."""


class ConfigError(OneVisionError, ValueError):
    """An invalid or inconsistent configuration; the message names the field."""


class UnknownComponentError(ConfigError):
    """A component type that no registry knows; the message lists the supported ones."""

    def __init__(self, kind: str, value: object, supported: Iterable[str]):
        self.kind = kind
        self.value = value
        self.supported = sorted(supported)
        super().__init__(f"unknown {kind} {value!r}; supported: {', '.join(self.supported)}")


class InputError(OneVisionError, ValueError):
    """Inputs that do not fit together (e.g. more ``<image>`` tags than images)."""


class ContextOverflowError(InputError):
    """A prompt whose text plus exact visual token counts exceeds the model's context budget."""

    def __init__(self, sample: int, total: int, budget: int, visual: int, text: int):
        self.sample, self.total, self.budget, self.visual, self.text = sample, total, budget, visual, text
        super().__init__(
            f"sample {sample}: {total} tokens ({visual} visual + {text} text) exceed the context budget of "
            f"{budget} tokens; visual spans are never truncated: use fewer or smaller images, fewer video frames, "
            "a shorter prompt, or a larger max_length"
        )


class CheckpointError(OneVisionError, ValueError):
    """A model checkpoint or a training checkpoint that cannot be used as asked (unknown layout, missing or
    unexpected weights, incomplete, damaged, or from another recipe)."""


class KeyMismatchError(CheckpointError):
    """Weights missing from, or unexpected in, a checkpoint; both lists are named."""

    def __init__(self, source: str, missing: Iterable[str], unexpected: Iterable[str]):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {_preview(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {_preview(self.unexpected)}")
        super().__init__(f"{source}: weights do not match the model ({'; '.join(parts)})")


class ExportError(CheckpointError):
    """A model that the requested format cannot represent; the message says which setting."""


class RecipeError(OneVisionError, ValueError):
    """A recipe is invalid. ``source`` is the file (or ``"command line"``) and ``key`` the dotted field."""

    def __init__(self, source: str | None, key: str | None, message: str):
        self.source = source
        self.key = key
        where = ": ".join(p for p in (source, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class ComponentError(RecipeError):
    """The recipe's components do not fit the model (empty trainable group, overlapping or uncovered parameters)."""


class DataError(OneVisionError, ValueError):
    """Invalid training data: names the file (and record) and what is wrong."""


class MediaError(DataError):
    """A media file of one sample cannot be read."""


class MediaPathError(DataError):
    """A record's media path is absolute or leaves its data root (refused unless ``data.allow_outside_roots``)."""


class SyntheticDataError(DataError):
    """``data.path`` names a place the synthetic generator may not write to (the message says what to do)."""


class TrainingError(OneVisionError, RuntimeError):
    """Training cannot go on (e.g. ``train.max_bad_steps`` consecutive non-finite steps); the last good
    checkpoint is kept and the stage is not marked finished."""


#: What the command line reports as one line with exit status 2: our errors, and the builtin ones that mean bad
#: input (a ``ValueError`` from a library, a missing file).
USER_ERRORS: tuple[type[BaseException], ...] = (OneVisionError, ValueError, FileNotFoundError)


def _preview(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
