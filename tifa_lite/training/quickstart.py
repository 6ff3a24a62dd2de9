"""The README's main job: a short, real QLoRA SFT on the CPU with the embedded
SmolLM2-135M-Instruct and the shipped role-play sample, then the same held-out
prompts answered before and after, and held-out loss before vs after."""

from __future__ import annotations

import argparse
import json

from tifa_lite.config.loader import PACKAGE_ROOT

RECIPE = PACKAGE_ROOT / "recipes" / "sft_qlora_roleplay.yaml"
HELDOUT = PACKAGE_ROOT / "data" / "roleplay_sheldon_heldout.jsonl"


def quickstart_overrides(output_dir: str, steps: int) -> dict:
    return {
        "model.name_or_path": "smollm2-135m-instruct",
        "train.output_dir": output_dir,
        "train.overwrite_output_dir": True,
        "train.max_steps": steps,
        "train.per_device_batch_size": 4,
        "train.gradient_accumulation_steps": 1,
        "train.global_batch_size": None,
        "train.learning_rate": 3e-4,
        "train.warmup_ratio": 0.05,
        "train.logging_steps": 5,
        "train.save_steps": 20,
        "train.gradient_checkpointing": False,
        "train.resume": "never",
        "data.max_length": 384,
        "data.eval_ratio": 0.0,
        "lora.r": 16,
        "lora.alpha": 32,
    }


def held_out_prompts(n: int) -> list[list[dict]]:
    rows = [json.loads(line) for line in HELDOUT.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = []
    for row in rows[:n]:
        messages = row["messages"]
        last_assistant = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append(messages[:last_assistant])
    return prompts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default="outputs/quickstart")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("-v", "--verbose", action="store_true", help="the libraries' own bars and warnings too")
    args = parser.parse_args(argv)
    from tifa_lite.console import configure_cli_logging

    configure_cli_logging(args.verbose)

    from tifa_lite import train
    from tifa_lite.evaluation.gsm8k import generate_greedy
    from tifa_lite.evaluation.roleplay import perplexity, read_conversations
    from tifa_lite.modeling.inference import load_inference_model

    overrides = quickstart_overrides(args.output_dir, args.steps)
    prompts = held_out_prompts(args.prompts)
    heldout = read_conversations(HELDOUT, limit=32)

    def measure(adapter=None):
        model, tokenizer, *_ = load_inference_model("smollm2-135m-instruct", adapter, bits=4)
        replies = [r.strip().replace("\n", " ")[:300] for r in generate_greedy(model, tokenizer, prompts, max_new_tokens=48)]
        return replies, perplexity(model, tokenizer, heldout, max_length=384).nll

    before, loss_before = measure()
    result = train(RECIPE, **overrides)
    after, loss_after = measure(result.output_dir)

    print("\n=== quickstart: role-play QLoRA SFT on SmolLM2-135M-Instruct (CPU) ===")
    for messages, b, a in zip(prompts, before, after):
        print(f"\n[user] {messages[-1]['content'][:200]}")
        print(f"[before] {b}")
        print(f"[after ] {a}")
    print(f"\nheld-out loss on Sheldon's unseen lines: before {loss_before:.3f} → after {loss_after:.3f}")
    print(f"adapter, tokenizer, metrics.jsonl, loss_curve.png: {result.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
