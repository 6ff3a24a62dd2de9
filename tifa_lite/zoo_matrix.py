"""The model-family matrix: each zoo family (:mod:`tifa_lite.modeling.zoo`) × card (the CPU in
fp32, the T4 and A10 rehearsals in their dtypes) × step (QLoRA SFT, DPO, GRPO with the
default levers, merge with its self-check, one served chat request), each run through the
kit's public paths exactly as a user's recipe would: ``train``, ``merge``, ``chat`` and the
OpenAI-compatible server.

A cell ends ``ok``, ``ok`` with levers that switched themselves off (their one-line reasons
are the cell's detail), ``refused`` (a :class:`~tifa_lite.errors.TifaError` raised before the
model loaded, naming the family and the reason), or ``failed`` (anything else: a defect).
``tests/test_zoo_matrix.py`` runs it in the suite; ``benchmarks/zoo_matrix.py`` prints the
whole table for BENCHMARKS.md.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from tifa_lite.hardware import rehearsing

REPO = Path(__file__).resolve().parents[1]
CARDS = ("cpu", "t4", "a10")
STEPS = ("sft", "dpo", "grpo", "merge", "serve")
# opt-in (fetches llama.cpp's converter once): the family's model converted by convert_hf_to_gguf.py
OPTIONAL_STEPS = ("gguf",)

# One optimizer step on a tiny model: the matrix is about code paths and dtypes, not speed.
_TINY = {"data.limit": 2, "data.max_length": 192, "data.eval_ratio": 0.0, "data.overlength": "truncate",
         "train.max_steps": 1, "train.per_device_batch_size": 2, "train.gradient_accumulation_steps": 1,
         "train.global_batch_size": None,
         "train.warmup_ratio": 0.0, "train.progress_bar": False, "train.gradient_checkpointing": False,
         "train.save_steps": 1000, "lora.r": 4, "lora.alpha": 8}
RECIPES = {
    # one row (SFT) or one pair (DPO) per step: the LM head over the real 49k vocabulary is the cost
    "sft": ("recipes/sft_qlora_roleplay.yaml", {"data.path": str(REPO / "data" / "roleplay_sheldon_sample.jsonl"),
                                                "data.max_length": 256, "train.per_device_batch_size": 1}),
    "dpo": ("recipes/dpo_qlora_hh.yaml", {"data.path": str(REPO / "data" / "hh_rlhf_sample.jsonl"),
                                          "data.max_length": 128, "train.per_device_batch_size": 1}),
    # greedy (top_k 1), so that what the levers compute is comparable with what they replace
    "grpo": ("recipes/grpo_qlora_a10.yaml", {"data.path": str(REPO / "data" / "gsm8k_sample.jsonl"),
                                             "grpo.num_generations": 2, "grpo.max_completion_length": 6,
                                             "data.max_length": 256, "train.precision": "auto",
                                             "grpo.trl_args.top_k": 1}),
}


def rotation(families) -> list[tuple[str, str, tuple[str, ...]]]:
    """(family, card, steps) covering every family × step and every card for each step in a
    third of the product: SFT with its merge and served request on one card, DPO on the next,
    GRPO on the third; consecutive families start one card later. The default suite runs it."""
    cells = []
    for i, family in enumerate(families):
        cells.append((family, CARDS[i % 3], ("sft", "merge", "serve")))
        cells.append((family, CARDS[(i + 1) % 3], ("dpo",)))
        cells.append((family, CARDS[(i + 2) % 3], ("grpo",)))
    return cells


@dataclass(frozen=True)
class Cell:
    family: str
    card: str
    step: str
    status: str  # ok | refused | failed
    detail: str = ""
    seconds: float = 0.0

    def row(self) -> str:
        shown = self.status
        if self.status == "ok" and self.detail:
            shown = f"ok, {self.detail}"
        elif self.detail:
            shown = f"{self.status} ({self.detail})"
        return f"| {self.family} | {self.card} | {self.step} | {shown} |"


class _LeverLines(logging.Handler):
    """The levers' one-line switch-off notices (tifa_lite.modeling.lever_check)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if " off for " in message:
            self.lines.append(message.split("; the library")[0])


def train_step(step: str, model_dir: Path, output_dir: Path, **overrides):
    from tifa_lite import train

    recipe, items = RECIPES[step]
    return train(str(REPO / recipe), **{**_TINY, **items, "model.name_or_path": str(model_dir),
                                        "train.output_dir": str(output_dir), **overrides})


def run_cell(family: str, card: str, step: str, model_dir: Path, work: Path) -> Cell:
    """One cell, in ``work`` (its SFT adapter is reused by the merge and serve cells)."""
    from tifa_lite.errors import TifaError

    started = time.monotonic()
    lines = _LeverLines()
    root = logging.getLogger("tifa_lite")
    root.addHandler(lines)
    try:
        with rehearsing(card):
            detail = _STEP[step](model_dir, Path(work), family, card)
        status = "ok"
        detail = "; ".join(dict.fromkeys(lines.lines) or ([detail] if detail else []))
    except TifaError as error:
        status, detail = "refused", str(error).splitlines()[0]
    except Exception as error:  # a crash mid-run is the defect this matrix exists to find
        status, detail = "failed", f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
    finally:
        root.removeHandler(lines)
    return Cell(family, card, step, status, detail, round(time.monotonic() - started, 1))


def _trained(step: str):
    def run(model_dir: Path, work: Path, family: str, card: str) -> str:
        result = train_step(step, model_dir, work / f"{family}-{card}-{step}")
        loss = result.metrics.get("train_loss")
        if result.global_step != 1 or loss is None or not math.isfinite(loss):
            raise RuntimeError(f"{step} on {family}: global_step {result.global_step}, train_loss {loss}")
        return ""

    return run


def _adapter(model_dir: Path, work: Path, family: str, card: str) -> Path:
    out = work / f"{family}-{card}-sft"
    if not (out / "adapter_config.json").is_file():
        train_step("sft", model_dir, out, **{"train.overwrite_output_dir": True})
    return out


def _merge(model_dir: Path, work: Path, family: str, card: str) -> str:
    from tifa_lite.merging.api import merge

    report = merge(_adapter(model_dir, work, family, card), work / f"{family}-{card}-merged", dtype="auto",
                   overwrite=True)
    check = report["self_check"]
    if not check["passed"]:
        raise RuntimeError(f"merge self-check failed on {family}: {check}")
    return ""


def _serve(model_dir: Path, work: Path, family: str, card: str) -> str:
    from fastapi.testclient import TestClient

    from tifa_lite.conversation.session import chat
    from tifa_lite.serving.openai_api import ChatServer, build_app

    session = chat(str(model_dir), adapter=str(_adapter(model_dir, work, family, card)), preset="greedy",
                   max_new_tokens=4)
    client = TestClient(build_app(ChatServer(session, family, context_length=256)))
    response = client.post("/v1/chat/completions", json={
        "model": family, "max_tokens": 4, "messages": [{"role": "user", "content": "Hello, who are you?"}]})
    if response.status_code != 200:
        raise RuntimeError(f"chat request on {family}: HTTP {response.status_code} {response.text[:200]}")
    body = response.json()
    if body["usage"]["completion_tokens"] < 1:
        raise RuntimeError(f"chat request on {family}: no tokens generated")
    return ""


def _gguf(model_dir: Path, work: Path, family: str, card: str) -> str:
    from tifa_lite.export.gguf import export_gguf

    report = export_gguf(model_dir, work / f"{family}-{card}.gguf", outtype="f16", overwrite=True)
    return f"max logit diff {report['round_trip']['max_logit_diff']:.3g}"


_STEP = {"gguf": _gguf, "sft": _trained("sft"), "dpo": _trained("dpo"), "grpo": _trained("grpo"), "merge": _merge, "serve": _serve}
