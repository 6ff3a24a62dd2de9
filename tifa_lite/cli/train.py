"""`tifa-lite train RECIPE [key=value …] [--profile P]`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("train", help="run a recipe (sft, cpt, grpo, dpo, orpo, kto, simpo, reward)")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=2 data.path=FILE")
    p.add_argument("--profile", action="append", help="profile overlay from recipes/profiles (repeatable)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from tifa_lite.training.runner import train

    result = train(args.recipe, profile=args.profile, overrides=args.overrides)
    print(f"done: {result.output_dir}")
    return 0
