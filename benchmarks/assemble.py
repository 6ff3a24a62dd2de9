"""Assemble BENCHMARKS.md from benchmarks/results/*.md (each written by the benchmark
or demonstration that produced it, with its command)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# today.md: one screen of the latest round's figures, first; the history below it.
ORDER = ["today", "zoo", "serve", "lora_gguf", "gpu_fullsize", "sft", "grpo", "reasoning", "dpo", "merge", "export", "planner",
         "precision", "roleplay", "roleplay_rl", "layer_loop", "scale_rehearsal"]

HEADER = """# Benchmarks and demonstrations

Every number here was measured by the command shown beside it, on the project's 2-core / 24 GB
CPU machine (no GPU is reachable from this project). Ratios are measured side by side in one run.
Several sections were measured while other training jobs shared the two cores; each says so, and
only their ratios (not absolute seconds) should be compared.
"""


def demote_headings(text: str) -> str:
    """One level under the page title; '#' lines inside code blocks are comments, not headings."""
    out, in_code = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        out.append("#" + line if line.startswith("#") and not in_code else line)
    return "\n".join(out)


def main() -> None:
    parts = [HEADER]
    results = ROOT / "benchmarks" / "results"
    for name in ORDER:
        path = results / f"{name}.md"
        if path.is_file():
            parts.append(demote_headings(path.read_text()))
    (ROOT / "BENCHMARKS.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
