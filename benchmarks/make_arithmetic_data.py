"""Easy arithmetic word problems in GSM8K's format (question / "… #### n"), for the GRPO
CPU demonstration: small enough numbers that a 135M model is sometimes right, so the
correctness reward has variance to learn from. Train and test share no question.

    python benchmarks/make_arithmetic_data.py --out data/arithmetic --train 400 --test 100
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

NAMES = ["Tom", "Anna", "Li Wei", "Sara", "Omar", "Mia", "Ken", "Lucy", "Ravi", "Emma", "Jon", "Yuki"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "coins", "cards", "shells", "balloons"]


def problem(rng: random.Random) -> tuple[str, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.choice(["add", "sub", "mul", "add3"])
    if kind == "add":
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        q = f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?"
        return q, f"{a} + {b} = {a + b}\n#### {a + b}"
    if kind == "sub":
        a = rng.randint(8, 30)
        b = rng.randint(1, a - 1)
        q = f"{name} has {a} {item} and gives away {b} of them. How many {item} does {name} have left?"
        return q, f"{a} - {b} = {a - b}\n#### {a - b}"
    if kind == "mul":
        a, b = rng.randint(2, 6), rng.randint(2, 9)
        q = f"{name} has {a} boxes with {b} {item} in each box. How many {item} does {name} have in total?"
        return q, f"{a} * {b} = {a * b}\n#### {a * b}"
    a, b, c = rng.randint(1, 10), rng.randint(1, 10), rng.randint(1, 10)
    q = f"{name} buys {a} {item} on Monday, {b} on Tuesday and {c} on Wednesday. How many {item} did {name} buy?"
    return q, f"{a} + {b} + {c} = {a + b + c}\n#### {a + b + c}"


def generate(n_train: int, n_test: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    while len(rows) < n_train + n_test:
        q, a = problem(rng)
        if q not in seen:
            seen.add(q)
            rows.append({"question": q, "answer": a})
    return rows[:n_train], rows[n_train:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/arithmetic")
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, test = generate(args.train, args.test, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(train)} train / {len(test)} test problems to {out}")


if __name__ == "__main__":
    main()
