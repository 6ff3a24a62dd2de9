"""Continuous batching for our transformers engine: requests that arrive together share the
model's forward passes, and a request arriving mid-way joins at the next step instead of
waiting for the others to finish (Open WebUI's 1,000-token title request no longer holds the
next chat turn).

One thread runs the loop. A new request's prompt is prefilled on its own, then its KV cache
is left-padded into the running batch's (a plain ``DynamicCache``; the attention mask hides
the padding, each row has its own positions); a finished or cancelled row is dropped from it.
Each row keeps what ``generate`` would have given it alone: its own sampling (the same
processors, in ``generate``'s order, from the model's generation config under the request's),
its own seeded generator, stop strings, end-of-turn ids, ``max_tokens``, log-probabilities and
cancellation. A step that fails answers every request in it with the error and the loop goes
on with an empty batch.

On the CPU a decode step's linear layers run in whichever of two forms is faster for their few
rows (:mod:`tifa_lite.serving.decode_linear`: the CPU BLAS is pathological for a few rows).

Models whose cache is not a plain per-layer one (sliding-window or hybrid layers) cannot be
left-padded this way; :func:`supports` says so and the server then generates one request at a
time with ``generate``.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from tifa_lite.serving import decode_linear
from tifa_lite.serving.generation import TokenLogprob, TokenSink, stop_hit

log = logging.getLogger(__name__)

def supports(model) -> bool:
    """Whether the model's KV cache is plain per-layer tensors that can be padded and joined."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # an exotic config: no batching
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers) and not model.config.is_encoder_decoder


@dataclass
class _Row:
    job: Any
    sink: TokenSink
    index: int  # which of the job's n replies
    tokens: list[int]  # prompt and reply so far
    generator: torch.Generator
    processors: list
    greedy: bool
    max_new: int | None
    adapter: str | None = None
    generated: int = 0


@dataclass
class _Pending:
    job: Any
    sink: TokenSink
    future: Future = field(default_factory=Future)
    remaining: int = 0  # its rows still in the batch


class Batcher:
    def __init__(self, session, eos_ids: set[int], max_batch: int, max_queue: int, on_done=None):
        self.session, self.model = session, session.model
        self.eos_ids = eos_ids
        self.max_batch, self.max_queue = max_batch, max_queue
        self.on_done = on_done  # (job, started, error or None): the server's counts
        self.pending: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self.waiting = 0
        self.rows: list[_Row] = []
        self.cache = None
        self.mask: torch.Tensor | None = None
        self.last: torch.Tensor | None = None  # each row's newest token, fed at the next step
        self.live: dict[int, _Pending] = {}
        self.mixed_adapters = False  # several adapters on the base: every row names its own
        self._lock = threading.Lock()
        self._wake = threading.Event()
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        parameters = inspect.signature(base.forward).parameters
        self._keeps_logits = "logits_to_keep" in parameters
        # transformers 5.2x renames past_key_values to cache
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"
        # a decode step's few rows: on the CPU each linear layer runs the faster of two forms
        decode_linear.install(self.model)
        self.linear_forms = True  # False: F.linear throughout (benchmarks compare the two)
        self._thread = threading.Thread(target=self._loop, name="tifa-batcher", daemon=True)
        self._thread.start()

    # --- the requests' side ------------------------------------------------------------------
    def submit(self, job, sink: TokenSink) -> Future:
        from tifa_lite.serving.requests import BadRequest

        with self._lock:
            if self.waiting >= self.max_queue:
                raise BadRequest(f"the server has {self.waiting} requests waiting or running, its limit "
                                 "(serve --max-queue); try again shortly", status=503, kind="server_error")
            self.waiting += 1
        item = _Pending(job, sink)
        self.pending.put(item)
        self._wake.set()
        return item.future

    # --- the loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            if not self.rows and self.pending.empty():
                self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self._admit()
                if self.rows:
                    self._step()
            except Exception as exc:  # a failed step fails its requests; the server goes on
                log.exception("batched generation failed")
                self._fail_all(exc)

    def _admit(self) -> None:
        while len(self.rows) < self.max_batch:
            try:
                item = self.pending.get_nowait()
            except queue.Empty:
                return
            if item.job.cancel.is_set():  # left before its turn came: never start
                self._finish(item, None)
                continue
            try:
                self._prefill(item)
            except Exception as exc:
                log.exception("prefill failed")
                self.live.pop(id(item.job), None)
                self._finish(item, None, exc)

    def _rows_for(self, item: _Pending, prompt: list[int]) -> list[_Row]:
        from transformers import (
            MinPLogitsWarper, RepetitionPenaltyLogitsProcessor, SequenceBiasLogitsProcessor,
            TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, TypicalLogitsWarper,
        )

        from tifa_lite.conversation.logits import OpenAIPenalties, sequence_bias
        from tifa_lite.conversation.session import generation_kwargs

        job = item.job
        session = job.session or self.session
        asked = generation_kwargs({**session.sampling, **job.kwargs})
        config = copy.deepcopy(self.model.generation_config)
        config.update(**asked)
        # generate()'s order: penalties and biases, the caller's processors, then the warpers
        processors: list = []
        if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
        if job.kwargs.get("logit_bias"):
            processors.append(SequenceBiasLogitsProcessor(
                sequence_bias=sequence_bias(job.kwargs["logit_bias"], session.vocab_size())))
        processors += list(job.processors)
        presence, frequency = job.kwargs.get("presence_penalty") or 0.0, job.kwargs.get("frequency_penalty") or 0.0
        if presence or frequency:
            processors.append(OpenAIPenalties(len(prompt), presence, frequency))
        greedy = not config.do_sample
        if not greedy:
            if config.temperature is not None and config.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(config.temperature))
            if config.top_k:
                processors.append(TopKLogitsWarper(top_k=config.top_k))
            if config.top_p is not None and config.top_p < 1.0:
                processors.append(TopPLogitsWarper(top_p=config.top_p))
            if config.min_p is not None:
                processors.append(MinPLogitsWarper(min_p=config.min_p))
            if config.typical_p is not None and config.typical_p < 1.0:
                processors.append(TypicalLogitsWarper(mass=config.typical_p))
        generator = torch.Generator(device="cpu")
        seed = job.kwargs.get("seed", session.seed)
        generator.manual_seed(seed) if seed is not None else generator.seed()
        return [_Row(job, item.sink, i, list(prompt), generator, processors, greedy, config.max_new_tokens,
                     adapter=getattr(job, "adapter", None)) for i in range(job.n)]

    def _forward(self, **inputs):
        kwargs = {} if self._keeps_logits else {"logits_to_keep": None}
        if self.mixed_adapters:  # PEFT's mixed-adapter batch: each row through its own LoRA or none
            kwargs["adapter_names"] = [row.adapter or "__base__" for row in self.rows]
        forms = decode_linear.active() if self.linear_forms else contextlib.nullcontext()
        with self.session.generation_lock, torch.no_grad(), forms:
            return self.model(**{k: v for k, v in {**inputs, **kwargs}.items() if v is not None}, use_cache=True)

    def _prefill(self, item: _Pending) -> None:
        from transformers import DynamicCache

        job = item.job
        device = self.model.device
        ids = job.inputs["input_ids"].to(device)
        prompt = ids[0].tolist()
        rows = self._rows_for(item, prompt)
        cache = DynamicCache(config=self.model.config)
        saved, self.rows = self.rows, rows[:1]  # _forward reads the adapters of the rows it runs
        try:
            out = self._forward(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1,
                                **{self._cache_arg: cache})
        finally:
            self.rows = saved
        if job.n > 1:
            cache.batch_repeat_interleave(job.n)
        logits = out.logits[:, -1].float().expand(job.n, -1)
        mask = torch.ones(job.n, ids.shape[1], dtype=torch.long, device=device)
        self._join(cache, mask)
        self.rows += rows
        item.remaining = len(rows)
        self.live[id(job)] = item
        item.sink.put(ids)  # the prompt first, as generate hands it over
        self._pick(rows, logits, offset=len(self.rows) - len(rows))

    def _join(self, cache, mask: torch.Tensor) -> None:
        """Left-pad the new rows' cache or the batch's to the same length and stack them."""
        if self.cache is None or not self.rows:
            self.cache, self.mask = cache, mask
            self.last = torch.zeros(0, dtype=torch.long, device=mask.device)
            return
        old, new = self.mask.shape[1], mask.shape[1]
        width = max(old, new)
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([_pad_left(mine.keys, width - old), _pad_left(theirs.keys, width - new)], 0)
            mine.values = torch.cat([_pad_left(mine.values, width - old), _pad_left(theirs.values, width - new)], 0)
        self.mask = torch.cat([_pad_left_2d(self.mask, width - old), _pad_left_2d(mask, width - new)], 0)

    def _step(self) -> None:
        device = self.model.device
        positions = self.mask.sum(-1, keepdim=True)  # each row's next position: its own length
        self.mask = torch.cat([self.mask, torch.ones(len(self.rows), 1, dtype=torch.long, device=device)], 1)
        out = self._forward(input_ids=self.last[:, None], attention_mask=self.mask, position_ids=positions,
                            logits_to_keep=1, **{self._cache_arg: self.cache})
        self._pick(self.rows, out.logits[:, -1].float(), offset=0)

    def _pick(self, rows: list[_Row], logits: torch.Tensor, offset: int) -> None:
        """Each row's next token from its logits; then drop the rows that are done."""
        chosen = []
        for i, row in enumerate(rows):
            ids = torch.tensor([row.tokens], device=logits.device)
            scores = logits[i: i + 1]
            for processor in row.processors:
                scores = processor(ids, scores)
            if row.greedy:
                token = int(scores.argmax(-1))
            else:
                probs = torch.softmax(scores, -1).cpu()
                token = int(torch.multinomial(probs, 1, generator=row.generator))
            row.tokens.append(token)
            row.generated += 1
            entry = None
            if row.job.logprobs is not None:
                logprobs = torch.log_softmax(logits[i], -1).cpu()
                top = []
                if row.job.logprobs:
                    values, top_ids = logprobs.topk(row.job.logprobs)
                    top = list(zip(top_ids.tolist(), values.tolist()))
                entry = TokenLogprob(token, float(logprobs[token]), top)
            row.sink.record(row.index, token, entry)
            chosen.append(token)
        new_last = torch.tensor(chosen, dtype=torch.long, device=logits.device)
        self.last = torch.cat([self.last[:offset], new_last]) if offset else new_last
        for row in rows:
            row.sink.notify()
        self._retire()

    def _retire(self) -> None:
        keep = []
        for i, row in enumerate(self.rows):
            state = row.sink.rows[row.index]
            if not state.done and row.sink.stop and stop_hit(row.sink, state.tokens):
                state.done = "stop"
            over = row.job.cancel.is_set() or (row.max_new is not None and row.generated >= row.max_new)
            if not (state.done or over):
                keep.append(i)
        if len(keep) == len(self.rows):
            return
        gone = [row for i, row in enumerate(self.rows) if i not in set(keep)]
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.rows = [self.rows[i] for i in keep]
        self.last = self.last[index]
        self.mask = self.mask[index]
        if self.rows:
            self.cache.batch_select_indices(index)
            # columns that are padding in every row left are dropped with them
            start = int((self.mask.cumsum(-1) == 0).sum(-1).min())
            if start:
                self.mask = self.mask[:, start:]
                for layer in self.cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
        else:
            self.cache = self.mask = self.last = None
        for row in gone:
            item = self.live.get(id(row.job))
            item.remaining -= 1
            if not item.remaining:
                del self.live[id(row.job)]
                self._finish(item, row)

    def _finish(self, item: _Pending, row: _Row | None, error: Exception | None = None) -> None:
        with self._lock:
            self.waiting -= 1
        choices = None
        if row is not None:
            choices = item.sink.choices(row.max_new, item.job.cancel.is_set(), item.job.logprobs is not None)
        if self.on_done is not None:  # counted before anyone waiting on the future looks
            self.on_done(item.job, row is not None or error is not None, error, choices)
        item.sink.end()
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(choices)

    def _fail_all(self, exc: Exception) -> None:
        items = list(self.live.values())
        self.rows, self.live = [], {}
        self.cache = self.mask = self.last = None
        for item in items:
            self._finish(item, None, exc)


def _pad_left(states: torch.Tensor, width: int) -> torch.Tensor:
    if not width:
        return states
    pad = states.new_zeros(*states.shape[:2], width, states.shape[3])
    return torch.cat([pad, states], 2)


def _pad_left_2d(mask: torch.Tensor, width: int) -> torch.Tensor:
    return torch.cat([mask.new_zeros(mask.shape[0], width), mask], 1) if width else mask
