"""`tifa-lite config RECIPE [--profile P] [key=value …]`: print the fully resolved config."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("config", help="print the fully resolved config of a recipe")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=2")
    p.add_argument("--profile", action="append", help="profile overlay from recipes/profiles (repeatable)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from tifa_lite.config import dump_config, load_recipe

    from tifa_lite.distributed.batch import apply_batch_rule

    config = load_recipe(args.recipe, args.overrides, profile=args.profile)
    config, plan = apply_batch_rule(config)  # issue 6: micro-batch/accumulation from the global batch
    print(f"# batch: {plan.describe()}")
    print(dump_config(config), end="")
    return 0
