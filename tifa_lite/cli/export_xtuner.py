"""`tifa-lite export xtuner RECIPE [--output FILE.py] [--profile P] [key=value …]`."""

from __future__ import annotations

from tifa_lite.cli import add_output_option

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "xtuner",
        help="write an equivalent xtuner (0.1.x) QLoRA config, plus the recipe's data in xtuner's conversation JSONL",
    )
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. lora.r=32")
    p.add_argument("--profile", action="append", help="profile overlay from recipes/profiles (repeatable)")
    add_output_option(p, "config file to write (.py; default: <recipe name>_xtuner.py here); "
                         "the data goes beside it as <name>_data.jsonl")
    p.add_argument("--prompt-template", help="a name from xtuner's PROMPT_TEMPLATE, when the model's chat "
                                             "template cannot be matched automatically")
    p.set_defaults(handler=run)


def run(args) -> int:
    from tifa_lite.config import load_recipe
    from tifa_lite.export.xtuner import export_xtuner

    config = load_recipe(args.recipe, args.overrides, profile=args.profile)
    name = Path(args.recipe).stem
    out = Path(args.output) if args.output else Path(f"{name}_xtuner.py")
    result = export_xtuner(config, out, prompt_template=args.prompt_template, recipe_name=args.recipe)
    print(f"wrote {result.config_path} and {result.data_path} ({result.rows} rows)")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"train with: xtuner train {result.config_path}")
    return 0
