"""The ``vllm`` step-profiler backend: time real vLLM engine steps (when vllm is installed).

It builds ``vllm.LLM(model, load_format="dummy")`` (random weights; vLLM still reads the
model's config.json, from a local path or the Hugging Face cache) with prefix caching off,
and drives its ``LLMEngine`` one ``step()`` at a time:

* decode (B, C): B requests with (C - 1)-token prompts are admitted and prefilled (untimed);
  each timed call is one ``engine.step()`` in which all B decode one token. Contexts grow
  by one token per step, so the reported context is the one at the start of timing.
* prefill (T): each timed call adds one T-token request (max_tokens=1) and runs the step
  that prefills it (``max_num_batched_tokens`` is set to the largest T, so one step does it).
* mixed (T, B, C): the B decoding requests as above, plus one new T-token request per step.

Times are host wall-clock per ``step()`` (the step returns after the GPU work and the output
processing), so they include vLLM's scheduling overhead, as a served request sees it.
This backend could not be run where fluidserve was developed (no vllm on its GPU machine).
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Sequence

import numpy as np

from fluidserve.errors import InputError, require

# tokens a decoding request may still generate: covers warmup + max_reps timed steps
_DECODE_MARGIN = 1024


class VllmBackend:
    """Real vLLM engine steps. ``points`` size the engine (max batch, max tokens, max length)."""

    name = "vllm"

    def __init__(self, model: str, points: Sequence, dtype: str = "bfloat16", gpu_memory_utilization: float = 0.9,
                 seed: int = 0, **engine_kwargs: Any):
        vllm = require("vllm", "vllm")
        if not model:
            raise InputError("vllm backend: give --model (a Hugging Face name or a local model directory)")
        self.vllm = vllm
        self.model_name = model
        self.dtype_name = dtype
        max_len = max(max(p.context_tokens, p.prefill_tokens) for p in points) + _DECODE_MARGIN
        max_seqs = max(p.batch_size for p in points)
        max_tokens = max(max(p.prefill_tokens + p.decode_batch for p in points), max_seqs)
        self.llm = vllm.LLM(
            model=model, dtype=dtype, load_format="dummy", seed=seed, enable_prefix_caching=False,
            max_model_len=max_len, max_num_seqs=max_seqs, max_num_batched_tokens=max_tokens,
            gpu_memory_utilization=gpu_memory_utilization, **engine_kwargs,
        )
        self.engine = self.llm.llm_engine
        self.max_model_len = max_len
        self._ids = itertools.count()
        self._rng = np.random.default_rng(seed)
        self._vocab = int(getattr(self.engine.model_config, "get_vocab_size", lambda: 32000)())
        self._decoding: list[str] = []

    @property
    def meta(self) -> dict[str, Any]:
        import torch

        return {
            "model": self.model_name, "gpu": torch.cuda.get_device_name(0), "dtype": self.dtype_name,
            "backend": self.name, "layers": None, "vllm_version": getattr(self.vllm, "__version__", "?"),
        }

    def fits(self, point) -> bool:
        return max(point.context_tokens, point.prefill_tokens) + _DECODE_MARGIN <= self.max_model_len

    def _add(self, n_tokens: int, max_tokens: int) -> str:
        rid = f"prof-{next(self._ids)}"
        ids = self._rng.integers(100, self._vocab - 100, size=max(n_tokens, 1)).tolist()
        params = self.vllm.SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0.0)
        self.engine.add_request(rid, {"prompt_token_ids": ids}, params)
        return rid

    def prepare(self, point, max_steps: int = 10_000) -> Callable[[], None]:
        self.release()
        T, B, C = point.prefill_tokens, point.decode_batch, point.context_tokens
        self._decoding = [self._add(C - 1, self.max_model_len - C) for _ in range(B)]
        started: set[str] = set()
        for _ in range(max_steps):  # admit and prefill the decoding requests, untimed
            if len(started) >= B:
                break
            for out in self.engine.step():
                if out.outputs and len(out.outputs[0].token_ids) > 0:
                    started.add(out.request_id)
        if not T:
            return self.engine.step

        def step_with_prompt() -> None:
            self._add(T, 1)
            self.engine.step()

        return step_with_prompt

    def release(self) -> None:
        """Abort every request still in the engine."""
        if self._decoding:
            self.engine.abort_request(self._decoding)
            self._decoding = []
        while self.engine.has_unfinished_requests():
            self.engine.step()

    def synchronize(self) -> None:
        """engine.step() is synchronous; nothing to wait for."""

    def time_reps(self, step: Callable[[], None], reps: int) -> np.ndarray:
        out = np.empty(reps)
        for i in range(reps):
            t0 = time.perf_counter()
            step()
            out[i] = (time.perf_counter() - t0) * 1e3
        return out
