"""`tifa-lite export ollama --model MERGED --output DIR`: the GGUF plus a Modelfile for `ollama create`;
`--model BASE --adapter NAME=PATH …`: the base GGUF, each character's LoRA GGUF and its own Modelfile."""

from __future__ import annotations

import json


def register(sub) -> None:
    from tifa_lite.export.llamacpp_convert import CONVERTERS, OUTTYPES

    p = sub.add_parser("ollama", help="write a merged model as an Ollama folder: model.gguf + Modelfile (template, stops, sampling)")
    p.add_argument("--model", required=True, help="merged model folder (the output of `tifa-lite merge`)")
    p.add_argument("--adapter", action="append", metavar="NAME=PATH",
                   help="a character's LoRA run on --model (the base): written as NAME.lora.gguf with its own "
                        "Modelfile.NAME (repeatable; Ollama takes one adapter per model)")
    p.add_argument("--output", required=True, help="folder to write (model.gguf, Modelfile)")
    p.add_argument("--quant", "--outtype", dest="outtype", default="q4_k_m", choices=list(OUTTYPES),
                   help="GGUF type (default q4_k_m, made by llama.cpp's quantiser: needs scripts/install_llama_cpp.sh)")
    p.add_argument("--converter", default="llama.cpp", choices=list(CONVERTERS), help="see `export gguf --help`")
    p.add_argument("--recipe", help="take the sampling PARAMETERs from this recipe (default: the model's generation_config.json)")
    p.add_argument("--system", help="a SYSTEM prompt for the Modelfile (the character card)")
    p.add_argument("--system-file", help="read the SYSTEM prompt from this file")
    p.add_argument("--keep-think", action="store_true", help="render earlier <think> blocks back to the model")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output folder")
    p.add_argument("--no-check", action="store_true", help="skip the GGUF round trip through transformers")
    p.add_argument("--check", choices=["llama.cpp"], help="also run the GGUF in llama.cpp against transformers (see export gguf)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on the last line")
    p.set_defaults(handler=run)


def run(args) -> int:
    from tifa_lite.cli.chat import system_prompt
    from tifa_lite.export.ollama import export_ollama

    if args.adapter:
        return _run_characters(args, system_prompt(args))
    report = export_ollama(
        args.model, args.output, outtype=args.outtype, recipe=args.recipe, system=system_prompt(args),
        think_policy="keep" if args.keep_think else "strip", overwrite=args.overwrite, check=not args.no_check,
        llama_cpp=args.check == "llama.cpp", converter=args.converter,
    )
    print(f"wrote {report['modelfile']} and {report['gguf']} ({report['bytes'] / 2**20:.1f} MiB)")
    print(f"next: ollama create my-character -f {report['modelfile']} && ollama run my-character")
    if args.json:
        print(json.dumps(report))
    return 0


def _run_characters(args, system: str | None) -> int:
    from pathlib import Path

    from tifa_lite.export.ollama_adapters import export_ollama_characters
    from tifa_lite.serving.adapters import parse_adapters

    plain, adapters = parse_adapters(args.adapter)
    if plain:
        folder = Path(plain).expanduser().resolve()
        adapters = {folder.name: folder}
    report = export_ollama_characters(
        args.model, adapters, args.output, outtype=args.outtype, recipe=args.recipe, system=system,
        keep_think=args.keep_think or None, overwrite=args.overwrite, check=not args.no_check, converter=args.converter)
    print(f"wrote {report['gguf']} ({report['bytes'] / 2**20:.1f} MiB) and, per character:")
    for name, character in report["characters"].items():
        print(f"  {name}: {character['modelfile']} + {Path(character['lora_gguf']).name}"
              f"  → ollama create {name} -f {character['modelfile']}")
    print(report["ollama"]["summary"] + ":")
    for rule in report["ollama"]["rules"]:
        print(f"  - {rule}")
    if args.json:
        print(json.dumps(report))
    return 0
