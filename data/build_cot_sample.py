"""Build data/cot_gsm8k_sample.jsonl: GSM8K solutions rewritten as R1-style
<think>/<answer> replies (the CoT cold start before GRPO, Tifa stage 2).

The reply layout is exactly the one the R1-Zero rewards score (tifa_lite.rewards.rule,
strict_format), so the GRPO stage starts from a model that already answers in format.
Run from the repo root:  python data/build_cot_sample.py ../shared/data/gsm8k/train.jsonl
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from tifa_lite.data.gsm8k import R1_ZERO_SYSTEM_PROMPT, final_answer

CALCULATOR = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations: "48/2 = <<48/2=24>>24"


def to_messages(row: dict, where: str) -> dict:
    reasoning = CALCULATOR.sub("", row["answer"].split("####")[0]).strip()
    answer = final_answer(row["answer"], where)
    return {"messages": [
        {"role": "system", "content": R1_ZERO_SYSTEM_PROMPT},
        {"role": "user", "content": row["question"]},
        {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n<answer>\n{answer}\n</answer>"},
    ]}


def main(source: str, out: str = "data/cot_gsm8k_sample.jsonl", start: int = 0, count: int = 200) -> None:
    lines = Path(source).read_text(encoding="utf-8").splitlines()[start:start + count]
    rows = [to_messages(json.loads(line), f"{source}:{start + i + 1}") for i, line in enumerate(lines)]
    Path(out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
