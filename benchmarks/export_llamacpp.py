"""The GGUF export of the embedded SmolLM2-135M-Instruct run by llama.cpp against transformers.

    OMP_NUM_THREADS=2 python benchmarks/export_llamacpp.py --out /tmp/tifa_export_llamacpp

Exports f16 and q8_0 with `tifa-lite export gguf --check llama.cpp` (the same code path) and
prints each report as JSON and one Markdown table row. Needs `bash scripts/install_llama_cpp.sh`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from tifa_lite.export.gguf import export_gguf
    from tifa_lite.modeling.embedded import embedded_checkpoint

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/tifa_export_llamacpp")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = embedded_checkpoint("smollm2-135m-instruct")
    rows = []
    for outtype in ("f16", "q8_0"):
        report = export_gguf(model, out / f"smollm2-{outtype}.gguf", outtype=outtype, overwrite=True, llama_cpp=True)
        print(json.dumps(report, indent=1))
        lc, g = report["llama_cpp"], report["llama_cpp"]["greedy"]
        rows.append(
            f"| {outtype} | {report['bytes'] / 2**20:.1f} | {report['round_trip']['max_logit_diff']:.3g} | "
            f"{lc['chat_template_matches']} | {lc['bos']['llama_cpp']}/{lc['eos']['llama_cpp']} | {lc['add_bos']} | "
            f"{lc['prompt_tokens_match']} ({lc['prompt_tokens']['llama_cpp']}) | {g['teacher_forced_agreement']:.3f} | "
            f"{g['same_leading_tokens']}/{g['hf_tokens']} | {g['hf_stopped']}/{g['llama_cpp_stopped']} "
            f"({g['hf_tokens']}/{g['llama_cpp_tokens']} tokens) | {lc['passed']} |"
        )
    print("| outtype | MiB | round-trip max logit diff | chat template | BOS/EOS ids | add BOS | prompt tokens match | "
          "teacher-forced agreement | free-running same tokens | stopped HF/llama.cpp | passed |")
    print("|---|---:|---:|---|---|---|---|---:|---:|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
