"""An LLM judge for role-play: the character's replies on held-out scenes, rated by a judge
model on RoleLLM / CharacterGLM-style criteria (in character, consistent with the scene,
fluent, never out of character), or compared side by side with another model's (or the
script's own) replies, as Ziya reports its win rates.

The criteria and both requests live in ``roleplay_judge.yaml`` beside this module; users
copy and edit it (``--prompts FILE``). The judge is any local HF chat model
(:class:`LocalJudge`) or an OpenAI-compatible ``/chat/completions`` endpoint
(:class:`EndpointJudge`, key from an environment variable). The endpoint client is the
standard library's urllib: one JSON POST needs no SDK, and the kit gains no dependency.

A judge's answer that does not parse (a small model rambles; a big one adds prose) is
counted as unparsable, never scored as anything. Pairwise judging asks twice per scene
with the two replies in both orders, so a judge that prefers whichever comes first scores
both sides equally instead of favouring one.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import string
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tifa_lite.errors import ConfigError, TifaError

DEFAULT_PROMPTS = Path(__file__).with_name("roleplay_judge.yaml")
PLACEHOLDERS = {
    "single": {"character", "profile", "context", "reference", "criteria", "example", "response"},
    "pairwise": {"character", "profile", "context", "reference", "criteria", "response_a", "response_b"},
}


@dataclass
class Scene:
    """One held-out moment: the conversation before the character's last line, and that line."""

    profile: str | None
    context: list[dict[str, str]]  # user/assistant turns, ending with the line to answer
    reference: str
    where: str


def scenes_from(conversations: list[tuple[list[dict], str]]) -> list[Scene]:
    scenes = []
    for messages, where in conversations:
        profile = messages[0]["content"] if messages[0]["role"] == "system" else None
        turns = [m for m in messages if m["role"] != "system"]
        last = max(i for i, m in enumerate(turns) if m["role"] == "assistant")
        scenes.append(Scene(profile, turns[:last], turns[last]["content"], where))
    return scenes


def generate_replies(session, scenes: list[Scene]) -> list[str]:
    """``session``: a :class:`tifa_lite.conversation.session.ChatSession`; each reply answers the
    scene's last line with the earlier turns as history."""
    replies = []
    for scene in scenes:
        session.system = scene.profile
        session.history = list(scene.context[:-1])
        replies.append(session.say(scene.context[-1]["content"]))
    return replies


class JudgePrompts:
    def __init__(self, path: str | Path | None = None):
        import yaml

        self.path = Path(path or DEFAULT_PROMPTS).expanduser()
        if not self.path.is_file():
            raise ConfigError(f"--prompts {self.path}: no such file (copy {DEFAULT_PROMPTS} and edit it).")
        data = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        missing = [k for k in ("criteria", "single", "pairwise") if k not in data]
        if missing:
            raise ConfigError(f"{self.path}: missing {', '.join(missing)} (see {DEFAULT_PROMPTS}).")
        if not isinstance(data["criteria"], dict) or not data["criteria"]:
            raise ConfigError(f"{self.path}: criteria must map each criterion's name to what it rates.")
        self.criteria: dict[str, str] = {str(k): str(v) for k, v in data["criteria"].items()}
        self.templates = {kind: string.Template(str(data[kind])) for kind in PLACEHOLDERS}
        for kind, template in self.templates.items():
            unknown = {m.group("named") or m.group("braced") for m in template.pattern.finditer(template.template)}
            unknown -= PLACEHOLDERS[kind] | {None}
            if unknown:
                raise ConfigError(
                    f"{self.path}: {kind} uses ${', $'.join(sorted(unknown))}; it may use "
                    f"${', $'.join(sorted(PLACEHOLDERS[kind]))} ($$ for a literal $)."
                )

    def render(self, kind: str, character: str, scene: Scene, **responses: str) -> str:
        criteria = "\n".join(
            f"- {name}: {string.Template(text).safe_substitute(character=character)}" for name, text in self.criteria.items()
        )
        context = "\n".join(t["content"] if t["role"] == "user" else f"{character}: {t['content']}" for t in scene.context)
        example = json.dumps({name: 7 for name in self.criteria})
        return self.templates[kind].safe_substitute(
            character=character, profile=(scene.profile or "(none)").strip(), context=context,
            reference=scene.reference, criteria=criteria, example=example, **responses,
        )


def parse_scores(text: str, criteria: list[str]) -> dict[str, float] | None:
    """Every criterion's 1-10 score from a judge's answer (a JSON object, else ``name: N``
    lines); None when any is missing or out of range."""
    scores: dict[str, float] = {}
    for match in re.finditer(r"\{[^{}]*\}", text, re.DOTALL):
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            scores = {k: float(v) for k, v in data.items() if k in criteria and isinstance(v, (int, float))}
            break
    if len(scores) < len(criteria):
        for name in criteria:
            found = re.search(rf"{re.escape(name)}\W{{0,5}}(\d+(?:\.\d+)?)", text, re.IGNORECASE)
            if found and name not in scores:
                scores[name] = float(found.group(1))
    if len(scores) < len(criteria) or not all(1 <= v <= 10 for v in scores.values()):
        return None
    return {name: scores[name] for name in criteria}


_VERDICT_JSON = re.compile(r"""["']?winner["']?\s*[:=]\s*["']?\s*(A|B|tie)\b""", re.IGNORECASE)
_VERDICT_BRACKETS = re.compile(r"\[\[\s*(A|B|tie)\s*\]\]", re.IGNORECASE)
_VERDICT_PROSE = re.compile(r"\b(?:response|answer)\s+(A|B)\b\s+(?:is|was)\s+better", re.IGNORECASE)


def parse_verdict(text: str) -> str | None:
    """"A", "B" or "tie" from a pairwise answer ({"winner": "A"}, MT-Bench's [[A]], "Response A
    is better", or the bare letter); None when there is none or it is ambiguous."""
    for pattern in (_VERDICT_JSON, _VERDICT_BRACKETS, _VERDICT_PROSE):
        found = {m.group(1).upper() if m.group(1).lower() != "tie" else "tie" for m in pattern.finditer(text)}
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None
    bare = text.strip().strip(".\"'`*").upper()
    return bare if bare in ("A", "B") else "tie" if bare == "TIE" else None


class Judge(Protocol):
    name: str

    def ask(self, prompt: str) -> str: ...


class LocalJudge:
    """A local HF chat model (folder, embedded name, hub id, + adapter), greedy."""

    def __init__(self, model: str | None, adapter: str | None = None, max_new_tokens: int = 256, bits: int | None = None):
        from tifa_lite.conversation.session import chat

        self.name = str(adapter or model)
        self.session = chat(model, adapter, bits=bits, do_sample=False, max_new_tokens=max_new_tokens, repetition_penalty=1.0)

    def ask(self, prompt: str) -> str:
        self.session.reset()
        self.session.system = None
        return self.session.say(prompt)


class EndpointJudge:
    """An OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, a hosted API)."""

    def __init__(self, url: str, model: str, key_env: str = "OPENAI_API_KEY", max_tokens: int = 256, timeout: float = 120.0):
        base = url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.name, self.model, self.key_env = f"{model} @ {self.url}", model, key_env
        self.max_tokens, self.timeout = max_tokens, timeout

    def ask(self, prompt: str) -> str:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": 0, "max_tokens": self.max_tokens}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            hint = f" (is ${self.key_env} set?)" if exc.code in (401, 403) else ""
            raise TifaError(f"--judge-url {self.url}: HTTP {exc.code}{hint}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise TifaError(f"--judge-url {self.url}: cannot reach the judge ({getattr(exc, 'reason', exc)}).") from None
        except json.JSONDecodeError:
            raise TifaError(f"--judge-url {self.url}: the answer is not JSON; is this an OpenAI-compatible endpoint?") from None
        try:
            return str(payload["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            raise TifaError(f"--judge-url {self.url}: no choices[0].message.content in the answer ({str(payload)[:200]}).") from None


def judge_replies(judge: Judge, prompts: JudgePrompts, scenes: list[Scene], replies: list[str],
                  character: str, keep_examples: int = 3) -> dict[str, Any]:
    """Mean score per criterion over the answers that parsed; ``score`` is their mean."""
    names = list(prompts.criteria)
    rated: list[dict[str, float]] = []
    unparsable, examples = 0, []
    for scene, reply in zip(scenes, replies):
        answer = judge.ask(prompts.render("single", character, scene, response=reply))
        scores = parse_scores(answer, names)
        if scores is None:
            unparsable += 1
        else:
            rated.append(scores)
        if len(examples) < keep_examples:
            examples.append({"where": scene.where, "reply": reply, "judge": answer, "scores": scores})
    criteria = {n: round(statistics.fmean(s[n] for s in rated), 3) for n in names} if rated else {}
    score = round(statistics.fmean(criteria.values()), 3) if criteria else None
    return {"score": score, "n": len(rated), "unparsable": unparsable, "criteria": criteria, "examples": examples}


def judge_pairwise(judge: Judge, prompts: JudgePrompts, scenes: list[Scene], replies: list[str], others: list[str],
                   character: str, keep_examples: int = 3) -> dict[str, Any]:
    """Win rate of ``replies`` over ``others``: per scene, 1 for a win, 0.5 for a tie, 0 for a
    loss, averaged over the two orders that parsed; scenes with no parsed order are left out."""
    per_scene: list[float] = []
    unparsable = consistent = both_parsed = 0
    examples = []
    for scene, mine, theirs in zip(scenes, replies, others):
        verdicts = []
        for a, b, mine_is in ((mine, theirs, "A"), (theirs, mine, "B")):
            answer = judge.ask(prompts.render("pairwise", character, scene, response_a=a, response_b=b))
            verdict = parse_verdict(answer)
            if verdict is None:
                unparsable += 1
                continue
            verdicts.append(0.5 if verdict == "tie" else float(verdict == mine_is))
        if verdicts:
            per_scene.append(statistics.fmean(verdicts))
        if len(verdicts) == 2:
            both_parsed += 1
            consistent += verdicts[0] == verdicts[1]
        if len(examples) < keep_examples:
            examples.append({"where": scene.where, "reply": mine, "other": theirs, "wins": verdicts})
    return {
        "win_rate": round(statistics.fmean(per_scene), 4) if per_scene else None,
        "n": len(per_scene),
        "unparsable": unparsable,
        # Scenes where swapping the order did not change the verdict, of those with both orders parsed.
        "order_consistent": consistent,
        "both_orders_parsed": both_parsed,
        "examples": examples,
    }


def model_replies(model: str | None, adapter: str | None, scenes: list[Scene], *, bits: int | None = None,
                  max_new_tokens: int = 128, seed: int = 0) -> list[str]:
    """Greedy replies (the run's repetition penalty kept) from a model that is freed afterwards,
    so the judge does not have to share memory with it."""
    import gc

    from tifa_lite.conversation.session import chat

    session = chat(model, adapter, bits=bits, seed=seed, do_sample=False, max_new_tokens=max_new_tokens)
    replies = generate_replies(session, scenes)
    del session
    gc.collect()
    return replies


def evaluate_roleplay_judge(
    data: str | Path,
    model: str | None = None,
    adapter: str | None = None,
    *,
    judge: str = "smollm2-135m-instruct",
    judge_adapter: str | None = None,
    judge_url: str | None = None,
    judge_key_env: str = "OPENAI_API_KEY",
    against_model: str | None = None,
    against_adapter: str | None = None,
    against_reference: bool = False,
    prompts: str | Path | None = None,
    character: str = "the character",
    limit: int | None = None,
    bits: int | None = None,
    max_new_tokens: int = 128,
    judge_max_new_tokens: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Scores (``{"score", "n", …}``) or, with an ``against_*`` side, a win rate (``{"win_rate", "n", …}``)."""
    from tifa_lite.evaluation.roleplay import read_conversations

    pairwise = bool(against_model or against_adapter or against_reference)
    if against_reference and (against_model or against_adapter):
        raise ConfigError("compare against the script's lines (--against-reference) or a model (--against-model/--against-adapter), not both.")
    judge_prompts = JudgePrompts(prompts)  # a broken prompt file fails before any model loads
    scenes = scenes_from(read_conversations(data, limit))
    replies = model_replies(model, adapter, scenes, bits=bits, max_new_tokens=max_new_tokens, seed=seed)
    others: list[str] = []
    if against_reference:
        others = [scene.reference for scene in scenes]
    elif pairwise:
        others = model_replies(against_model, against_adapter, scenes, bits=bits, max_new_tokens=max_new_tokens, seed=seed)
    judge_impl: Judge = (
        EndpointJudge(judge_url, judge, judge_key_env, judge_max_new_tokens) if judge_url
        else LocalJudge(judge, judge_adapter, judge_max_new_tokens)
    )
    if pairwise:
        result = judge_pairwise(judge_impl, judge_prompts, scenes, replies, others, character)
        result["against"] = "reference" if against_reference else str(against_adapter or against_model)
    else:
        result = judge_replies(judge_impl, judge_prompts, scenes, replies, character)
    result.update(judge=judge_impl.name, prompts=str(judge_prompts.path))
    return result
