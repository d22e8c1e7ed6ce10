"""lmms-eval model registration (entry point group ``lmms_eval.models``), import-light on purpose."""

from __future__ import annotations


def manifest():
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="onevision", simple_class_path="onevision.eval.lmms_model.OneVisionLMM")
