"""`tifa-lite export gguf --model DIR --output FILE [--outtype q4_k_m|q5_k_m|q6_k|q8_0|f16|bf16] [--converter llama.cpp|builtin] [--check llama.cpp]`."""

from __future__ import annotations

import json


def register(sub) -> None:
    from tifa_lite.export.llamacpp_convert import CONVERTERS, OUTTYPES

    p = sub.add_parser("gguf", help="write a merged model as GGUF with llama.cpp's own converter and quantiser (llama.cpp, Ollama), with a round-trip check")
    p.add_argument("--model", required=True, help="model folder (e.g. the output of `tifa-lite merge`)")
    p.add_argument("--output", required=True, help="GGUF file to write")
    p.add_argument("--outtype", default="f16", choices=list(OUTTYPES),
                   help="q4_k_m/q5_k_m/q6_k: llama.cpp's quantiser (needs scripts/install_llama_cpp.sh); q8_0/f16/bf16: its converter alone")
    p.add_argument("--converter", default="llama.cpp", choices=list(CONVERTERS),
                   help="llama.cpp: its convert_hf_to_gguf.py from the pinned llama-cpp-python source (fetched by pip once); "
                        "builtin: our writer, f16/q8_0 for Llama/Mistral/Qwen2/Qwen3 only, nothing fetched")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--tolerance", type=float, help="max logit difference GGUF vs HF (default per outtype)")
    p.add_argument("--no-check", action="store_true", help="skip the round-trip check through transformers")
    p.add_argument("--check", choices=["llama.cpp"], help="also run the file in llama.cpp and compare with transformers "
                   "(template, BOS/EOS, prompt tokens, greedy tokens, stopping); needs scripts/install_llama_cpp.sh")
    p.add_argument("--json", action="store_true", help="print the report as JSON on the last line")
    p.set_defaults(handler=run)


def run(args) -> int:
    from tifa_lite.export.gguf import export_gguf

    report = export_gguf(args.model, args.output, outtype=args.outtype, overwrite=args.overwrite,
                         check=not args.no_check, tolerance=args.tolerance, llama_cpp=args.check == "llama.cpp",
                         converter=args.converter)
    line = f"wrote {report['output']} ({report['outtype']}, {report['bytes'] / 2**20:.1f} MiB)"
    rt = report.get("round_trip")
    if rt:
        line += (f"; round trip through transformers: max logit diff {rt['max_logit_diff']:.3g} "
                 f"(tolerance {rt['tolerance']:g}), next-token agreement {rt['next_token_agreement']:.0%}")
    lc = report.get("llama_cpp")
    if lc:
        g = lc["greedy"]
        line += (f"; llama.cpp: chat template, BOS/EOS and prompt tokens match, greedy tokens agree "
                 f"{g['teacher_forced_agreement']:.0%} (teacher-forced), free-running {g['same_leading_tokens']}"
                 f"/{g['hf_tokens']} the same, stopped: transformers {g['hf_stopped']}, llama.cpp {g['llama_cpp_stopped']}")
    print(line)
    if args.json:
        print(json.dumps(report))
    return 0
