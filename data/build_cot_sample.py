"""Build data/cot_gsm8k_sample.jsonl: GSM8K solutions rewritten as R1-style
<think>/<answer> replies (the CoT cold start before GRPO, Tifa stage 2).

The reply is the write-up's XML_COT_FORMAT, ``<think>\n{reasoning}\n</think>\n<answer>\n{answer}\n</answer>\n``,
with the solution's lines joined into one: the five R1-Zero rewards (tifa_lite.rewards.rule)
match without DOTALL, so ``strict_format`` fires only on a one-line reasoning and a final
newline. The answer is the normalised number ("1,080" → "1080"), so ``int_answer`` fires too.
Run from the repo root:  python data/build_cot_sample.py ../shared/data/gsm8k/train.jsonl
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from tifa_lite.data.gsm8k import R1_ZERO_SYSTEM_PROMPT, final_answer
from tifa_lite.rewards.rule import normalize_number

CALCULATOR = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations: "48/2 = <<48/2=24>>24"


def to_messages(row: dict, where: str) -> dict:
    lines = CALCULATOR.sub("", row["answer"].split("####")[0]).splitlines()
    reasoning = " ".join(line.strip() for line in lines if line.strip())
    answer = normalize_number(final_answer(row["answer"], where))
    return {"messages": [
        {"role": "system", "content": R1_ZERO_SYSTEM_PROMPT},
        {"role": "user", "content": row["question"]},
        {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n<answer>\n{answer}\n</answer>\n"},
    ]}


def main(source: str, out: str = "data/cot_gsm8k_sample.jsonl", start: int = 0, count: int = 200) -> None:
    lines = Path(source).read_text(encoding="utf-8").splitlines()[start:start + count]
    rows = [to_messages(json.loads(line), f"{source}:{start + i + 1}") for i, line in enumerate(lines)]
    Path(out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
