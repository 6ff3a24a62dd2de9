"""What the GPU check suite shares: the skip rule, the test model and tokenizer (built here,
nothing downloaded), the run settings, and the results table.

Without CUDA every test in tests/gpu is skipped with the reason. ``TIFA_LITE_GPU_CHECK_ON_CPU=1``
is a developer switch that runs the same code on the CPU, smaller and shorter, to catch
import errors and API misuse before a GPU session; its table is headed CPU DRY RUN, and
nothing it prints is a GPU result (GPU-only checks, e.g. the allocator's peak, skip there).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
CUDA = torch.cuda.is_available()
DRY_RUN = not CUDA and os.environ.get("TIFA_LITE_GPU_CHECK_ON_CPU") == "1"
REPORT_ENV = "TIFA_LITE_GPU_REPORT"

NO_CUDA_REASON = ("no CUDA GPU on this machine: tests/gpu checks the GPU paths on a CUDA box "
                  "(bash scripts/gpu_check.sh there; TIFA_LITE_GPU_CHECK_ON_CPU=1 is a CPU dry run of the plumbing)")
requires_cuda = pytest.mark.skipif(not (CUDA or DRY_RUN), reason=NO_CUDA_REASON)
requires_real_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA itself (not run in the CPU dry run)")
pytestmark = [pytest.mark.gpu, requires_cuda]


@dataclass(frozen=True)
class Size:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    steps: int  # SFT steps of the precision checks
    seq: int  # data.max_length of the SFT checks


# Qwen2-shaped and small: 8 layers, hidden 512, a 32k vocabulary (the LM head is a real share
# of the memory, as on real models). The dry run shrinks it to finish in minutes on a CPU.
SIZE = Size(8, 512, 1408, 8, 2, 32_000, 30, 256) if not DRY_RUN else Size(2, 128, 256, 4, 2, 8_000, 8, 128)

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus() -> list[str]:
    """Text of the repo's own samples, to train the tokenizer on."""
    texts = []
    for path in sorted(DATA.rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(line)
    texts.append((DATA / "novel_sample.txt").read_text(encoding="utf-8"))
    return texts


def build_tokenizer(out: Path, vocab: int):
    """A byte-level BPE trained on the samples (any text encodes), with ChatML."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(vocab, 8_000), special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, additional_special_tokens=SPECIAL[1:])
    fast.chat_template = CHATML
    fast.save_pretrained(out)
    return fast


def build_model(out: Path) -> Path:
    """A random Qwen2 model + tokenizer in ``out`` (an HF folder tifa_lite loads like any other)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer(out, SIZE.vocab)
    config = Qwen2Config(
        vocab_size=SIZE.vocab, hidden_size=SIZE.hidden, intermediate_size=SIZE.intermediate,
        num_hidden_layers=SIZE.layers, num_attention_heads=SIZE.heads, num_key_value_heads=SIZE.kv_heads,
        max_position_embeddings=4096, tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    return out


def sft_overrides(model_dir: Path, out: Path, steps: int | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "model.name_or_path": str(model_dir), "data.path": str(DATA / "roleplay_sheldon_sample.jsonl"),
        "data.max_length": SIZE.seq, "data.eval_ratio": 0.0, "train.max_steps": steps or SIZE.steps,
        "train.per_device_batch_size": 4, "train.gradient_accumulation_steps": 1, "train.global_batch_size": None,
        "train.learning_rate": 5e-4, "train.lr_scheduler": "constant", "train.warmup_ratio": 0.0,
        "train.logging_steps": 1, "train.save_steps": 10_000, "train.progress_bar": False, "train.auto_fit": False,
        "train.output_dir": str(out), "train.overwrite_output_dir": True, "train.resume": "never",
        "lora.r": 16, "lora.alpha": 32, "lora.dropout": 0.0, **extra,
    }


def losses(output_dir: Path, key: str = "loss") -> list[float]:
    from tifa_lite.training.outputs import read_metrics

    return [m[key] for m in read_metrics(output_dir / "metrics.jsonl") if m.get(key) is not None]


def assert_finite_and_falling(values: list[float], window: int = 5) -> tuple[float, float]:
    assert values and all(math.isfinite(v) for v in values), values
    w = max(1, min(window, len(values) // 2))
    first, last = sum(values[:w]) / w, sum(values[-w:]) / w
    assert last < first, f"loss did not fall: first {w} mean {first:.4f}, last {w} mean {last:.4f}"
    return first, last


class DtypeWatch:
    """Forward hooks on every module for one training forward: the dtypes of parameters and
    floating outputs seen. Removed after the first forward with gradients (a training step)."""

    def __init__(self, model):
        self.params = {p.dtype for p in model.parameters() if p.is_floating_point()}
        self.outputs: set[torch.dtype] = set()
        self.where: dict[torch.dtype, str] = {}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in model.named_modules()]
        self.done = False

    def _hook(self, name):
        def hook(module, args, output):
            if self.done or not torch.is_grad_enabled():
                return
            for t in (output if isinstance(output, (tuple, list)) else (output,)):
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    self.outputs.add(t.dtype)
                    self.where.setdefault(t.dtype, name)
            if name == "":  # the whole model: one training forward seen
                self.done = True
                for handle in self.handles:
                    handle.remove()
        return hook

    @property
    def seen(self) -> set[torch.dtype]:
        return self.params | self.outputs


class Results:
    """Rows for the summary table; also written as JSON to $TIFA_LITE_GPU_REPORT."""

    rows: list[dict[str, Any]] = []

    @classmethod
    def add(cls, check: str, **figures: Any) -> None:
        cls.rows.append({"check": check, **figures})

    @classmethod
    def environment(cls) -> dict[str, Any]:
        import importlib.metadata as md

        versions = {}
        for name in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets", "vllm",
                     "flash_attn"):
            try:
                versions[name] = md.version(name.replace("_", "-"))
            except md.PackageNotFoundError:
                versions[name] = None
        gpu = torch.cuda.get_device_name(0) if CUDA else None
        capability = ".".join(map(str, torch.cuda.get_device_capability(0))) if CUDA else None
        return {"mode": "CPU DRY RUN (not a GPU result)" if DRY_RUN else ("gpu" if CUDA else "no cuda"),
                "gpu": gpu, "compute_capability": capability, "versions": versions}

    @classmethod
    def write(cls, outcomes: dict[str, str]) -> Path | None:
        target = os.environ.get(REPORT_ENV)
        if not target:
            return None
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"environment": cls.environment(), "outcomes": outcomes, "results": cls.rows},
                                   indent=1, default=str), encoding="utf-8")
        return path
