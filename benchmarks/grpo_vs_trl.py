"""GRPO step time: tifa_lite's ``train()`` path vs a plain TRL GRPOTrainer script with the
same model, LoRA, data, rewards and settings. Each run is its own process (so its peak RSS is
its own); runs alternate (ours, TRL, ours, TRL, …) so drift in machine load hits both alike.

    python benchmarks/grpo_vs_trl.py --data roleplay --rounds 2 --steps 3
    python benchmarks/grpo_vs_trl.py --data arith --rounds 2 --steps 4
    python benchmarks/grpo_vs_trl.py --data roleplay --arms ours,no_levers,prefill_only,pack_only,trl --rounds 1

Shapes:
- ``roleplay`` (the Tifa/MGRPO shape): a character card + a multi-turn history built from the
  role-play data kit's conversations (data/roleplay_sheldon_sample.jsonl: one card, the turns
  of the following conversations as history) to about ``--prompt-tokens`` tokens, replies of
  128 tokens (``min_new_tokens`` = ``max_completion_length`` on both sides: the users' replies
  are 100–300 tokens, while this small model often stops after a few, and unequal lengths
  would make the two sides do different work), 8 generations, 1 prompt per step, beta 0.04
  (the role-play recipe's), rewards ``repetition`` + ``length``.
- ``arith`` (the R1-Zero shape): data/arithmetic with the R1-Zero system prompt and the five
  rule rewards, 2 prompts × 2 generations, 24-token completions, beta 0.

Arms: ``ours`` (the defaults: ``grpo.prefill_once`` and ``grpo.pack_groups`` on,
``grpo.dequantize_for_generation`` auto), ``no_levers`` (the first two off: TRL's own step
through our path), ``prefill_only``, ``pack_only``, ``no_dequant`` (``--quant 4``: generation
from the 4-bit weights), ``trl`` (the plain script). Step time is TRL's own ``step_time`` log, each run's first step
excluded (one-off warm-up). The split comes from TRL's profiling contexts, summed per step:
generation (``transformers.generate``), rewards (``_calculate_rewards``), the other work of
``_prepare_inputs`` (reference/old log-probs), and the rest of the step (loss forward,
backward, optimiser).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# each arm's grpo.* keys over the defaults (prefill_once, pack_groups on; dequantize_for_generation auto)
ARMS = {"ours": {}, "no_levers": {"prefill_once": False, "pack_groups": False},
        "prefill_only": {"pack_groups": False}, "pack_only": {"prefill_once": False},
        "no_dequant": {"dequantize_for_generation": "off"}}
SHAPES = {
    "roleplay": dict(batch=8, generations=8, max_completion=128, beta=0.04, rewards=["repetition", "length"],
                     full_replies=True),
    "arith": dict(batch=4, generations=2, max_completion=24, beta=0.0, full_replies=False,
                  rewards=["xmlcount", "soft_format", "strict_format", "int_answer", "correctness"]),
}


def roleplay_prompts(rows: int, prompt_tokens: int, tokenizer) -> list[dict]:
    """Card + history conversations of about ``prompt_tokens`` tokens, ending on the
    character's reply (the prompt is everything before it)."""
    source = [json.loads(line) for line in (REPO / "data" / "roleplay_sheldon_sample.jsonl").read_text(encoding="utf-8").splitlines()]
    out, cursor = [], 0
    for _ in range(rows):
        card = source[cursor % len(source)]["messages"][0]
        messages = [card]
        while True:
            turns = [m for m in source[cursor % len(source)]["messages"] if m["role"] != "system"]
            cursor += 1
            messages += turns
            text = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
            if len(tokenizer(text, add_special_tokens=False)["input_ids"]) >= prompt_tokens:
                break
        out.append({"messages": messages})
    return out


def write_data(args, workdir: Path) -> Path:
    if args.data == "arith":
        return REPO / "data" / "arithmetic" / "train.jsonl"
    from transformers import AutoTokenizer

    from tifa_lite.modeling.embedded import embedded_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint("smollm2-135m-instruct"))
    path = workdir / "roleplay_prompts.jsonl"
    rows = roleplay_prompts(args.rows, args.prompt_tokens, tokenizer)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def reward_specs(s: dict) -> list[dict]:
    return [{"name": n} for n in s["rewards"]]


def generation_kwargs(s: dict) -> dict | None:
    kwargs = {"min_new_tokens": s["max_completion"]} if s["full_replies"] else {}
    if s.get("greedy"):
        kwargs["top_k"] = 1  # sampling from one token is greedy decoding, whatever the random state
    return kwargs or None


def run_ours(s: dict, out: Path, levers: dict) -> list[float]:
    from tifa_lite.training.outputs import read_metrics
    from tifa_lite.training.runner import train

    data = {"path": s["data"], "limit": s["rows"], "shuffle": False}
    data.update({"format": "messages"} if s["shape"] == "roleplay" else {"format": "gsm8k"})
    result = train({
        "model": {"name_or_path": "smollm2-135m-instruct"},
        "quant": {"bits": s["quant"]},
        "lora": {"enabled": True, "r": s["r"], "alpha": s["alpha"], "dropout": 0.0},
        "data": data,
        "train": {"method": "grpo", "output_dir": str(out), "max_steps": s["steps"], "per_device_batch_size": s["batch"],
                  "gradient_accumulation_steps": s["accum"],
                  "learning_rate": s["lr"], "lr_scheduler": "constant", "warmup_ratio": 0.0, "logging_steps": 1,
                  "save_steps": 10_000, "progress_bar": False, "seed": s["seed"],
                  # TRL's GRPOConfig checkpoints activations by default; compare like with like.
                  "gradient_checkpointing": True},
        "grpo": {"num_generations": s["generations"], "max_completion_length": s["max_completion"],
                 "max_prompt_length": 4096, "temperature": 1.0, "beta": s["beta"], "use_vllm": "off",
                 **levers, "rewards": reward_specs(s), "steps_per_generation": s["steps_per_generation"],
                 # the plain script's data order (TRL's sampler shuffles by default)
                 "trl_args": {"generation_kwargs": generation_kwargs(s), "shuffle_dataset": False}},
    })
    return [m for m in read_metrics(result.output_dir / "metrics.jsonl") if "step_time" in m]


def plain_rows(s: dict) -> list[dict]:
    rows = []
    for line in Path(s["data"]).read_text(encoding="utf-8").splitlines()[: s["rows"]]:
        row = json.loads(line)
        if s["shape"] == "roleplay":
            rows.append({"prompt": row["messages"][:-1]})
        else:
            from tifa_lite.data.gsm8k import R1_ZERO_SYSTEM_PROMPT

            rows.append({"prompt": [{"role": "system", "content": R1_ZERO_SYSTEM_PROMPT},
                                    {"role": "user", "content": row["question"]}],
                         "answer": row["answer"].split("####")[-1].strip()})
    return rows


def run_plain_trl(s: dict, out: Path) -> list[float]:
    """What a user would write with TRL alone (the kit's reward functions as plain callables)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from tifa_lite.modeling.embedded import embedded_checkpoint
    from tifa_lite.rewards import build_rewards

    path = embedded_checkpoint("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(path)
    quant = None
    if s["quant"] == 4:
        from transformers import BitsAndBytesConfig

        # the kit's QLoRA defaults on a CPU: NF4, double quantisation, fp32 compute
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32", quantization_config=quant)
    rewards = build_rewards(reward_specs(s), context={"max_completion_length": s["max_completion"]})
    args = GRPOConfig(
        output_dir=str(out), max_steps=s["steps"], per_device_train_batch_size=s["batch"], learning_rate=s["lr"],
        lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none", seed=s["seed"],
        num_generations=s["generations"], max_completion_length=s["max_completion"], temperature=1.0, beta=s["beta"],
        disable_tqdm=True, shuffle_dataset=False, generation_kwargs=generation_kwargs(s),
        # None: TRL's default, every micro-batch of an optimizer step in one generate call
        gradient_accumulation_steps=s["accum"], steps_per_generation=s["steps_per_generation"],
        # TRL defaults to bf16=True, which stops on a CPU; tifa_lite picks precision from the hardware.
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(), use_cpu=not torch.cuda.is_available(),
    )
    trainer = GRPOTrainer(
        model=model, args=args, processing_class=tokenizer, train_dataset=Dataset.from_list(plain_rows(s)),
        reward_funcs=rewards.funcs,
        peft_config=LoraConfig(r=s["r"], lora_alpha=s["alpha"], lora_dropout=0.0, target_modules="all-linear",
                               task_type="CAUSAL_LM"),
    )
    trainer.train()
    return [h for h in trainer.state.log_history if "step_time" in h]


def record_profiling() -> dict[str, list[float]]:
    """Every duration TRL's profiling contexts measure, by name (they only log to trackers)."""
    from trl.extras import profiling

    spans: dict[str, list[float]] = defaultdict(list)
    original = profiling.ProfilingContext._log_metrics

    def log_metrics(self, duration):
        spans[self.name.split(".", 1)[1]].append(duration)
        return original(self, duration)

    profiling.ProfilingContext._log_metrics = log_metrics
    return spans


def record_completions() -> list[list[int]]:
    """The completion token ids of every generation call (both sides run TRL's method)."""
    from trl import GRPOTrainer

    seen: list[list[int]] = []
    original = GRPOTrainer._generate_single_turn

    def generate_single_turn(self, *args, **kwargs):
        completion_ids, logprobs = original(self, *args, **kwargs)
        seen.extend([list(map(int, c)) for c in completion_ids])
        return completion_ids, logprobs

    GRPOTrainer._generate_single_turn = generate_single_turn
    return seen


def one_run(arm: str, s: dict, out: Path) -> dict:
    spans = record_profiling()
    completions = record_completions()
    t0 = time.time()
    logs = run_plain_trl(s, out) if arm == "trl" else run_ours(s, out, ARMS[arm])
    steps = [float(m["step_time"]) for m in logs]
    n = len(steps)

    def per_step(name: str) -> list[float]:
        values = spans.get(name, [])
        if not values:
            return [0.0] * n
        chunk = len(values) // n if n and len(values) % n == 0 else None
        return [sum(values[i * chunk:(i + 1) * chunk]) for i in range(n)] if chunk else [sum(values) / n] * n

    # TRL times each reward function under its own name
    reward_names = [name for name in spans if name not in ("transformers.generate", "_prepare_inputs", "compute_loss",
                                                           "_get_per_token_logps_and_entropies", "_generate_single_turn")]
    rewards = [sum(x) for x in zip(*(per_step(name) for name in reward_names))] if reward_names else [0.0] * n
    generate, prepare = per_step("transformers.generate"), per_step("_prepare_inputs")
    split = [{"generate": g, "rewards": r, "ref_and_other_prepare": p - g - r, "loss_fwd_bwd_opt": t - p}
             for g, r, p, t in zip(generate, rewards, prepare, steps)]
    first = {k: float(logs[0][k]) for k in ("loss", "entropy", "reward") if k in logs[0]} if logs else {}
    return {"arm": arm, "step_times": steps, "split": split, "wall_s": time.time() - t0,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "first_step": first, "first_completions": completions[: s["batch"]]}


def settings(args, data: Path) -> dict:
    shape = SHAPES[args.data]
    return dict(shape=args.data, data=str(data), rows=args.rows, steps=args.steps, batch=args.batch or shape["batch"],
                generations=shape["generations"], max_completion=shape["max_completion"], beta=shape["beta"],
                full_replies=shape["full_replies"],
                rewards=shape["rewards"], greedy=args.greedy_check, prompt_tokens=args.prompt_tokens if args.data == "roleplay" else None,
                lr=1e-4, r=16, alpha=32, seed=0, quant=args.quant,
                accum=args.accum, steps_per_generation=args.steps_per_generation)


def summarise(results: dict[str, list[dict]]) -> dict:
    out = {}
    for arm, runs in results.items():
        skip = 1 if all(len(r["step_times"]) > 1 for r in runs) else 0  # a one-step run keeps its step
        measured = [t for r in runs for t in r["step_times"][skip:]]
        per_run_medians = [statistics.median(r["step_times"][skip:]) for r in runs]
        split = [x for r in runs for x in r["split"][skip:]]
        out[arm] = {
            "median_step_s": round(statistics.median(measured), 2), "mean_step_s": round(statistics.mean(measured), 2),
            "per_run_median_s": [round(x, 2) for x in per_run_medians], "steps_measured": len(measured),
            "split_median_s": {k: round(statistics.median(x[k] for x in split), 2) for k in split[0]} if split else {},
            "peak_rss_mib": [round(r["peak_rss_mib"]) for r in runs],
            "step_times": [[round(t, 2) for t in r["step_times"]] for r in runs],
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=sorted(SHAPES), default="roleplay")
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--prompt-tokens", type=int, default=1024, help="roleplay: card + history length to build")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, help="completions per step (default: the shape's)")
    p.add_argument("--arms", default="ours,trl")
    p.add_argument("--accum", type=int, default=1, help="gradient accumulation steps (micro-batches per step)")
    p.add_argument("--steps-per-generation", type=int,
                   help="micro-batches generated per generate call (TRL's default: --accum)")
    p.add_argument("--quant", type=int, choices=[4], help="QLoRA: an NF4 base on both sides (default: fp32 base)")
    p.add_argument("--greedy-check", action="store_true",
                   help="one greedy step (top_k=1) per arm: the same completions and first-step loss/entropy as TRL's")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one arm in this process
    p.add_argument("--settings", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        s = json.loads(args.settings)
        with tempfile.TemporaryDirectory() as tmp:
            row = one_run(args.one, s, Path(tmp) / args.one)
        Path(args.result).write_text(json.dumps(row), encoding="utf-8")
        return

    arms = args.arms.split(",")
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory() as tmp:
        s = settings(args, write_data(args, Path(tmp)))
        for r in range(args.rounds):
            for arm in arms:
                result = Path(tmp) / f"{arm}_{r}.json"
                subprocess.run([sys.executable, __file__, "--one", arm, "--settings", json.dumps(s), "--result", str(result)],
                               check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
                row = json.loads(result.read_text(encoding="utf-8"))
                results[arm].append(row)
                print(f"round {r} {arm}: step times {[round(x, 2) for x in row['step_times']]}, "
                      f"peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)
    summary = summarise(results)
    report = {"command": "python " + " ".join(sys.argv), "settings": {k: v for k, v in s.items() if k != "data"},
              "arms": summary}
    if args.greedy_check:
        first = {arm: runs[0] for arm, runs in results.items()}
        reference = first.get("trl") or next(iter(first.values()))
        report["greedy_check"] = {
            arm: {"same_completions": r["first_completions"] == reference["first_completions"],
                  "same_completions_as_no_levers": (r["first_completions"] == first["no_levers"]["first_completions"]
                                                    if "no_levers" in first else None),
                  "completion_tokens": sum(map(len, r["first_completions"])),
                  "first_step": r["first_step"],
                  "max_abs_diff_vs_reference": {k: abs(v - reference["first_step"].get(k, float("nan")))
                                                for k, v in r["first_step"].items()}}
            for arm, r in first.items()}
    if "trl" in summary:
        trl = summary["trl"]
        report["ratio_over_trl"] = {
            arm: {"step_time_median": round(v["median_step_s"] / trl["median_step_s"], 3),
                  "peak_rss": round(max(v["peak_rss_mib"]) / max(trl["peak_rss_mib"]), 3)}
            for arm, v in summary.items() if arm != "trl"}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
