"""`tifa-lite eval roleplay --model M [--adapter A] --data FILE [--json]`: held-out
perplexity of the character's own lines, optionally an LLM-judge score."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("roleplay", help="perplexity on the character's held-out lines (+ optional LLM judge)")
    p.add_argument("--model", help="model folder, embedded name or hub id (default: the adapter's base)")
    p.add_argument("--adapter", help="LoRA adapter folder from a tifa_lite run")
    p.add_argument("--data", required=True, help="held-out conversations (messages JSONL, e.g. from `tifa-lite data roleplay`)")
    p.add_argument("--limit", type=int, help="score only the first N conversations")
    p.add_argument("--max-length", type=int, default=2048, help="tokens per conversation; longer ones keep their end")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--bits", type=int, choices=[4, 8], help="load the base quantised, as it was trained")
    p.add_argument("--judge", metavar="MODEL", help="also rate generated replies with this local chat model")
    p.add_argument("--judge-samples", type=int, default=10, help="conversations to judge (default 10)")
    p.add_argument("--character", help="character name for the judge prompt")
    p.add_argument("--max-new-tokens", type=int, default=128, help="reply length for judged generations")
    p.add_argument("--json", action="store_true", help='print {"ppl": …, "n": …} as the last line')
    p.set_defaults(handler=run)


def run(args) -> int:
    from tifa_lite.conversation.session import ChatSession
    from tifa_lite.evaluation.roleplay import perplexity, read_conversations
    from tifa_lite.modeling.inference import load_inference_model

    conversations = read_conversations(args.data, args.limit)
    model, tokenizer, _, _, _ = load_inference_model(args.model, args.adapter, bits=args.bits)
    result = perplexity(model, tokenizer, conversations, max_length=args.max_length, batch_size=args.batch_size).as_dict()
    print(f"role-play perplexity: {result['ppl']:.4f} over {result['n']} conversations, {result['tokens']} assistant tokens",
          file=sys.stderr)
    if args.judge:
        from tifa_lite.evaluation.roleplay_judge import JudgePrompts, LocalJudge, generate_replies, judge_replies, scenes_from

        scenes = scenes_from(conversations[: args.judge_samples])
        replies = generate_replies(ChatSession(model, tokenizer, {"do_sample": False, "max_new_tokens": args.max_new_tokens}), scenes)
        judged = judge_replies(LocalJudge(args.judge), JudgePrompts(), scenes, replies, args.character or "the character")
        result.update(judge_rated=judged["n"], judge_unparsed=judged["unparsable"], judge_scores=judged["criteria"],
                      judge_overall=judged["score"], judge_examples=judged["examples"])
        print(f"judge: {result['judge_rated']} rated, {result['judge_unparsed']} unparsable, overall {result['judge_overall']}",
              file=sys.stderr)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"ppl={result['ppl']:.4f} n={result['n']}")
    return 0
