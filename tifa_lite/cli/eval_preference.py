"""`tifa-lite eval preference --model M [--adapter A] --data FILE [--limit N] [--json]`:
fraction of preference pairs where the policy's implicit reward (or a reward model's
score) prefers the chosen answer."""

from __future__ import annotations

import argparse
import json


def positive_int(text: str) -> int:
    """An argparse type: refused by the parser, before any model loads."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number (1 or more)")
    return value


def register(sub) -> None:
    p = sub.add_parser("preference", help="preference accuracy: implicit reward of a policy, or a reward model")
    p.add_argument("--model", help="model folder, embedded name or hub id (default: the adapter's base)")
    p.add_argument("--adapter", help="LoRA adapter folder (a DPO policy, or a reward model from train.method=reward)")
    p.add_argument("--data", required=True, help="preference pairs (TRL preference form or hh-rlhf JSONL)")
    p.add_argument("--limit", type=positive_int, help="score only the first N pairs")
    p.add_argument("--max-length", type=positive_int, default=1024, help="tokens per prompt+answer; longer prompts keep their end")
    p.add_argument("--batch-size", type=positive_int, default=4)
    p.add_argument("--bits", type=int, choices=[4, 8], help="load the base quantised, as it was trained")
    p.add_argument("--reference", choices=["auto", "none"], default="auto",
                   help="auto: relative to the base when an adapter is given; none: raw log p(chosen) - log p(rejected)")
    p.add_argument("--length-normalize", action="store_true", help="mean instead of summed token log-probs")
    p.add_argument("--on-error", choices=["raise", "skip"], default="skip", help="what to do with bad pairs")
    p.add_argument("--json", action="store_true", help='print {"accuracy": …, "n": …} as the last line')
    p.set_defaults(handler=run)


def run(args) -> int:
    from tifa_lite.evaluation.preference import evaluate_preference_files

    result = evaluate_preference_files(
        args.data, args.model, args.adapter, limit=args.limit, on_error=args.on_error, bits=args.bits,
        reference=args.reference, batch_size=args.batch_size, max_length=args.max_length,
        length_normalize=args.length_normalize,
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(f"preference accuracy {result['accuracy']:.3f} over {result['n']} pairs "
              f"({result['kind']}, mean margin {result['mean_margin']:.4f}, ties {result['ties']})")
    return 0
