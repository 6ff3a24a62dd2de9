"""`tifa-lite eval gsm8k --model M [--adapter A] --data FILE [--limit N] [--json]`:
greedy-decoding accuracy on GSM8K-style data (question / answer with ``#### n``)."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("gsm8k", help="GSM8K accuracy (greedy decoding; <answer>, ####, or last number)")
    p.add_argument("--model", help="model folder, embedded name or hub id (default: the adapter's base)")
    p.add_argument("--adapter", help="LoRA adapter folder from a tifa_lite run")
    p.add_argument("--data", required=True, help="GSM8K JSONL file, or a hub id with --source hf/modelscope")
    p.add_argument("--source", choices=["auto", "local", "hf", "modelscope"], default="auto")
    p.add_argument("--split", default="test", help="hub split (default: test)")
    p.add_argument("--limit", type=int, help="evaluate the first N problems")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--system-prompt", help="system prompt (default: the R1-Zero prompt GRPO recipes train with; '' for none)")
    p.add_argument("--bits", type=int, choices=[4, 8], help="load the base quantised, as it was trained")
    p.add_argument("--show", type=int, default=0, help="print the first N completions")
    p.add_argument("--json", action="store_true", help='print {"accuracy": …, "n": …} as the last line')
    p.set_defaults(handler=run)


def run(args) -> int:
    from tifa_lite.evaluation.gsm8k import evaluate_gsm8k

    if args.model is None and args.adapter is None:
        args.model = "smollm2-135m-instruct"
    result = evaluate_gsm8k(
        args.model, args.data, args.adapter, limit=args.limit, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, system_prompt=args.system_prompt, bits=args.bits,
        source=args.source, split=args.split,
    )
    for sample in result["samples"][: args.show]:
        print(f"--- reference {sample['answer']} | predicted {sample['prediction']} | {'OK' if sample['correct'] else 'wrong'}")
        print(sample["completion"])
    print(f"GSM8K accuracy {result['accuracy']:.3f} ({result['correct']}/{result['n']})")
    if args.json:
        print(json.dumps({"accuracy": result["accuracy"], "n": result["n"], "correct": result["correct"]}))
    return 0
