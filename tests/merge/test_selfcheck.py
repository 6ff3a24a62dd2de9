"""Where the merge self-check may put its model: the GPU memory it counts on."""

import torch

from tifa_lite.merging.selfcheck import free_memory
from tifa_lite.planner.merge_check import plan_check

GIB = 2**30


def test_no_gpu_no_gpu_memory():
    assert free_memory()[0] is None or torch.cuda.is_available()


def test_a_capped_process_counts_its_cap_not_the_cards_free_memory(fake_cuda, monkeypatch):
    """An H100 (80 GiB, 70 free) capped to a T4's 14.74 GiB with torch already holding 1 GiB: the
    self-check has 13.74 GiB, so a 7B in fp16 (14.2 GiB) is split with RAM, not put whole on the card."""
    fake_cuda(capability=(9, 0), name="NVIDIA H100 80GB HBM3", memory_gib=80, free_gib=70)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: 14.74 / 80)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 1 * GIB)
    gpu, _ = free_memory()
    assert abs(gpu - 13.74 * GIB) < 0.01 * GIB
    qwen7b_fp32 = int(7.62e9 * 4)
    assert plan_check("fp16", qwen7b_fp32, gpu, ram_free=11 * GIB).placement == "cuda+cpu"


def test_an_uncapped_process_gets_the_drivers_free_memory(fake_cuda, monkeypatch):
    fake_cuda(capability=(8, 6), name="NVIDIA A10", memory_gib=22.06, free_gib=20)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: 1.0)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    assert free_memory()[0] == 20 * GIB
