"""The batcher's linear layers: the faster of F.linear and (W @ x.T).T is kept per weight shape
and rows (timed in place), it computes F.linear within fp32 rounding, and nothing outside the
batcher's forward passes, nothing on another device, dtype or layer type is touched."""

from __future__ import annotations

import json
import threading

import pytest
import torch
import torch.nn.functional as F

from tifa_lite.serving import decode_linear
from tifa_lite.serving.decode_linear import LINEAR, TRANSPOSED, KernelChoice


class FakeKernels:
    """Two forms that compute F.linear and advance a fake clock by their given cost."""

    def __init__(self, linear_s: float, transposed_s: float):
        self.now, self.calls = 0.0, []
        self.costs = {LINEAR: linear_s, TRANSPOSED: transposed_s}
        self.forms = (self._form(LINEAR), self._form(TRANSPOSED))

    def _form(self, form):
        def run(x, weight, bias=None):
            self.calls.append(form)
            self.now += self.costs[form]
            return F.linear(x, weight, bias)
        return run

    def clock(self) -> float:
        return self.now

    def choice(self, **kwargs) -> KernelChoice:
        return KernelChoice(clock=self.clock, forms=self.forms, **kwargs)


def _run(choice, rows=2, calls=20, shape=(8, 4)):
    weight = torch.randn(shape)
    for _ in range(calls):
        choice.linear(torch.randn(rows, shape[1]), weight, None)


@pytest.mark.parametrize("linear_s, transposed_s, kept", [
    (5.0, 1.0, TRANSPOSED),  # MKL's few-rows pathology: W @ x.T is kept
    (1.0, 5.0, LINEAR),  # where it does not win, F.linear stays
    (1.0, 0.95, LINEAR),  # nor where it wins by less than the margin (a noisy timing)
])
def test_the_faster_form_is_kept(linear_s, transposed_s, kept):
    kernels = FakeKernels(linear_s, transposed_s)
    choice = kernels.choice(samples=3)
    _run(choice, calls=20)
    trial = 2 * 3
    assert kernels.calls[:trial] == [LINEAR, TRANSPOSED] * 3  # timed alternately, each call doing real work
    assert kernels.calls[trial:] == [kept] * (20 - trial)  # then settled: no more timing
    assert choice.choices == {((8, 4), 2, torch.float32, torch.get_num_threads()): kept} and not choice.trials


def test_the_fastest_sample_counts_not_a_disturbed_one():
    kernels = FakeKernels(5.0, 1.0)
    choice = kernels.choice(samples=3)
    kernels.costs[TRANSPOSED] = 50.0  # the machine was busy during W @ x.T's first call
    _run(choice, calls=2)
    kernels.costs[TRANSPOSED] = 1.0
    _run(choice, calls=10)
    assert set(choice.choices.values()) == {TRANSPOSED}


def test_each_shape_rows_and_thread_count_is_timed_on_its_own():
    kernels = FakeKernels(5.0, 1.0)
    choice = kernels.choice(samples=2)
    _run(choice, rows=2, shape=(8, 4))
    _run(choice, rows=3, shape=(8, 4))
    _run(choice, rows=2, shape=(16, 4))
    threads = torch.get_num_threads()
    assert set(choice.choices) == {((8, 4), 2, torch.float32, threads), ((8, 4), 3, torch.float32, threads),
                                   ((16, 4), 2, torch.float32, threads)}


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 8, 16])
@pytest.mark.parametrize("bias", [False, True])
def test_transposed_linear_is_f_linear_within_fp32_rounding(rows, bias):
    torch.manual_seed(rows)
    weight, x = torch.randn(1000, 576) * 0.05, torch.randn(rows, 576)
    b = torch.randn(1000) if bias else None
    out = decode_linear.transposed_linear(x, weight, b)
    assert out.shape == (rows, 1000) and out.is_contiguous()
    torch.testing.assert_close(out, F.linear(x, weight, b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, F.linear(x.double(), weight.double(), None if b is None else b.double()).float(),
                               rtol=1e-5, atol=1e-5)


class Refuses(KernelChoice):
    def linear(self, x, weight, bias):
        raise AssertionError("routed where it must not be")


class Counts(KernelChoice):
    def __init__(self):
        super().__init__()
        self.rows = []

    def linear(self, x, weight, bias):
        self.rows.append(x.shape[0])
        return decode_linear.transposed_linear(x, weight, bias)


def test_only_plain_fp32_cpu_linears_are_routed():
    class MyLinear(torch.nn.Linear):  # 4-bit and other layer types subclass or replace nn.Linear
        pass

    model = torch.nn.ModuleDict({
        "plain": torch.nn.Linear(4, 8), "bf16": torch.nn.Linear(4, 8, dtype=torch.bfloat16),
        "subclass": MyLinear(4, 8), "meta": torch.nn.Linear(4, 8, device="meta"),
    })
    if torch.cuda.is_available():
        model["cuda"] = torch.nn.Linear(4, 8, device="cuda")
    assert decode_linear.install(model) == 1
    assert [name for name, m in model.items() if "forward" in vars(m)] == ["plain"]
    assert decode_linear.install(model) == 0  # twice: a no-op


def test_a_layer_moved_off_the_cpu_after_install_is_f_linear():
    layer = torch.nn.Linear(16, 8)
    decode_linear.install(layer, Refuses())
    layer.to("meta")  # as model.to("cuda") would
    with decode_linear.active():
        assert layer(torch.randn(2, 16, device="meta")).shape == (2, 8)


def test_outside_the_batcher_or_for_one_row_it_is_f_linear():
    layer = torch.nn.Linear(576, 300)
    decode_linear.install(layer, Refuses())
    x = torch.randn(4, 1, 576)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))  # not active: training, generate()
    with decode_linear.active():
        one = torch.randn(1, 1, 576)
        assert torch.equal(layer(one), F.linear(one, layer.weight, layer.bias))  # a lone stream: unchanged
        prefill = torch.randn(1, decode_linear.MAX_ROWS + 1, 576)
        assert torch.equal(layer(prefill), F.linear(prefill, layer.weight, layer.bias))


def test_inside_the_batcher_a_few_rows_are_routed_and_keep_their_shape():
    layer, counts = torch.nn.Linear(576, 300), Counts()
    decode_linear.install(layer, counts)
    x = torch.randn(3, 1, 576)  # a decode step: one new token for each of 3 rows
    with decode_linear.active():
        out = layer(x)
    assert counts.rows == [3] and out.shape == (3, 1, 300)
    torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_active_is_this_threads_only():
    layer = torch.nn.Linear(16, 8)
    decode_linear.install(layer, Refuses())
    seen = []
    with decode_linear.active():
        other = threading.Thread(target=lambda: seen.append(layer(torch.randn(2, 16)).shape))
        other.start()
        other.join()
    assert seen == [(2, 8)]


def test_the_batcher_runs_its_steps_through_it(tiny_session):
    from tifa_lite.serving.openai_api import ChatServer

    server = ChatServer(tiny_session, "tiny", context_length=512, max_batch=4)
    forward = vars(tiny_session.model.lm_head).get("forward")
    assert isinstance(forward, decode_linear._Forward)
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "n": 2}  # two rows from the start
    _, job = server.prepare(json.dumps(body).encode())
    server.submit(job, server.sink(job)).result(timeout=60)
    timed = set(forward.choice.choices) | set(forward.choice.trials)
    assert any(rows >= 2 for _, rows, *_ in timed), timed  # the shared decode steps went through the choice
    assert all(form in ("F.linear", "(W @ x.T).T") for form in decode_linear.settled(tiny_session.model).values())
