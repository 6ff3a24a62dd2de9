"""`tifa-lite export check --run RUN --merged DIR [--ollama DIR] [--gguf FILE ...]`: the
parity table from the trained model to Ollama (:mod:`tifa_lite.export.parity`)."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("check", help="one parity table: trained (4-bit base + adapter) → merged → each GGUF in llama.cpp → the Ollama template")
    p.add_argument("--run", required=True, help="the training run (adapter folder with resolved_config.yaml)")
    p.add_argument("--merged", required=True, help="its merged folder (`tifa-lite merge`)")
    p.add_argument("--gguf", action="append", default=[], help="a GGUF of the merged model (repeat for several quants)")
    p.add_argument("--ollama", help="an Ollama folder (`tifa-lite export ollama`): its model.gguf and Modelfile")
    p.add_argument("--prompts", help="held-out prompts, a messages JSONL (default: the run's data.path)")
    p.add_argument("--limit", type=int, default=4, help="prompts used (default 4)")
    p.add_argument("--tokens", type=int, default=32, help="greedy tokens per prompt (default 32)")
    p.add_argument("--keep-think", action="store_true", help="the Ollama folder was exported with --keep-think")
    p.add_argument("--base", help="base model, when the run's recorded one is elsewhere")
    p.add_argument("--output", help="save the report as JSON here (default <merged>/parity_report.json)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on the last line")
    p.set_defaults(handler=run)


def run(args) -> int:
    from pathlib import Path

    from tifa_lite.export.parity import REPORT_FILE, ParityError, check_chain

    output = args.output or str(Path(args.merged) / REPORT_FILE)
    try:
        report = check_chain(args.run, args.merged, ggufs=args.gguf, ollama=args.ollama, prompts=args.prompts,
                             limit=args.limit, tokens=args.tokens, output=output, base=args.base,
                             think_policy="keep" if args.keep_think else "strip")
    except ParityError as exc:
        print(str(exc))
        print(f"report saved to {output}")
        if args.json and exc.report is not None:
            print(json.dumps(exc.report))
        return 1
    print(report["table"])
    print(f"all steps within tolerance; report saved to {output}")
    if args.json:
        print(json.dumps(report))
    return 0
