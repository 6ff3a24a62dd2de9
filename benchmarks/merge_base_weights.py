"""Merge into the original W or into dequant(NF4(W)): which one is the model that was trained?

For a QLoRA run, merges with ``--base-weights original`` and ``dequantized`` (fp32 and bf16)
are each scored against the trained model (the 4-bit base as the run held it + the adapter,
unmerged) on held-out prompts, by the parity report's merge step: per-token KL over prompt +
the trained model's greedy reply, top-1 agreement, first greedy divergence.

    python benchmarks/merge_base_weights.py --run RUN --prompts data/roleplay_sheldon_heldout.jsonl
    python benchmarks/merge_base_weights.py --tiny-qwen2 --prompts data/roleplay_sheldon_heldout.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def tiny_qwen2_run(root: Path, tokenizer_from: str) -> Path:
    """A random 2-layer Qwen2, and a QLoRA adapter trained on it for a few steps (NF4,
    double quant, fp32), written as a run folder (resolved_config.yaml, run_summary.json)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, Qwen2Config, Qwen2ForCausalLM

    from tifa_lite.modeling.resolve import resolve_model
    from tifa_lite.config.schema import ModelConfig

    tok = AutoTokenizer.from_pretrained(resolve_model(ModelConfig(name_or_path=tokenizer_from)).path)
    base = root / "qwen2-base"
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(base)
    tok.save_pretrained(base)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, quantization_config=bnb)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"))
    tok.pad_token = tok.pad_token or tok.eos_token
    batch = tok(["The sea is wide and deep.", "Two plus two is four."], return_tensors="pt", padding=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(8):
        model(**batch, labels=batch["input_ids"]).loss.backward()
        opt.step()
        opt.zero_grad()
    run = root / "qwen2-run"
    model.save_pretrained(run)
    tok.save_pretrained(run)
    (run / "resolved_config.yaml").write_text(
        f"model:\n  name_or_path: {base}\nquant:\n  bits: 4\n  quant_type: nf4\n  double_quant: true\n  compute_dtype: auto\n")
    (run / "run_summary.json").write_text(json.dumps({"precision": "fp32"}))
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run")
    ap.add_argument("--tiny-qwen2", action="store_true")
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--out", default="benchmarks/results/raw/merge_base_weights.jsonl")
    args = ap.parse_args()

    import tifa_lite
    from tifa_lite.export.parity import ParityError, check_chain

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else tiny_qwen2_run(Path(tmp), "smollm2-135m-instruct")
        rows = []
        for dtype in args.dtypes.split(","):
            for into in ("original", "dequantized"):
                merged = Path(tmp) / f"merged-{into}-{dtype}"
                tifa_lite.merge(run, merged, dtype=dtype, base_weights=into, check=False)
                try:
                    report = check_chain(run, merged, prompts=args.prompts, limit=args.limit, tokens=args.tokens)
                except ParityError as exc:
                    report = exc.report
                m = report["rows"][0]["metrics"]
                row = {"model": "tiny-qwen2 (random)" if args.tiny_qwen2 else str(run), "dtype": dtype,
                       "base_weights": into, "prompts": report["n_prompts"], "positions": m["positions"],
                       "mean_kl": m["mean_kl"], "max_kl": m["max_kl"], "top1": m["top1_agreement"],
                       "greedy_identical": m["greedy_identical"], "first_divergence": m["first_divergence"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        print("| model | dtype | ΔW added to | mean KL | max KL | top-1 | greedy identical | first divergence |")
        print("|---|---|---|---:|---:|---:|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['dtype']} | {r['base_weights']} | {r['mean_kl']:.3g} | {r['max_kl']:.3g} | "
                  f"{r['top1']:.1%} | {r['greedy_identical']} | {r['first_divergence']} |")


if __name__ == "__main__":
    main()
