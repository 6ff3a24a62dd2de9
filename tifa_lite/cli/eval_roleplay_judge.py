"""`tifa-lite eval roleplay-judge --model M [--adapter A] --judge J --data FILE --limit N --json`:
the character's replies on held-out scenes, rated by a judge model (local, or an
OpenAI-compatible endpoint with --judge-url), or compared with another model's replies
(--against-model / --against-adapter) or the script's lines (--against-reference)."""

from __future__ import annotations

import json
import sys

from tifa_lite.training.budgets import EMBEDDED


def register(sub) -> None:
    p = sub.add_parser("roleplay-judge", help="LLM-judge scores (or A-vs-B win rate) of a character's replies")
    p.add_argument("--model", help="model folder, embedded name or hub id (default: the adapter's base)")
    p.add_argument("--adapter", help="LoRA adapter folder from a tifa_lite run")
    p.add_argument("--bits", type=int, choices=[4, 8], help="load the replying models quantised")
    p.add_argument("--data", required=True, help="held-out conversations (messages JSONL, e.g. from `tifa-lite data roleplay`)")
    p.add_argument("--limit", type=int, default=20, help="judge the first N scenes (default 20)")
    p.add_argument("--character", default="the character", help="the character's name in the judge's request")
    p.add_argument("--judge", default=EMBEDDED,
                   help=f"judge model: local folder / embedded name / hub id, or the model name at --judge-url (default {EMBEDDED})")
    p.add_argument("--judge-adapter", help="LoRA adapter for a local judge")
    p.add_argument("--judge-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="environment variable holding the endpoint's key")
    p.add_argument("--prompts", help="criteria and judge requests (a copy of tifa_lite/evaluation/roleplay_judge.yaml)")
    p.add_argument("--against-model", help="pairwise: compare with this model's replies")
    p.add_argument("--against-adapter", help="pairwise: compare with this adapter's replies (its base unless --against-model)")
    p.add_argument("--against-reference", action="store_true", help="pairwise: compare with the character's real lines")
    p.add_argument("--max-new-tokens", type=int, default=128, help="reply length")
    p.add_argument("--judge-max-new-tokens", type=int, default=256, help="judge answer length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help='print {"score": …, "n": …} or {"win_rate": …, "n": …} as the last line')
    p.set_defaults(handler=run)


def run(args) -> int:
    from tifa_lite.evaluation.roleplay_judge import evaluate_roleplay_judge

    result = evaluate_roleplay_judge(
        args.data, args.model, args.adapter, judge=args.judge, judge_adapter=args.judge_adapter,
        judge_url=args.judge_url, judge_key_env=args.judge_key_env, against_model=args.against_model,
        against_adapter=args.against_adapter, against_reference=args.against_reference, prompts=args.prompts,
        character=args.character, limit=args.limit, bits=args.bits, max_new_tokens=args.max_new_tokens,
        judge_max_new_tokens=args.judge_max_new_tokens, seed=args.seed,
    )
    for example in result.pop("examples"):
        print(json.dumps(example, ensure_ascii=False), file=sys.stderr)
    headline = "win_rate" if "win_rate" in result else "score"
    print(f"judge {result['judge']}: {headline} {result[headline]} over {result['n']} scenes, "
          f"{result['unparsable']} unparsable judge answers", file=sys.stderr)
    if args.json:
        print(json.dumps({headline: result.pop(headline), "n": result.pop("n"), **result}, ensure_ascii=False))
    else:
        print(f"{headline}={result[headline]} n={result['n']} unparsable={result['unparsable']}")
    return 0
