"""A chat template as an Ollama ``TEMPLATE`` (Go ``text/template``), and a small
interpreter of the constructs that template uses, to check it renders what the Jinja does.

Why by hand: nothing on PyPI translates Jinja chat templates to Go templates or runs Go
templates. The Go template is generated from :class:`~tifa_lite.conversation.template_structure.TemplateStructure`
(per-role prefix/suffix read off the Jinja), so it has a fixed shape: ``range`` over
``.Messages``, ``if``/``else if`` on the role, string constants, ``$last`` and the index of
the last user turn. The interpreter covers exactly that shape (Go's own semantics for
``{{-``/``-}}`` trimming, ``eq``/``ne``/``gt``/``and``/``or``/``not``/``len``/``slice``/``index``,
``$x :=`` and ``$x =``); anything else is a parse error, not a silent mis-rendering.

Ollama's data model: ``.Messages`` holds every message (system included) with ``.Role``,
``.Content`` and ``.Thinking`` (Ollama splits ``<think>…</think>`` out of a thinking model's
reply into ``thinking``, and clients send it back that way). The ``<think>`` history policy
is therefore written on ``.Thinking``: with ``strip`` it is rendered only for assistant turns
after the last user turn, as :func:`tifa_lite.conversation.templates.apply_think_policy` does.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tifa_lite.conversation.template_structure import TemplateStructure


def _lit(text: str) -> str:
    # A Go interpreted string literal; JSON's escapes (\n, \", \\, \uXXXX) are all valid Go.
    return "{{- " + json.dumps(text, ensure_ascii=False) + " -}}" if text else ""


def go_template(structure: TemplateStructure, strip_think: bool, drop_bos: bool) -> str:
    """The Ollama TEMPLATE for ``structure``. ``drop_bos``: the runtime adds BOS itself
    (the GGUF says add_bos_token), so a BOS the Jinja writes is left out, never doubled."""
    header_nosys = structure.header_without_system
    # A template without a system turn: a system message is dropped (the header is the same).
    header_sys = structure.header_with_system if structure.has_system else header_nosys
    bos = structure.bos_token
    if drop_bos and bos:
        header_sys = header_sys.removeprefix(bos)
        header_nosys = header_nosys.removeprefix(bos)
    pre, suf = structure.prefix, structure.suffix
    think_when = "(gt $i $lastUser)" if strip_think else "true"
    lines = [
        "{{- $lastUser := -1 -}}",
        '{{- range $i, $m := .Messages -}}{{- if eq $m.Role "user" -}}{{- $lastUser = $i -}}{{- end -}}{{- end -}}',
        '{{- if and .Messages (eq (index .Messages 0).Role "system") -}}' + _lit(header_sys)
        + "{{- else -}}" + _lit(header_nosys) + "{{- end -}}",
        "{{- range $i, $m := .Messages -}}",
        "{{- $last := eq (len (slice $.Messages $i)) 1 -}}",
        # A system message is only rendered first, where the template's header expects it.
        ('{{- if eq .Role "system" -}}{{- if eq $i 0 -}}{{- .Content -}}' + _lit(suf["system"]) + "{{- end -}}"
         if structure.has_system else '{{- if eq .Role "system" -}}'),
        '{{- else if eq .Role "user" -}}' + _lit(pre["user"]) + "{{- .Content -}}" + _lit(suf["user"]),
        '{{- else if eq .Role "assistant" -}}' + _lit(pre["assistant"])
        + "{{- if and .Thinking " + think_when + ' -}}{{- "<think>" -}}{{- .Thinking -}}{{- "</think>\\n" -}}{{- end -}}'
        + "{{- .Content -}}"
        # The last assistant message is the one being continued: left open, as Ollama expects.
        + ("{{- if not $last -}}" + _lit(suf["assistant"]) + "{{- end -}}" if suf["assistant"] else ""),
        "{{- end -}}",
        '{{- if and $last (ne .Role "assistant") -}}' + _lit(structure.generation_prompt) + "{{- end -}}",
        "{{- end -}}",
    ]
    return "\n".join(lines)


def ollama_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Messages as Ollama hands them to a thinking model's template: the ``<think>`` block of
    an assistant turn moved from ``content`` to ``thinking``."""
    out = []
    for m in messages:
        content, thinking = m["content"], ""
        if m["role"] == "assistant" and content.lstrip().startswith("<think>") and "</think>" in content:
            thinking, _, content = content.lstrip()[len("<think>"):].partition("</think>")
            content = content.lstrip()
        out.append({"Role": m["role"], "Content": content, "Thinking": thinking})
    return out


# ---- the interpreter -------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\(|\)(?:\.\w+)*|:=|=|,|-?\d+|\$\w*(?:\.\w+)*|\.\w+(?:\.\w+)*|\.|\w+)')


class GoTemplateError(ValueError):
    pass


def _tokens(expr: str) -> list[str]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise GoTemplateError(f"cannot read {expr[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _parse(template: str) -> list:
    """Nodes: ("text", s) | ("expr", tokens) | ("if", [(cond, body)...], else_body) |
    ("range", (idx, var), tokens, body)."""
    pieces: list[tuple[str, Any]] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        if pieces and pieces[-1][0] == "trim_next":
            pieces.pop()
            text = text.lstrip()
        if text:
            pieces.append(("text", text))
        pieces.append(("action", m.group(2).strip()))
        if m.group(3):
            pieces.append(("trim_next", None))
        pos = m.end()
    tail = template[pos:]
    if pieces and pieces[-1][0] == "trim_next":
        pieces.pop()
        tail = tail.lstrip()
    if tail:
        pieces.append(("text", tail))

    def block(i: int, stop: tuple[str, ...]) -> tuple[list, int, str]:
        nodes: list = []
        while i < len(pieces):
            kind, value = pieces[i]
            if kind == "text":
                nodes.append(("text", value))
                i += 1
                continue
            word = value.split(None, 1)[0] if value else ""
            if word in stop or (value.startswith("else") and "else" in stop):
                return nodes, i, value
            if word == "if":
                branches, else_body = [], []
                cond = value[2:]
                while True:
                    body, i, closing = block(i + 1, ("end", "else"))
                    branches.append((_tokens(cond), body))
                    if closing == "end":
                        break
                    if closing.startswith("else if"):
                        cond = closing[len("else if"):]
                        continue
                    else_body, i, closing = block(i + 1, ("end",))
                    break
                nodes.append(("if", branches, else_body))
                i += 1
            elif word == "range":
                m = re.fullmatch(r"range\s+(\$\w+)\s*,\s*(\$\w+)\s*:=\s*(.+)", value, re.DOTALL)
                if not m:
                    raise GoTemplateError(f"only `range $i, $x := …` is supported: {value!r}")
                body, i, _ = block(i + 1, ("end",))
                nodes.append(("range", (m.group(1), m.group(2)), _tokens(m.group(3)), body))
                i += 1
            else:
                nodes.append(("expr", _tokens(value)))
                i += 1
        if stop:
            raise GoTemplateError(f"missing {{{{ end }}}} (open block wanted one of {stop})")
        return nodes, i, ""

    nodes, _, _ = block(0, ())
    return nodes


def _truth(value: Any) -> bool:
    return bool(value) and value != 0


_FUNCS = {
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "lt": lambda a, b: a < b,
    "not": lambda a: not _truth(a),
    "len": len,
    "slice": lambda seq, i=0, j=None: seq[i:j],
    "index": lambda seq, i: seq[i],
}


def _field(value: Any, path: list[str]) -> Any:
    for name in path:
        value = value.get(name, "") if isinstance(value, dict) else getattr(value, name)
    return value


def _eval(tokens: list[str], scope: dict[str, Any], dot: Any) -> Any:
    def operand(i: int) -> tuple[Any, int]:
        t = tokens[i]
        if t == "(":
            depth, j = 1, i + 1
            while depth:
                depth += 1 if tokens[j] == "(" else -1 if tokens[j].startswith(")") else 0
                j += 1
            value = _eval(tokens[i + 1:j - 1], scope, dot)
            path = tokens[j - 1][2:]  # `(index .Messages 0).Role`
            return (_field(value, path.split(".")) if path else value), j
        if t.startswith('"'):
            return json.loads(t), i + 1
        if re.fullmatch(r"-?\d+", t):
            return int(t), i + 1
        if t == ".":
            return dot, i + 1
        if t.startswith("."):
            return _field(dot, t[1:].split(".")), i + 1
        if t.startswith("$"):
            name, *path = t.split(".")
            if name not in scope:
                raise GoTemplateError(f"undefined variable {name}")
            return _field(scope[name], path), i + 1
        if t in ("true", "false"):
            return t == "true", i + 1
        raise GoTemplateError(f"unexpected {t!r}")

    if len(tokens) >= 2 and tokens[0].startswith("$") and tokens[1] in (":=", "="):
        if tokens[1] == "=" and tokens[0] not in scope:
            raise GoTemplateError(f"assignment to undeclared {tokens[0]}")
        scope[tokens[0]] = _eval(tokens[2:], scope, dot)
        return None
    head = tokens[0]
    if head in ("and", "or"):
        # Go evaluates and/or lazily: `and .Messages (index .Messages 0)` is safe on no messages.
        i, value = 1, None
        while i < len(tokens):
            value, i = operand(i)
            if _truth(value) != (head == "and"):
                return value
        return value
    if head in _FUNCS:
        args, i = [], 1
        while i < len(tokens):
            value, i = operand(i)
            args.append(value)
        return _FUNCS[head](*args)
    value, i = operand(0)
    if i != len(tokens):
        raise GoTemplateError(f"cannot read {' '.join(tokens)!r}")
    return value


class _Scope(dict):
    """Go variables: a block sees its parent's and may assign to them; its own die with it."""

    def __init__(self, parent: "_Scope | None" = None):
        super().__init__()
        self.parent = parent

    def __contains__(self, key):
        return dict.__contains__(self, key) or (self.parent is not None and key in self.parent)

    def __getitem__(self, key):
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        return self.parent[key]

    def __setitem__(self, key, value):
        owner = self
        while owner is not None and not dict.__contains__(owner, key):
            owner = owner.parent
        dict.__setitem__(owner if owner is not None else self, key, value)

    def declare(self, key, value):
        dict.__setitem__(self, key, value)


def render_go_template(template: str, data: dict[str, Any]) -> str:
    """Render ``template`` with Ollama's data (``{"Messages": [{"Role", "Content", "Thinking"}]}``)."""
    out: list[str] = []

    def run(nodes: list, scope: _Scope, dot: Any) -> None:
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "expr":
                tokens = node[1]
                if len(tokens) >= 2 and tokens[1] == ":=":
                    scope.declare(tokens[0], _eval(tokens[2:], scope, dot))
                    continue
                value = _eval(tokens, scope, dot)
                if value is not None:
                    out.append(str(value))
            elif kind == "if":
                for cond, body in node[1]:
                    if _truth(_eval(cond, scope, dot)):
                        run(body, _Scope(scope), dot)
                        break
                else:
                    run(node[2], _Scope(scope), dot)
            elif kind == "range":
                (index_var, item_var), tokens, body = node[1], node[2], node[3]
                for i, item in enumerate(_eval(tokens, scope, dot)):
                    inner = _Scope(scope)
                    inner.declare(index_var, i)
                    inner.declare(item_var, item)
                    run(body, inner, item)

    root = _Scope()
    root.declare("$", data)
    run(_parse(template), root, data)
    return "".join(out)
