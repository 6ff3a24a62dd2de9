"""A PEFT LoRA adapter converted for llama.cpp (tifa_lite/export/llamacpp_lora.py: llama.cpp's
convert_lora_to_gguf.py after folding rsLoRA / rank and alpha patterns into lora_B) and run in
llama.cpp on an f16 GGUF of the embedded SmolLM2-135M-Instruct, against the same adapter in
transformers (fp32), on one role-play prompt: the mean absolute logit difference over its
positions, next to what the adapter itself changes, and the argmax agreement. For the rsLoRA
adapter the same file converted without folding is measured too.

    python benchmarks/lora_gguf_parity.py        (needs bash scripts/install_llama_cpp.sh)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.export.test_llamacpp_lora import PROMPT, _llama_cpp_logits, _transformers_logits, make_adapter  # noqa: E402

ADAPTERS = {"plain": {}, "rslora+alpha_pattern": {"use_rslora": True, "alpha_pattern": {"down_proj": 32}}}


def main() -> int:
    from transformers import AutoTokenizer

    from tifa_lite.export.llamacpp_convert import convert, run_script
    from tifa_lite.export.llamacpp_lora import convert_lora
    from tifa_lite.modeling.embedded import embedded_checkpoint

    base = embedded_checkpoint("smollm2-135m-instruct")
    tmp = Path(tempfile.mkdtemp(prefix="lora-gguf-"))
    convert(base, tmp / "base.gguf", "f16")
    ids = AutoTokenizer.from_pretrained(str(base))(PROMPT)["input_ids"]
    base_only = _transformers_logits(base, None, ids)
    print(f"{'adapter':<32} {'positions':>9} {'|Δ logit| vs transformers':>26} {'adapter effect':>15} {'argmax agree':>13}")
    for name, lora in ADAPTERS.items():
        adapter = make_adapter(base, tmp / name, b_scale=0.05, **lora)
        reference = _transformers_logits(base, adapter, ids)
        rows = [(name, _llama_cpp_logits(tmp / "base.gguf", convert_lora(adapter, tmp / f"{name}.gguf", base=base), ids))]
        if lora:
            run_script("convert_lora_to_gguf.py", ["--base", str(base), "--outfile", str(tmp / "raw.gguf"),
                                                   "--outtype", "f16", str(adapter)], tmp / "raw.gguf", adapter)
            rows.append((f"{name}, unfolded", _llama_cpp_logits(tmp / "base.gguf", tmp / "raw.gguf", ids)))
        effect = (reference - base_only).abs().mean().item()
        for label, served in rows:
            error = (served - reference).abs().mean().item()
            agree = (served.argmax(-1) == reference.argmax(-1)).float().mean().item()
            print(f"{label:<32} {len(ids):>9} {error:>26.4f} {effect:>15.4f} {agree:>13.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
