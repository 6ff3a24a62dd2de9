"""`tifa-lite data roleplay --texts DIR_OR_FILES --character NAME --output FILE.jsonl`."""

from __future__ import annotations

from tifa_lite.cli import add_output_option

import json


def register(sub) -> None:
    p = sub.add_parser(
        "roleplay",
        help="dialogue scripts (Name:「…」, Name: …, CSV character,line) → SFT conversations (messages JSONL)",
    )
    p.add_argument("--texts", nargs="+", required=True, help="script files or folders (.txt/.csv/.tsv; one file = one scene)")
    p.add_argument("--character", required=True, help="the speaker name the model will play")
    p.add_argument("--alias", action="append", default=[], help="another name the character appears under (repeatable)")
    p.add_argument("--system-prompt", help="system prompt file (default: system_prompt.txt beside the texts, if any)")
    p.add_argument("--no-system-prompt", action="store_true", help="write no system turn")
    p.add_argument("--context-lines", type=int, default=3, help="lines before the character's first line in a scene (default 3)")
    p.add_argument("--max-user-lines", type=int, default=12, help="cap on lines in one user turn, most recent kept (default 12)")
    p.add_argument("--multi-turn", action="store_true", help="group a scene's exchanges into multi-turn conversations")
    p.add_argument("--max-turns", type=int, default=4, help="exchanges per multi-turn conversation (default 4)")
    p.add_argument("--keep-source", action="store_true", help="add a 'source' (file:line) field to each row")
    p.add_argument("--report", help="also write the stats report as JSON to this file")
    add_output_option(p, "output .jsonl", required=True)
    p.set_defaults(handler=run)


def run(args) -> int:
    from tifa_lite.atomic import check_output_path, write_text
    from tifa_lite.errors import DataError
    from tifa_lite.roleplay import convert, write_jsonl

    check_output_path(args.output, "--output", kind="file")
    if args.context_lines < 0 or args.max_user_lines < 1 or args.max_turns < 1:
        raise DataError("--context-lines must be >= 0, --max-user-lines and --max-turns >= 1.")
    rows, report = convert(
        args.texts,
        args.character,
        aliases=tuple(args.alias),
        system_prompt=False if args.no_system_prompt else args.system_prompt,
        context_lines=args.context_lines,
        max_user_lines=args.max_user_lines,
        multi_turn=args.multi_turn,
        max_turns=args.max_turns,
    )
    print(report.format())
    if not rows:
        raise DataError(f"no conversations for --character {args.character!r}; nothing written (see the report above).")
    out = write_jsonl(rows, args.output, keep_source=args.keep_source)
    if args.report:
        write_text(args.report, json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    print(f"wrote {len(rows)} conversations to {out}")
    return 0
