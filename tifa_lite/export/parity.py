"""One parity table from the trained model to what Ollama runs, each step scored the same
way on the same token ids (:mod:`tifa_lite.evaluation.agreement`):

1. trained (the 4-bit base exactly as the run held it + the adapter, unmerged) → merged
   16-bit folder, in transformers;
2. merged → each GGUF, run by llama.cpp (llama-cpp-python); without llama-cpp-python the
   row says so and what to run, and the GGUF is read back by transformers instead
   (the quantisation measured, not llama.cpp's kernels — the row is labelled);
3. the Ollama folder: its Go TEMPLATE rendered against the Jinja template, every
   end-of-turn token a ``PARAMETER stop``, and the ``<think>`` history policy.

Every model row: per-token KL(reference ‖ candidate) over the prompt and the reference's
greedy reply (teacher-forced), top-1 agreement, where free-running plain greedy decodes
first part, and whether the candidate stops on the end-of-turn token where the reference
does. A step outside its tolerance fails the report (:class:`ParityError`, CLI exit 1).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tifa_lite.errors import TifaError

log = logging.getLogger(__name__)

REPORT_FILE = "parity_report.json"

# Tolerances per step (mean KL in nats/token, top-1 agreement over every position). A merge
# into what was trained is fp32/16-bit rounding (measured ~1e-6 to 1e-4, benchmarks/results/
# export.md); quants are allowed their measured cost with headroom. A wrong LoRA scaling or
# an unchanged base moves the model by the adapter's whole effect.
# Per quant, from the embedded run's measured chain (benchmarks/results/export.md, 1148 positions of role-play
# prompts): q8_0 0.0085 / 93.7%, q6_k 0.021 / 91.0%, q5_k_m 0.089 / 84.6%, q4_k_m 0.112 / 79.3% (mean KL / top-1),
# with about 2x headroom in KL; q5_k_m also measured 0.188 / 78.7% on one short prompt of the base model (61
# positions, tests/export/test_llamacpp_convert.py), so it gets q4_k_m's bound. A 576-wide model is a hard case:
# K-quants need rows of 256, so llama.cpp falls back to legacy quants for 180 of its 272 tensors. A broken merge
# is caught by the merged step's tight bound.
MAX_MEAN_KL = {"merged": 0.01, "f16": 0.002, "bf16": 0.005, "q8_0": 0.02, "q6_k": 0.05, "q5_k_m": 0.25, "q4_k_m": 0.25}
MIN_TOP1 = {"merged": 0.97, "f16": 0.98, "bf16": 0.97, "q8_0": 0.9, "q6_k": 0.85, "q5_k_m": 0.72, "q4_k_m": 0.72}


class ParityError(TifaError):
    """A step of the chain is outside its tolerance; ``report`` holds the whole table."""

    def __init__(self, message: str, report: dict[str, Any] | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class Row:
    step: str
    runtime: str
    metrics: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def status(self) -> str:
        if self.metrics.get("not_run"):
            return "not run"
        return "FAIL" if self.failures else "ok"


def load_prompts(path: str | Path, limit: int = 4) -> list[list[dict[str, str]]]:
    """Chat prompts from a messages JSONL: each row up to its last user turn (its reply dropped)."""
    from tifa_lite.errors import DataError

    prompts = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            messages = json.loads(line)["messages"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{n}: not a messages row ({exc}); give a JSONL of {{\"messages\": [...]}}.") from None
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
        if last_user is not None:
            prompts.append(messages[: last_user + 1])
        if len(prompts) >= limit:
            break
    if not prompts:
        raise DataError(f"{path}: no row with a user turn to use as a prompt.")
    return prompts


@dataclass
class Reference:
    """The token ids every candidate is scored on: prompt + the reference's greedy reply."""

    prompts: list[list[int]]
    replies: list[list[int]]
    logits: list[torch.Tensor]  # over prompt + reply, [seq, vocab]
    stop_ids: list[int]

    def sequences(self) -> list[list[int]]:
        return [p + r for p, r in zip(self.prompts, self.replies)]

    def stopped(self) -> list[bool]:
        return [bool(r) and r[-1] in self.stop_ids for r in self.replies]


@torch.no_grad()
def _hf_logits(model, sequences: list[list[int]]) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    return [model(input_ids=torch.tensor([s], device=device)).logits[0].float().cpu() for s in sequences]


@torch.no_grad()
def _hf_greedy(model, prompts: list[list[int]], tokens: int, eos) -> list[list[int]]:
    from tifa_lite.evaluation.greedy import plain_greedy

    device = next(model.parameters()).device
    outs = []
    for ids in prompts:
        x = torch.tensor([ids], device=device)
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), **plain_greedy(tokens, eos_token_id=eos))
        outs.append(out[0, len(ids):].tolist())
    return outs


def reference_from(model, prompts: list[list[int]], stop_ids: list[int], tokens: int) -> Reference:
    replies = _hf_greedy(model, prompts, tokens, stop_ids)
    seqs = [p + r for p, r in zip(prompts, replies)]
    return Reference(prompts, replies, _hf_logits(model, seqs), stop_ids)


def score(ref: Reference, logits: list[torch.Tensor], greedy: list[list[int]], candidate_stops: list[int],
          max_mean_kl: float, min_top1: float) -> tuple[dict[str, Any], list[str]]:
    """Metrics of a candidate against the reference, and what is outside the tolerance."""
    from tifa_lite.evaluation.agreement import first_divergence, logit_agreement

    m = logit_agreement(ref.logits, logits)
    div = first_divergence(ref.replies, greedy)
    stopped = [bool(g) and g[-1] in candidate_stops for g in greedy]
    m.update(greedy_identical=f"{div['identical']}/{div['prompts']}", first_divergence=div["per_prompt"],
             reference_stopped=sum(ref.stopped()), candidate_stopped=sum(stopped),
             end_of_turn_is_stop=all(t in candidate_stops for t in ref.stop_ids))
    failures = []
    if not m["mean_kl"] <= max_mean_kl:
        failures.append(f"mean KL {m['mean_kl']:.4g} > {max_mean_kl:g}")
    if m["top1_agreement"] < min_top1:
        failures.append(f"top-1 agreement {m['top1_agreement']:.3f} < {min_top1:g}")
    if not m["end_of_turn_is_stop"]:
        missing = [t for t in ref.stop_ids if t not in candidate_stops]
        failures.append(f"end-of-turn token(s) {missing} do not stop generation")
    lost = [i for i, (r, c) in enumerate(zip(ref.stopped(), stopped)) if r and not c]
    if lost:
        failures.append(f"does not stop where the trained model stops (prompts {lost})")
    return m, failures


def merged_stop_ids(merged_dir: Path) -> list[int]:
    """What ends generation for the merged folder: its generation_config.json eos_token_id."""
    gen = json.loads((merged_dir / "generation_config.json").read_text(encoding="utf-8")) \
        if (merged_dir / "generation_config.json").is_file() else {}
    eos = gen.get("eos_token_id")
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def gguf_row(gguf_file: Path, merged_dir: Path, ref: Reference, merged_greedy: list[list[int]], tokens: int) -> Row:
    quant = _gguf_type(gguf_file)
    tol = (MAX_MEAN_KL.get(quant, MAX_MEAN_KL["q4_k_m"]), MIN_TOP1.get(quant, MIN_TOP1["q4_k_m"]))
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        from tifa_lite.export.llamacpp_check import INSTALL_HINT

        row = Row(f"merged → {gguf_file.name} ({quant})", "transformers (GGUF read back)",
                  note=f"not run in llama.cpp: {INSTALL_HINT}")
        logits, greedy, stops = _gguf_in_transformers(gguf_file, merged_dir, ref, tokens)
    else:
        row = Row(f"merged → {gguf_file.name} ({quant})", "llama.cpp")
        logits, greedy, stops = _gguf_in_llama_cpp(gguf_file, ref, tokens)
    row.metrics, row.failures = score(ref, logits, greedy, stops, *tol)
    from tifa_lite.evaluation.agreement import first_divergence

    row.metrics["vs_merged_greedy_identical"] = first_divergence(merged_greedy, greedy)["identical"]
    row.metrics["tolerance"] = {"max_mean_kl": tol[0], "min_top1": tol[1]}
    return row


def _gguf_type(path: Path) -> str:
    import gguf

    reader = gguf.GGUFReader(path)
    field_ = reader.fields.get("general.file_type")
    names = {1: "f16", 7: "q8_0", 15: "q4_k_m", 17: "q5_k_m", 18: "q6_k", 32: "bf16", 0: "f32"}
    return names.get(int(field_.contents()), f"ftype {int(field_.contents())}") if field_ is not None else "unknown"


def _gguf_in_llama_cpp(gguf_file: Path, ref: Reference, tokens: int):
    import os

    import llama_cpp

    from tifa_lite.export.llamacpp_check import _cpp_greedy

    n_ctx = max(len(s) for s in ref.sequences()) + tokens + 8
    llm = llama_cpp.Llama(model_path=str(gguf_file), n_ctx=max(512, n_ctx), n_threads=min(4, os.cpu_count() or 1),
                          seed=0, logits_all=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    logits = []
    for seq in ref.sequences():
        llm.reset()
        llm.eval(seq)
        logits.append(torch.from_numpy(llm.scores[: len(seq)].copy()))
    greedy = []
    for ids in ref.prompts:
        llm.reset()
        greedy.append(_cpp_greedy(llm, ids, vocab, tokens))
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    stops = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    del llm
    return logits, greedy, stops


def _gguf_in_transformers(gguf_file: Path, merged_dir: Path, ref: Reference, tokens: int):
    from transformers import AutoModelForCausalLM

    from tifa_lite.export.gguf import _read_back_config

    model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32,
                                                 **_read_back_config(merged_dir)).eval()
    stops = merged_stop_ids(merged_dir)
    out = _hf_logits(model, ref.sequences()), _hf_greedy(model, ref.prompts, tokens, stops or None), stops
    del model
    return out


def ollama_row(ollama_dir: Path, tokenizer, strip_think: bool) -> Row:
    """The Modelfile as written: TEMPLATE (Go) vs the Jinja on the check conversations,
    PARAMETER stop for every end-of-turn token, and the think policy on the history."""
    from tifa_lite.conversation.template_structure import end_of_turn_tokens
    from tifa_lite.conversation.templates import apply_think_policy
    from tifa_lite.export.gotemplate import ollama_messages, render_go_template
    from tifa_lite.export.ollama import CHECK_CONVERSATIONS

    row = Row("Ollama Modelfile: Go TEMPLATE vs Jinja", "tifa_lite Go-template interpreter")
    text = (ollama_dir / "Modelfile").read_text(encoding="utf-8")
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0] if 'TEMPLATE """' in text else None
    stops = [json.loads(line.split(" ", 2)[2]) for line in text.splitlines() if line.startswith("PARAMETER stop ")]
    if template is None:
        row.failures.append("the Modelfile has no TEMPLATE")
        return row
    bos = tokenizer.bos_token or ""
    same = 0
    think_ok = True
    for messages in CHECK_CONVERSATIONS:
        expected = tokenizer.apply_chat_template(apply_think_policy(messages, strip_think), tokenize=False,
                                                 add_generation_prompt=True)
        try:
            got = render_go_template(template, {"Messages": ollama_messages(messages)})
        except Exception as exc:  # a template our interpreter cannot parse is a failure, named
            row.failures.append(f"TEMPLATE does not render: {exc}")
            return row
        same += got == expected or (bool(bos) and got == expected.removeprefix(bos))
        had_think = any("<think>" in m["content"] for m in messages[:-1])
        if had_think and (("<think>" in got) == strip_think):
            think_ok = False
    missing = [t for t in end_of_turn_tokens(tokenizer) if t not in stops]
    row.metrics = {"conversations_identical": f"{same}/{len(CHECK_CONVERSATIONS)}", "stop_parameters": stops,
                   "end_of_turn_missing": missing, "think_policy": "strip" if strip_think else "keep",
                   "think_policy_applied": think_ok}
    if same != len(CHECK_CONVERSATIONS):
        row.failures.append("the Go TEMPLATE renders a conversation differently from the Jinja template")
    if missing:
        row.failures.append(f"end-of-turn token(s) {missing} are not a PARAMETER stop: replies would never end")
    if not think_ok:
        row.failures.append("the <think> history policy is not applied by the TEMPLATE")
    return row


def check_chain(run: str | Path, merged: str | Path, *, ggufs: list[str | Path] = (), ollama: str | Path | None = None,
                prompts: str | Path | None = None, limit: int = 4, tokens: int = 32, output: str | Path | None = None,
                base: str | None = None, think_policy: str = "strip") -> dict[str, Any]:
    """Build the table; raises :class:`ParityError` (after saving it) when a step fails."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tifa_lite.conversation.template_structure import end_of_turn_ids
    from tifa_lite.merging.adapter import ModelLoader, read_adapter, resolve_base
    from tifa_lite.merging.quantized_base import load_trained, trained_quant

    info = read_adapter(run)
    base_ref = resolve_base(info, base)
    merged_dir = Path(merged).expanduser().resolve()
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    prompt_file = Path(prompts) if prompts else _run_data(info)
    chats = load_prompts(prompt_file, limit)
    prompt_ids = [list(tokenizer.apply_chat_template(c, add_generation_prompt=True, return_dict=True)["input_ids"])
                  for c in chats]
    stop_ids = end_of_turn_ids(tokenizer, tokenizer.eos_token_id)

    quant = trained_quant(info)
    if quant is not None:
        trained = load_trained(base_ref.path, info.path, quant, ModelLoader.causal_lm())
        trained_name = f"trained: 4-bit base ({quant.describe()}) + adapter"
    else:
        from peft import PeftModel

        trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_ref.path), dtype=torch.float32),
                                            str(info.path)).eval()
        trained_name = "trained: 16-bit base + adapter (the run records no 4-bit base)"
    ref = reference_from(trained, prompt_ids, stop_ids, tokens)
    del trained

    rows = []
    merged_model = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    merged_stops = merged_stop_ids(merged_dir)
    merged_greedy = _hf_greedy(merged_model, prompt_ids, tokens, merged_stops or None)
    row = Row(f"{trained_name} → merged {merged_dir.name}", "transformers")
    row.metrics, row.failures = score(ref, _hf_logits(merged_model, ref.sequences()), merged_greedy, merged_stops,
                                      MAX_MEAN_KL["merged"], MIN_TOP1["merged"])
    row.metrics["tolerance"] = {"max_mean_kl": MAX_MEAN_KL["merged"], "min_top1": MIN_TOP1["merged"]}
    report_file = merged_dir / "merge_report.json"
    if report_file.is_file():
        row.note = f"merged into {json.loads(report_file.read_text(encoding='utf-8')).get('base_weights', 'original')} base weights"
    rows.append(row)
    del merged_model

    gguf_files = [Path(g) for g in ggufs]
    if ollama is not None:
        gguf_files.append(Path(ollama) / "model.gguf")
    for g in dict.fromkeys(gguf_files):
        rows.append(gguf_row(g, merged_dir, ref, merged_greedy, tokens))
    if ollama is not None:
        rows.append(ollama_row(Path(ollama), tokenizer, think_policy == "strip"))

    report = {
        "run": str(info.path), "merged": str(merged_dir), "prompts": str(prompt_file), "n_prompts": len(chats),
        "greedy_tokens": tokens, "end_of_turn_ids": stop_ids,
        "rows": [{"step": r.step, "runtime": r.runtime, "status": r.status, "metrics": r.metrics,
                  "failures": r.failures, "note": r.note} for r in rows],
    }
    report["passed"] = all(r.status != "FAIL" for r in rows)
    report["table"] = table(report)
    if output:
        from tifa_lite.atomic import write_text

        write_text(Path(output), json.dumps(report, indent=2))
    if not report["passed"]:
        failed = [f"{r.step}: {'; '.join(r.failures)}" for r in rows if r.failures]
        raise ParityError("parity check failed:\n  " + "\n  ".join(failed) + "\n" + report["table"], report=report)
    return report


def _run_data(info) -> Path:
    import yaml

    run_dir = info.path.parent if info.path.name.startswith("checkpoint-") else info.path
    config = run_dir / "resolved_config.yaml"
    data = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("data", {}) if config.is_file() else {}
    path = data.get("path")
    if not path or not Path(path).is_file():
        from tifa_lite.errors import ConfigError

        raise ConfigError(f"{info.path}: no prompts given and the run's data.path ({path}) is not a file here; "
                          "pass --prompts FILE (a messages JSONL of held-out rows).")
    return Path(path)


def table(report: dict[str, Any]) -> str:
    lines = ["| step | runtime | mean KL | max KL | top-1 | greedy identical | stops (ref/cand) | status |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        m = r["metrics"]
        if "mean_kl" in m:
            lines.append(f"| {r['step']} | {r['runtime']} | {m['mean_kl']:.3g} | {m['max_kl']:.3g} | "
                         f"{m['top1_agreement']:.1%} | {m['greedy_identical']} | "
                         f"{m['reference_stopped']}/{m['candidate_stopped']} | {r['status']} |")
        else:
            lines.append(f"| {r['step']} | {r['runtime']} | – | – | – | {m.get('conversations_identical', '–')} | "
                         f"stops {m.get('stop_parameters', [])}, think {m.get('think_policy', '')}"
                         f"{'' if m.get('think_policy_applied', True) else ' NOT applied'} | {r['status']} |")
        for f in r["failures"]:
            lines.append(f"|  ↳ {f} | | | | | | | |")
        if r["note"]:
            lines.append(f"|  ↳ {r['note']} | | | | | | | |")
    return "\n".join(lines)
