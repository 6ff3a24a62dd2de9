"""`tifa-lite pairs reference-vs-self|anti-repetition|repetition`: build preference pairs
from a model's own generations, or measure how repetitive its samples are."""

from __future__ import annotations

from tifa_lite.cli import add_output_option

import json


def _common(p, out: bool = True) -> None:
    p.add_argument("--model", default=None, help="base model: embedded name, folder or hub id")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder of a tifa_lite run (its base is read from it)")
    p.add_argument("--data", required=True, help="prompts: JSONL/JSON file, folder or glob")
    if out:
        add_output_option(p, "output JSONL (preference form, scores kept)", required=True)
    p.add_argument("--limit", type=int, default=None, help="use the first N prompts")
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=8, help="sequences generated at once")
    p.add_argument("--ngram", type=int, default=3, help="n of the n-gram repetition rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bits", type=int, choices=[4, 8], default=None, help="load the base quantised")


def register(sub) -> None:
    p = sub.add_parser("pairs", help="build DPO preference pairs from model generations")
    group = p.add_subparsers(dest="pairs_command", required=True)

    ref = group.add_parser("reference-vs-self", help="chosen = reference answer, rejected = the model's own answer")
    _common(ref)
    ref.add_argument("--greedy", action="store_true", help="greedy decoding for the model's answer")
    ref.set_defaults(handler=run_reference_vs_self)

    rep = group.add_parser("anti-repetition", help="chosen/rejected = least/most repetitive of N samples")
    _common(rep)
    rep.add_argument("--samples", type=int, default=4, help="samples per prompt")
    rep.add_argument("--min-gap", type=float, default=0.1, help="skip prompts whose repetition gap is smaller")
    rep.add_argument("--min-units", type=int, default=8, help="shortest sample (words/CJK chars) that may be chosen")
    rep.set_defaults(handler=run_anti_repetition, temperature=0.9)

    score = group.add_parser("repetition", help="mean n-gram repetition rate of sampled answers (last line JSON)")
    _common(score, out=False)
    score.add_argument("--samples", type=int, default=1)
    score.set_defaults(handler=run_repetition)


def _prompts(args, need_reference: bool = False):
    from tifa_lite.pairs import read_prompts

    return read_prompts(args.data, limit=args.limit, on_error=args.on_error,
                        system_prompt=args.system_prompt, need_reference=need_reference)


def _model(args):
    from tifa_lite.modeling.inference import load_inference_model

    model, tokenizer, *_ = load_inference_model(
        args.model if args.model or args.adapter else "smollm2-135m-instruct", args.adapter, bits=args.bits
    )
    return model, tokenizer


def _settings(args, num_samples: int, do_sample: bool = True):
    from tifa_lite.pairs import GenerationSettings

    return GenerationSettings(
        num_samples=num_samples, max_new_tokens=args.max_new_tokens, do_sample=do_sample,
        temperature=args.temperature, top_p=args.top_p, batch_size=args.batch_size, seed=args.seed,
    )


def _build(args, outcomes, need_reference: bool = False) -> int:
    """Every outcome is journalled as it comes (a killed build resumes); the output is written
    at the end, atomically, and only if it holds a pair."""
    from tifa_lite.atomic import check_output_path
    from tifa_lite.pairs.journal import PairJournal

    check_output_path(args.output, "--output", kind="file")
    items = _prompts(args, need_reference)
    settings = {k: v for k, v in vars(args).items() if k not in ("handler", "verbose")}
    from tifa_lite.interrupts import describe
    from tifa_lite.runlock import output_lock

    with output_lock(args.output, "--output"), PairJournal(args.output, settings) as journal, describe(kept=lambda: (
            f"{len(journal.outcomes)} of {len(items)} prompt(s) done, in the journal {journal.path} "
            "(the same command continues from there)")):
        done = journal.done
        if any(item.where not in done for item in items):
            model, tokenizer = _model(args)
            for outcome in outcomes(model, tokenizer, items, done):
                journal.record(outcome)
        report = journal.finish(items)
    print(json.dumps({"out": str(args.output), "prompts": report.prompts, "pairs": report.pairs, "skipped": report.skipped}))
    return 0


def run_reference_vs_self(args) -> int:
    from tifa_lite.pairs.builders import iter_reference_vs_self

    settings = _settings(args, 1, not args.greedy)
    return _build(args, lambda model, tokenizer, items, done: iter_reference_vs_self(
        model, tokenizer, items, settings, args.ngram, done=done), need_reference=True)


def run_anti_repetition(args) -> int:
    from tifa_lite.errors import ConfigError
    from tifa_lite.pairs.builders import iter_anti_repetition

    if args.samples < 2:
        raise ConfigError(f"--samples {args.samples}: anti-repetition compares samples of one prompt; give at least 2.")
    settings = _settings(args, args.samples)
    return _build(args, lambda model, tokenizer, items, done: iter_anti_repetition(
        model, tokenizer, items, settings, args.ngram, args.min_gap, args.min_units, done=done))


def run_repetition(args) -> int:
    from tifa_lite.pairs import mean_repetition

    items = _prompts(args)
    model, tokenizer = _model(args)
    print(json.dumps(mean_repetition(model, tokenizer, items, _settings(args, args.samples), args.ngram)))
    return 0
