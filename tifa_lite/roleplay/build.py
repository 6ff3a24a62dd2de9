"""Scenes → SFT conversations in our ``messages`` format.

The rule (after Chat-Haruhi-Suzumiya): everything said between two of the character's
lines is what the character answers to, so it becomes one user turn, and the character's
line is the assistant turn. Before the character's first line in a scene there is no
previous answer to anchor on, so the previous ``context_lines`` lines are used instead.
Consecutive lines of the character are one assistant turn. With ``multi_turn`` the
pairs of a scene are grouped into conversations of up to ``max_turns`` exchanges, so the
model also learns to stay in character over a dialogue.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tifa_lite.data.encoding import read_text
from tifa_lite.roleplay.parse import Line, ParseReport, parse_corpus


@dataclass
class Pair:
    user: str
    assistant: str
    source: str  # file:line of the character's (first) line


@dataclass
class BuildReport:
    parse: ParseReport
    character: str
    character_lines: int = 0
    pairs: int = 0
    conversations: int = 0
    turns: int = 0
    duplicates: int = 0
    skipped: Counter = field(default_factory=Counter)
    user_chars: list[int] = field(default_factory=list)
    assistant_chars: list[int] = field(default_factory=list)
    speakers: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        p = self.parse
        return {
            "character": self.character,
            "files": p.files,
            "lines_read": p.lines_read,
            "utterances": p.utterances,
            "narration_lines": p.narration,
            "character_lines": self.character_lines,
            "pairs": self.pairs,
            "conversations": self.conversations,
            "assistant_turns": self.turns,
            "duplicates_removed": self.duplicates,
            "skipped_pairs": dict(self.skipped),
            "dropped_lines": dict(p.dropped),
            "dropped_examples": p.examples,
            "user_chars": _length_stats(self.user_chars),
            "assistant_chars": _length_stats(self.assistant_chars),
            "top_speakers": dict(self.speakers.most_common(8)),
        }

    def format(self) -> str:
        d = self.as_dict()
        out = [
            f"role-play data for {d['character']}: {d['files']} files, {d['lines_read']} lines read "
            f"({d['utterances']} utterances, {d['narration_lines']} narration)",
            f"  character lines: {d['character_lines']}  pairs: {d['pairs']}  conversations: {d['conversations']}  "
            f"assistant turns: {d['assistant_turns']}  duplicates removed: {d['duplicates_removed']}",
            f"  user turn chars: {_fmt_len(d['user_chars'])}",
            f"  assistant turn chars: {_fmt_len(d['assistant_chars'])}",
        ]
        for reason, count in d["skipped_pairs"].items():
            out.append(f"  skipped {count} character lines: {reason}")
        dropped = sum(d["dropped_lines"].values())
        out.append(f"  dropped lines: {dropped}")
        for reason, count in d["dropped_lines"].items():
            out.append(f"    {count} × {reason}, e.g. {'; '.join(d['dropped_examples'].get(reason, [])[:2])}")
        if d["character_lines"] == 0:
            import difflib

            close = difflib.get_close_matches(self.character, list(self.speakers), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(f"  no line spoken by {d['character']!r}{hint}; most frequent speakers: {', '.join(d['top_speakers'])}")
        return "\n".join(out)


def _length_stats(values: list[int]) -> dict:
    if not values:
        return {"mean": 0, "median": 0, "max": 0}
    return {"mean": round(statistics.fmean(values), 1), "median": statistics.median(values), "max": max(values)}


def _fmt_len(s: dict) -> str:
    return f"mean {s['mean']}, median {s['median']}, max {s['max']}"


def render_line(line: Line) -> str:
    return f"{line.speaker}: {line.text}" if line.speaker else f"({line.text})"


def scene_pairs(
    scene: list[Line],
    names: set[str],
    context_lines: int,
    max_user_lines: int,
    report: BuildReport,
) -> list[Pair]:
    pairs: list[Pair] = []
    seen_character = False
    pending: list[Line] = []  # lines since the character last spoke
    i = 0
    while i < len(scene):
        line = scene[i]
        if line.speaker is None or line.speaker.lower() not in names:
            pending.append(line)
            i += 1
            continue
        block = [line]
        while i + 1 < len(scene) and scene[i + 1].speaker is not None and scene[i + 1].speaker.lower() in names:
            i += 1
            block.append(scene[i])
        i += 1
        report.character_lines += len(block)
        context = pending if seen_character else pending[-context_lines:] if context_lines > 0 else []
        context = context[-max_user_lines:]
        pending = []
        seen_character = True
        if not context:
            report.skipped["nothing said before it in the scene"] += len(block)
            continue
        pairs.append(Pair(
            user="\n".join(render_line(c) for c in context),
            assistant="\n".join(b.text for b in block),
            source=block[0].source,
        ))
    return pairs


def build_conversations(
    scenes: list[list[Line]],
    character: str,
    report: BuildReport,
    *,
    aliases: tuple[str, ...] = (),
    system_prompt: str | None = None,
    context_lines: int = 3,
    max_user_lines: int = 12,
    multi_turn: bool = False,
    max_turns: int = 4,
) -> list[dict]:
    names = {character.lower(), *(a.lower() for a in aliases)}
    for scene in scenes:
        report.speakers.update(line.speaker for line in scene if line.speaker)
    rows: list[dict] = []
    seen: set[tuple] = set()
    for scene in scenes:
        pairs = scene_pairs(scene, names, context_lines, max_user_lines, report)
        report.pairs += len(pairs)
        step = max_turns if multi_turn else 1
        for start in range(0, len(pairs), step):
            window = pairs[start:start + step]
            key = tuple((p.user, p.assistant) for p in window)
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
            for p in window:
                messages.append({"role": "user", "content": p.user})
                messages.append({"role": "assistant", "content": p.assistant})
                report.user_chars.append(len(p.user))
                report.assistant_chars.append(len(p.assistant))
            report.turns += len(window)
            rows.append({"messages": messages, "source": window[0].source})
    report.conversations = len(rows)
    return rows


def find_system_prompt(texts: list[str | Path]) -> Path | None:
    """Chat-Haruhi layout: <character>/texts/*.txt beside <character>/system_prompt.txt."""
    for item in texts:
        path = Path(item).expanduser()
        for folder in (path if path.is_dir() else path.parent, (path if path.is_dir() else path.parent).parent):
            candidate = folder / "system_prompt.txt"
            if candidate.is_file():
                return candidate
    return None


def convert(
    texts: list[str | Path],
    character: str,
    *,
    system_prompt: str | Path | None | bool = None,
    **options,
) -> tuple[list[dict], BuildReport]:
    """Read the corpus and build conversations. ``system_prompt``: a file path, None to
    look for ``system_prompt.txt`` beside the texts, or False for no system turn."""
    scenes, parse_report = parse_corpus(list(texts))
    report = BuildReport(parse=parse_report, character=character)
    prompt_text = None
    if system_prompt is not False:
        path = Path(system_prompt) if system_prompt else find_system_prompt(texts)
        if path is not None:
            from tifa_lite.errors import DataError

            if not path.is_file():
                raise DataError(f"--system-prompt {path}: no such file.")
            prompt_text = read_text(path).strip() or None
    rows = build_conversations(scenes, character, report, system_prompt=prompt_text, **options)
    return rows, report
