"""The lmms-eval model ``onevision``: any checkpoint ``onevision.load`` reads, evaluated by the lmms-eval harness.

    python -m lmms_eval --model onevision --model_args pretrained=PATH,dtype=bfloat16,device=cuda,max_frames=32 \\
        --tasks mme --batch_size 8 --output_path out/ --log_samples

Registered through the ``lmms_eval.models`` entry point (see :mod:`onevision.eval.registration`). Every request goes
through the public pipeline: ``generate_until`` calls ``Pipeline.batch`` with exactly the request
``Pipeline.generate(context, images=..., videos=...)`` builds (same processor, template and media order), so a logged
response equals ``pipe.generate``'s answer for the same prompt and media. ``loglikelihood`` scores a continuation
after the same generation prompt with the model's forward pass.

Model arguments: ``pretrained`` (required: a checkpoint directory or hub id), ``dtype`` (``auto`` | ``float32`` |
``bfloat16`` | ``float16``), ``device`` (default ``cuda`` when available, else ``cpu``), ``batch_size``,
``max_frames`` (frames sampled per video; default: the checkpoint's video policy), ``max_new_tokens`` (default
when a task sets none, 256), ``system`` (a system prompt), ``seed`` (for sampled generation).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

#: file suffixes read as videos when a task's ``doc_to_visual`` returns a path
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".flv", ".wmv", ".mpg", ".mpeg", ".gif")
DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}
#: generation keys that lmms-eval tasks set for other models; they have no meaning here and are ignored
IGNORED_GEN_KEYS = frozenset({"image_aspect_ratio", "modalities", "use_cache", "num_beams", "image_sizes"})


class OneVisionLMM(lmms):
    """lmms-eval adapter around :class:`onevision.Pipeline` (single image, multi-image, video and text-only)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int | str | None = 1,
        max_frames: int | str | None = None,
        max_new_tokens: int | str = 256,
        system: str | None = None,
        seed: int | str | None = None,
        max_batch_size: Any = None,  # passed by lmms-eval's CLI; not used (no automatic batch sizing)
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise ValueError(
                f"onevision: unknown model_args {sorted(unknown)} (accepted: pretrained, dtype, device, "
                "batch_size, max_frames, max_new_tokens, system, seed)"
            )
        if not pretrained:
            raise ValueError("onevision: model_args needs pretrained=PATH (a checkpoint directory or hub id)")
        import torch

        import onevision

        if device in (None, "", "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype_name = str(dtype or "auto").lower()
        if dtype_name != "auto" and dtype_name not in DTYPES:
            raise ValueError(
                f"onevision: dtype must be auto or one of {sorted(set(DTYPES.values()))}, got {dtype!r}"
            )
        torch_dtype = None if dtype_name == "auto" else getattr(torch, DTYPES[dtype_name])
        try:
            self.pipe = onevision.load(str(pretrained), device=device, dtype=torch_dtype)
        except Exception as exc:  # lmms-eval's CLI only logs errors: say plainly what failed
            raise RuntimeError(f"onevision: cannot load pretrained={pretrained!r}: {exc}") from exc
        self.pretrained = str(pretrained)
        self._device = torch.device(device)
        self.batch_size_per_gpu = _positive_int(batch_size, "batch_size", default=1)
        self.max_frames = (
            None if max_frames in (None, "", "None") else _positive_int(max_frames, "max_frames")
        )
        self.max_new_tokens = _positive_int(max_new_tokens, "max_new_tokens")
        self.system = system or None
        self.seed = None if seed in (None, "", "None") else int(seed)

    # -- lmms properties --------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> Any:
        return self._device

    @property
    def model(self) -> Any:
        return self.pipe.model

    @property
    def tokenizer(self) -> Any:
        return self.pipe.processor.tokenizer

    # -- requests -> pipeline requests ------------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        return self.task_dict[task][split][doc_id]

    def _visuals(self, doc_to_visual: Callable | None, task: str, split: str, doc_id: int) -> list[Any]:
        if doc_to_visual is None:
            return []
        return _flatten(doc_to_visual(self._doc(task, split, doc_id)))

    def request(self, context: str, visuals: Sequence[Any]) -> dict[str, Any]:
        """The ``Pipeline.batch`` request for one prompt and its media: what ``pipe.generate`` builds."""
        images, videos = split_media(visuals)
        messages: list[dict[str, Any]] = (
            [] if self.system is None else [{"role": "system", "content": self.system}]
        )
        messages.append({"role": "user", "content": context})
        return {"messages": messages, "images": images, "videos": videos}

    def generation_options(self, gen_kwargs: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
        """lmms-eval ``generation_kwargs`` -> (``Pipeline`` options, stop strings)."""
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None)
        stops = [until] if isinstance(until, str) else [s for s in (until or ()) if s]
        options: dict[str, Any] = {"max_new_tokens": int(kwargs.pop("max_new_tokens", self.max_new_tokens))}
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        do_sample = kwargs.pop("do_sample", None)
        if do_sample is False:
            temperature = 0.0
        elif do_sample is True and temperature <= 0:
            temperature = 1.0
        options["temperature"] = temperature
        if temperature > 0:
            for key in ("top_p", "top_k"):
                if kwargs.get(key) is not None:
                    options[key] = kwargs[key]
            if self.seed is not None:
                options["seed"] = self.seed
        kwargs.pop("top_p", None)
        kwargs.pop("top_k", None)
        if kwargs.get("repetition_penalty") not in (None, 1, 1.0):
            options["repetition_penalty"] = float(kwargs["repetition_penalty"])
        kwargs.pop("repetition_penalty", None)
        beams = kwargs.get("num_beams")
        if beams not in (None, 1, "1"):
            raise ValueError(f"onevision: num_beams={beams} is not supported (greedy or sampling only)")
        unknown = sorted(set(kwargs) - IGNORED_GEN_KEYS)
        if unknown:
            raise ValueError(f"onevision: unsupported generation_kwargs {unknown}")
        if self.max_frames is not None:
            options["num_frames"] = self.max_frames
        return options, stops

    # -- generate_until ---------------------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy or sampled answers (stop strings cut the answer), batched by generation settings."""
        jobs = []
        for req in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args[:6]
            jobs.append((context, gen_kwargs, self._visuals(doc_to_visual, task, split, doc_id)))
        answers = self._generate_jobs(jobs, desc="onevision generate")
        for req, answer in zip(requests, answers):
            self.cache_hook.add_partial("generate_until", (req.args[0], req.args[1]), answer)
        return answers

    def _generate_jobs(self, jobs: list[tuple[str, Any, list[Any]]], desc: str | None = None) -> list[str]:
        """Answers for ``(context, generation_kwargs, visuals)``, in order; one ``Pipeline.batch`` per settings."""
        groups: dict[str, list[int]] = {}
        settings: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for i, (_, gen_kwargs, _) in enumerate(jobs):
            options, stops = self.generation_options(gen_kwargs)
            key = repr(sorted(options.items())) + repr(stops)
            groups.setdefault(key, []).append(i)
            settings[key] = (options, stops)
        out: list[str] = [""] * len(jobs)
        bar = tqdm(total=len(jobs), desc=desc, disable=desc is None or self.rank != 0)
        for key, indices in groups.items():
            options, stops = settings[key]
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                batch = [self.request(jobs[i][0], jobs[i][2]) for i in chunk]
                answers = self.pipe.batch(batch, batch_size=self.batch_size, **options)
                for i, answer in zip(chunk, answers):
                    out[i] = cut_at_stops(answer, stops)
                bar.update(len(chunk))
        bar.close()
        return out

    # -- generate_until_multi_round ---------------------------------------------------------------------------
    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """Rounds as lmms-eval defines them: round 0 answers the request's context and visuals; then the task's
        ``doc_to_text(doc, previous_output=[answers so far], round_idx=i, previous_round_info=info)`` returns
        ``(visuals, context, terminal, round_results, info)`` for the next round, until ``terminal``. Each round is
        a fresh prompt (the task carries any history it wants in its context); the result per request is the task's
        ``round_results`` (by default every round's answer)."""
        states = []
        for req in requests:
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = req.args[:7]
            states.append(
                {
                    "doc": self._doc(task, split, doc_id),
                    "doc_to_text": doc_to_text,
                    "gen_kwargs": {k: v for k, v in dict(gen_kwargs or {}).items() if k != "until"},
                    "until": dict(gen_kwargs or {}).get("until"),
                    "context": context,
                    "visuals": self._visuals(doc_to_visual, task, split, doc_id),
                    "answers": [],
                    "result": None,
                    "info": None,
                    "done": False,
                }
            )
        round_idx = 0
        bar = tqdm(desc="onevision multi-round", disable=self.rank != 0)
        while True:
            active = [s for s in states if not s["done"]]
            if not active:
                break
            jobs = [
                (
                    s["context"],
                    {**s["gen_kwargs"], **({"until": s["until"]} if s["until"] else {})},
                    s["visuals"],
                )
                for s in active
            ]
            for s, answer in zip(active, self._generate_jobs(jobs)):
                s["answers"].append(answer)
                s["result"] = list(s["answers"])
            round_idx += 1
            bar.update(1)
            for s in active:
                visuals, context, terminal, round_results, info = s["doc_to_text"](
                    s["doc"],
                    previous_output=list(s["answers"]),
                    round_idx=round_idx,
                    previous_round_info=s["info"],
                )
                if round_results is not None:
                    s["result"] = list(round_results)
                if terminal:
                    s["done"] = True
                    continue
                s["visuals"], s["context"], s["info"] = _flatten(visuals), context, info
        bar.close()
        results = [s["result"] for s in states]
        for req, result in zip(requests, results):
            self.cache_hook.add_partial("generate_until_multi_round", (req.args[0], req.args[1]), result)
        return results

    # -- loglikelihood ----------------------------------------------------------------------------------------
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """``(sum of log p(continuation tokens | prompt), whether greedy decoding yields them)`` per request.

        The prompt is the chat-templated user turn with its media and the generation prompt (the exact prefix
        ``pipe.generate`` answers after); the continuation's tokens follow it as the assistant's answer text."""
        import torch

        items = []
        for req in requests:
            args = req.args
            if len(args) >= 6:
                context, continuation, doc_to_visual, doc_id, task, split = args[:6]
                if callable(continuation):  # output_type loglikelihood passes doc_to_target
                    continuation = continuation(self._doc(task, split, doc_id))
                visuals = self._visuals(doc_to_visual, task, split, doc_id)
            else:  # ("", choice): the unconditional scores of acc_mutual_info
                context, continuation = args[0], args[1]
                visuals = []
            items.append((context, str(continuation), visuals))
        out: list[tuple[float, bool]] = []
        bar = tqdm(total=len(items), desc="onevision loglikelihood", disable=self.rank != 0)
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            with torch.no_grad():
                out.extend(self.score(chunk))
            bar.update(len(chunk))
        bar.close()
        for req, result in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", (req.args[0], req.args[1]), result)
        return [_as_response(result) for result in out]

    def continuation_ids(self, continuation: str) -> list[int]:
        """Token ids of a continuation as answer text (no special tokens added)."""
        return list(self.tokenizer(continuation, add_special_tokens=False)["input_ids"])

    def score(self, chunk: Sequence[tuple[str, str, Sequence[Any]]]) -> list[tuple[float, bool]]:
        """Log-likelihoods of one batch of ``(context, continuation, visuals)`` (right-padded forward pass)."""
        import torch

        processor = self.pipe.processor
        samples, spans = [], []
        for context, continuation, visuals in chunk:
            r = self.request(context, visuals)
            sample = self.pipe.prompt_sample(
                r["messages"], r["images"], r["videos"], num_frames=self.max_frames
            )
            cont = torch.tensor(self.continuation_ids(continuation), dtype=torch.long)
            if cont.numel() == 0:
                raise ValueError(f"onevision: empty continuation {continuation!r} has no tokens to score")
            n_ctx = int(sample["input_ids"].shape[0])
            sample["input_ids"] = torch.cat([sample["input_ids"], cont])
            samples.append(sample)
            spans.append((n_ctx, cont))
        inputs = processor.collate(samples, padding_side="right").to(
            self.pipe.model.device, self.pipe.model.dtype
        )
        logits = self.pipe.model(**inputs).logits.float()
        results = []
        for row, (n_ctx, cont) in enumerate(spans):
            # the logits at position t predict token t + 1
            step = logits[row, n_ctx - 1 : n_ctx - 1 + cont.numel()]
            logprobs = torch.log_softmax(step, dim=-1)
            target = cont.to(logprobs.device)
            total = float(logprobs.gather(1, target[:, None]).sum())
            greedy = bool((step.argmax(dim=-1) == target).all())
            results.append((total, greedy))
        return results


def _tuples_survive() -> bool:
    """Whether this lmms-eval keeps a ``(float, bool)`` response as it is: 0.7.x passes every response through
    ``unwrap_generation_output``, which turns such a tuple into its ``str()`` (and breaks multiple_choice)."""
    try:
        from lmms_eval.api.instance import unwrap_generation_output
    except ImportError:  # older lmms-eval: responses are stored as returned
        return True
    return unwrap_generation_output((0.0, True))[0] == (0.0, True)


_TUPLES_SURVIVE = _tuples_survive()


def _as_response(result: tuple[float, bool]) -> Any:
    """A log-likelihood result as a response the installed lmms-eval stores as the ``(float, bool)`` tuple."""
    if _TUPLES_SURVIVE:
        return result
    from lmms_eval.api.instance import GenerationResult

    return GenerationResult(text=result)  # unwrapped to ``.text``, the tuple itself


def split_media(visuals: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """Images (PIL images, image paths, HWC arrays) and videos (video paths, ``video.Clip``, THWC frame arrays)."""
    images, videos = [], []
    for v in visuals:
        if isinstance(v, (str, os.PathLike)):
            (videos if str(v).lower().endswith(VIDEO_SUFFIXES) else images).append(str(v))
        elif isinstance(v, dict):
            raise ValueError(
                f"onevision: unsupported visual {sorted(v)} (audio and dict inputs are not supported)"
            )
        elif getattr(v, "ndim", None) == 4 or type(v).__name__ == "Clip":
            videos.append(v)
        else:
            images.append(v)
    return images, videos


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string (lmms-eval's ``until``)."""
    cut = len(text)
    for stop in stops:
        at = text.find(stop)
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


def _flatten(visuals: Any) -> list[Any]:
    if visuals is None:
        return []
    if isinstance(visuals, (list, tuple)):
        out = []
        for v in visuals:
            out.extend(_flatten(v))
        return out
    return [visuals]


def _positive_int(value: Any, name: str, default: int | None = None) -> int:
    if value in (None, "", "auto") and default is not None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"onevision: {name} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"onevision: {name} must be a positive integer, got {value!r}")
    return number
