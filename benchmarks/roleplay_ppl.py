"""Role-play SFT lowers held-out perplexity on the character's unseen lines.

Measured side by side in one run: the same base with and without the QLoRA adapter
trained (on the NF4-quantised base) by recipes/sft_qlora_roleplay.yaml, on data/roleplay_sheldon_heldout.jsonl
(scenes text_265–284, never in the training sample text_0–49). Loss on assistant
tokens only (tifa_lite.evaluation.roleplay.perplexity).

  python benchmarks/roleplay_ppl.py --steps 12 --max-length 384 --out outputs/bench_roleplay
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--train", default="data/roleplay_sheldon_sample.jsonl")
    parser.add_argument("--heldout", default="data/roleplay_sheldon_heldout.jsonl")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--out", default="outputs/bench_roleplay")
    parser.add_argument("--eval-bits", type=int, choices=[4], default=None,
                        help="score on the 4-bit base as trained (slow on a CPU: bitsandbytes dequantises every matmul); "
                             "default: the 16/32-bit base, i.e. what the merged model computes")
    args = parser.parse_args()

    import torch

    from tifa_lite import train
    from tifa_lite.modeling.inference import load_inference_model
    from tifa_lite.evaluation.roleplay import perplexity, read_conversations

    torch.manual_seed(0)
    held = read_conversations(args.heldout)

    def score(adapter=None):
        model, tokenizer, *_ = load_inference_model(args.model, adapter, bits=args.eval_bits)
        return perplexity(model, tokenizer, held, max_length=args.max_length).as_dict()

    results = {"heldout": args.heldout, "n_heldout": len(held), "eval_base": "4-bit NF4" if args.eval_bits else "full precision"}
    started = time.time()
    results["before"] = score()
    print("before:", json.dumps(results["before"]), file=sys.stderr, flush=True)
    run = train(
        "recipes/sft_qlora_roleplay.yaml",
        **{
            "model.name_or_path": args.model,
            "data.path": args.train,
            "data.eval_ratio": 0.0,
            "data.max_length": args.max_length,
            "train.max_steps": args.steps,
            "train.per_device_batch_size": args.batch,
            "train.gradient_accumulation_steps": 1,
            "train.global_batch_size": args.batch,
            "train.learning_rate": args.lr,
            "train.gradient_checkpointing": False,
            "train.output_dir": args.out,
            "train.overwrite_output_dir": True,
            "train.save_steps": 10_000,
            "train.progress_bar": False,
            "lora.r": 16,
            "lora.alpha": 32,
        },
    )
    results["train"] = {"steps": run.global_step, "train_loss": run.metrics.get("train_loss"),
                        "train_runtime_s": run.metrics.get("train_runtime")}
    print("trained:", json.dumps(results["train"]), file=sys.stderr, flush=True)
    results["after_adapter"] = score(adapter=run.output_dir)
    results["ppl_ratio_after_over_before"] = results["after_adapter"]["ppl"] / results["before"]["ppl"]
    results["wall_s"] = round(time.time() - started, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
