"""The batcher's linear layers on the CPU: ``F.linear(x, W)`` or ``(W @ x.T).T``, whichever is
faster for this weight shape and number of rows, timed in place.

Why: a decode step feeds every linear layer one row per live stream, and the CPU BLAS (MKL, as
torch's CPU wheels ship it) is pathological for ``x @ W.T`` with a few rows, while the same
product written ``W @ x.T`` goes through another kernel. Measured on this project's 2-core AMD
EPYC, fp32, on a busy machine (relative numbers only), ms for 1 / 2 / 3 / 4 rows:

    SmolLM2-135M's LM head (49152x576) alone, 2 threads:
        F.linear   9.6 / 37.1 / 48.0 / 17.8        (W @ x.T).T   9.7 / 10.0 / 5.6 / 5.1
    one decode step of SmolLM2-135M, 1 thread, 1 / 2 / 4 rows (the profiler's mm time):
        LM head          F.linear  9.9 / 24.8 / 18.9    (W @ x.T).T  9.9 /  6.2 /  9.9
        210 linears      F.linear 35.7 / 54.9 / 51.1    (W @ x.T).T 36.8 / 26.5 / 45.0
        whole step       F.linear 59   / 98   / 85      (W @ x.T).T 60   / 46   / 68

so two streams cost 1.66x one through ``F.linear`` and less than one through ``W @ x.T``;
the rest of the step (attention over the padded cache, norms, sampling) grows by a few ms.
It is no fixed rule: at 8 rows ``W @ x.T`` loses with one thread (106 vs 98 ms a step) and
wins with two; timed alone on a cache-warm weight it loses for the small layer weights with
one thread (1536x576, 2 rows: 0.168 vs 0.123 ms) although it wins inside the model, where
each weight comes cold from memory. Hence the choice is timed where it runs: the first calls
of each (weight shape, rows, dtype, torch threads) alternate the two forms, each call timed,
and once each form has ``SAMPLES`` calls the faster is kept (``F.linear`` unless the other is
clearly faster). The layers of one shape (30 in SmolLM2) settle within a step, the LM head
within ``2 * SAMPLES`` steps. One row is left to ``F.linear`` (the same matrix-vector kernel
either way, 9.6 vs 9.7 ms above), so a lone stream computes exactly what it did.

Only the serving batcher uses this (:func:`install` on its model, :func:`active` around its
forward passes): training, ``generate`` and other threads see the plain layers. Only plain
``nn.Linear`` layers with fp32 weights on the CPU are routed; CUDA and other devices, other
dtypes and other layer types (4-bit, LoRA wrappers: their base layer is routed) are untouched.
The two forms differ by float rounding only (the sums are blocked differently).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F

MIN_ROWS, MAX_ROWS = 2, 16  # one row: both forms are MKL's gemv; more than 16: a prefill, gemm is fine
SAMPLES = 4  # timed calls of each form before choosing; the fastest counts (the machine may be busy)
MARGIN = 0.9  # W @ x.T must take under 90% of F.linear's time: an unclear timing keeps F.linear
LINEAR, TRANSPOSED = 0, 1

_state = threading.local()  # .on: inside active() on this thread


def plain_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return F.linear(x, weight, bias)


def transposed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a 2-d ``x``, computed as ``(weight @ x.T).T``."""
    # contiguous: the transposed view made the layers after it slower (decode step 75 ms
    # instead of 47 at 2 rows), a cost the timing of this call alone would not see
    out = torch.mm(weight, x.T).T.contiguous()
    return out if bias is None else out + bias


class KernelChoice:
    """Which form runs each (weight shape, rows, dtype, threads): timed on its first calls, then kept."""

    def __init__(self, samples: int = SAMPLES, margin: float = MARGIN, clock=time.perf_counter,
                 forms=(plain_linear, transposed_linear)):
        self.samples, self.margin, self.clock, self.forms = samples, margin, clock, forms
        self.choices: dict[tuple, int] = {}  # settled: LINEAR or TRANSPOSED
        self.trials: dict[tuple, tuple[list[float], list[float]]] = {}  # seconds per form, still timing

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``F.linear`` of a 2-d CPU ``x`` by the settled form, or by the next one to time."""
        key = (tuple(weight.shape), x.shape[0], weight.dtype, torch.get_num_threads())
        form = self.choices.get(key)
        if form is not None:
            return self.forms[form](x, weight, bias)
        times = self.trials.setdefault(key, ([], []))
        form = LINEAR if len(times[LINEAR]) <= len(times[TRANSPOSED]) else TRANSPOSED
        start = self.clock()
        out = self.forms[form](x, weight, bias)
        times[form].append(self.clock() - start)
        if len(times[TRANSPOSED]) >= self.samples:
            faster = min(times[TRANSPOSED]) < self.margin * min(times[LINEAR])
            self.choices[key] = TRANSPOSED if faster else LINEAR
            del self.trials[key]
        return out


def routed(module: torch.nn.Module) -> bool:
    return (type(module) is torch.nn.Linear and module.weight.device.type == "cpu"
            and module.weight.dtype == torch.float32)


def install(model: torch.nn.Module, choice: KernelChoice | None = None) -> int:
    """Route the model's plain fp32 CPU ``nn.Linear`` layers through ``choice`` while
    :func:`active`; returns how many. Layers with a forward of their own (installed already,
    accelerate's offloading hooks) are left as they are."""
    choice = choice or KernelChoice()
    count = 0
    for module in model.modules():
        if routed(module) and "forward" not in vars(module):
            module.forward = _Forward(module, choice)
            count += 1
    return count


def settled(model: torch.nn.Module) -> dict[tuple, str]:
    """What the installed layers chose so far: {(out, in, rows, torch threads): form}, for reports."""
    installed = [vars(m)["forward"] for m in model.modules() if isinstance(vars(m).get("forward"), _Forward)]
    names = {LINEAR: "F.linear", TRANSPOSED: "(W @ x.T).T"}
    return {(*shape, rows, threads): names[form] for choice in {id(f.choice): f.choice for f in installed}.values()
            for (shape, rows, _, threads), form in dict(choice.choices).items()}


@contextmanager
def active():
    """Inside: the installed layers choose their kernel, on this thread only."""
    previous = getattr(_state, "on", False)
    _state.on = True
    try:
        yield
    finally:
        _state.on = previous


class _Forward:
    """An installed layer's forward: the chosen form inside :func:`active`, else ``F.linear``."""

    def __init__(self, module: torch.nn.Linear, choice: KernelChoice):
        self.module, self.choice = module, choice

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.module.weight, self.module.bias
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        if (getattr(_state, "on", False) and MIN_ROWS <= rows <= MAX_ROWS and x.dtype == weight.dtype
                and x.device.type == "cpu" and weight.device.type == "cpu"):
            out = self.choice.linear(x.reshape(rows, x.shape[-1]), weight, bias)
            return out.reshape(*x.shape[:-1], weight.shape[0])
        return F.linear(x, weight, bias)
