"""Typed errors. All are ``ValueError`` subclasses, so the CLI reports them as one clear line."""

from __future__ import annotations

from collections.abc import Iterable


class OneVisionError(ValueError):
    """Base class of every onevision error."""


class ConfigError(OneVisionError):
    """An invalid or inconsistent configuration; the message names the field."""


class UnknownComponentError(ConfigError):
    """A component type that no registry knows; the message lists the supported ones."""

    def __init__(self, kind: str, value: object, supported: Iterable[str]):
        self.kind = kind
        self.value = value
        self.supported = sorted(supported)
        super().__init__(f"unknown {kind} {value!r}; supported: {', '.join(self.supported)}")


class InputError(OneVisionError):
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


class CheckpointError(OneVisionError):
    """A checkpoint that cannot be loaded as asked (unknown layout, missing or unexpected weights)."""


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


def _preview(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
