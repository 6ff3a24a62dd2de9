"""Concurrent chats on `tifa-lite serve` (transformers engine): throughput and time to first
token for 1, 2 and 4 streams at once, continuous batching vs one generation at a time (the
server before issue 35: `generate` on a single worker), side by side in one run.

    python benchmarks/serve_concurrency.py [--model smollm2-135m-instruct] [--max-tokens 128]
                                           [--streams 1,2,4] [--repeats 2]

Each setting starts the real HTTP server on 127.0.0.1 in this process and sends k streamed
chat requests at once from k client threads (different role-play prompts, greedy, the
end-of-turn tokens banned so every stream generates exactly --max-tokens tokens). Reported
per row: wall time until the last stream ends, completion tokens per second over that wall
time, mean and worst time to the first content chunk, and the wall time relative to one
stream in the same mode ("two streams finish in well under twice the time of one").
The batched mode's decode steps run each linear layer in the faster of F.linear and (W @ x.T).T
for its weight shape and row count (tifa_lite/serving/decode_linear.py, timed on the first steps
at each row count); what each settled on is printed at the end. --plain-linear-too adds the
batched mode with F.linear throughout, as the batcher was before it.
Smoke-run: --model <tiny folder> --max-tokens 8 --repeats 1 --frequency-penalty 2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = [
    "Tifa, what's the strongest drink you serve at Seventh Heaven?",
    "Tell me about the night Midgar's sector 7 plate fell.",
    "Barret says you make the best breakfast in the slums. Is that true?",
    "Describe the bar on a quiet Tuesday evening.",
]


def serve_in_thread(app):
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def one_stream(url: str, body: dict) -> tuple[float, float, int]:
    """(seconds to the first content chunk, seconds to the end, completion tokens)."""
    import httpx

    start = time.perf_counter()
    first, tokens = None, 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            elif event["choices"] and event["choices"][0]["delta"].get("content") and first is None:
                first = time.perf_counter() - start
    return (first if first is not None else float("nan")), time.perf_counter() - start, tokens


def run_setting(url: str, k: int, max_tokens: int, banned: dict, frequency_penalty: float = 0.0) -> dict:
    bodies = [{"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": max_tokens,
               "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, "logit_bias": banned,
               "frequency_penalty": frequency_penalty} for i in range(k)]
    start = time.perf_counter()
    with ThreadPoolExecutor(k) as pool:
        results = list(pool.map(lambda b: one_stream(url, b), bodies))
    wall = time.perf_counter() - start
    tokens = sum(r[2] for r in results)
    ttft = [r[0] for r in results]
    return {"wall_s": wall, "tokens": tokens, "tok_per_s": tokens / wall, "ttft_mean_s": statistics.mean(ttft),
            "ttft_max_s": max(ttft)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--streams", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting; the median wall time is kept")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--frequency-penalty", type=float, default=0.0,
                        help="a random tiny model repeats whitespace (no visible first token): 2.0 for a smoke run")
    parser.add_argument("--plain-linear-too", action="store_true",
                        help="also the batched mode with F.linear in every layer (the batcher before decode_linear)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from tifa_lite.conversation.session import chat
    from tifa_lite.conversation.template_structure import end_of_turn_ids
    from tifa_lite.serving.decode_linear import settled
    from tifa_lite.serving.openai_api import ChatServer, build_app

    session = chat(args.model, preset="greedy", max_new_tokens=args.max_tokens)
    eos = end_of_turn_ids(session.tokenizer, session.model.generation_config.eos_token_id)
    banned = {str(i): -100 for i in eos}
    streams = [int(s) for s in args.streams.split(",")]
    max_batch = max(streams)
    modes = {"one at a time": dict(batching=False), "batched": dict(max_batch=max_batch)}
    if args.plain_linear_too:
        modes["batched F.linear"] = dict(max_batch=max_batch)
    rows = []
    for mode, options in modes.items():
        server = ChatServer(session, "bench", max_tokens_cap=args.max_tokens, **options)
        if mode == "batched F.linear":
            server.batcher.linear_forms = False
        uv, thread, url = serve_in_thread(build_app(server))
        try:
            run_setting(url, 1, min(4, args.max_tokens), banned)  # warm-up
            for k in streams:
                runs = sorted((run_setting(url, k, args.max_tokens, banned, args.frequency_penalty)
                               for _ in range(args.repeats)),
                              key=lambda r: r["wall_s"])
                rows.append({"mode": mode, "streams": k, **runs[len(runs) // 2]})
        finally:
            uv.should_exit = True
            thread.join(timeout=10)
    forms = settled(session.model)  # the batched mode's decode steps: each linear layer's form
    print(f"model {args.model}, {args.max_tokens} tokens per stream, torch threads {torch.get_num_threads()}, "
          f"cpu count {os.cpu_count()}, cuda {torch.cuda.is_available()}")
    print(f"{'mode':<16} {'streams':>7} {'wall s':>8} {'x 1 stream':>10} {'tok/s':>8} {'TTFT mean s':>12} {'TTFT max s':>11}")
    for row in rows:
        single = next(r for r in rows if r["mode"] == row["mode"] and r["streams"] == streams[0])
        row["wall_vs_one"] = row["wall_s"] / single["wall_s"]
        print(f"{row['mode']:<16} {row['streams']:>7} {row['wall_s']:>8.2f} {row['wall_vs_one']:>10.2f} "
              f"{row['tok_per_s']:>8.1f} {row['ttft_mean_s']:>12.3f} {row['ttft_max_s']:>11.3f}")
    for (out_f, in_f, k, threads), form in sorted(forms.items()):
        print(f"batched decode, linear {out_f}x{in_f}, {k} rows, {threads} threads: {form}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
