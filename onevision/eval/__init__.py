"""Evaluation: the lmms-eval model ``onevision`` (:mod:`onevision.eval.lmms_model`, registered through the
``lmms_eval.models`` entry point), ``onevision eval`` (:mod:`onevision.eval.runner`), the shipped local tasks
(:mod:`onevision.eval.tasks`, :mod:`onevision.eval.demo_tasks`) and judged LLaVA-Bench-style scores
(:mod:`onevision.eval.judge`). Needs the ``eval`` extra; see ``docs/evaluation.md``."""
