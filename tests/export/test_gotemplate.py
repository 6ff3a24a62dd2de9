"""The small Go-template interpreter: Go's semantics for the constructs the Ollama TEMPLATE
uses, and a clear error for anything else (checked against Go itself in test_ollama.py)."""

from __future__ import annotations

import pytest

from tifa_lite.export.gotemplate import GoTemplateError, ollama_messages, render_go_template

MESSAGES = [{"Role": "system", "Content": "S"}, {"Role": "user", "Content": "U"}, {"Role": "assistant", "Content": "A"}]


def test_trimming_markers_remove_the_whitespace_beside_them():
    assert render_go_template("a  {{- \"b\" -}}  \n c", {}) == "abc"
    assert render_go_template("a {{ \"b\" }} c", {}) == "a b c"


def test_range_index_last_and_assignment_to_an_outer_variable():
    template = (
        "{{- $lastUser := -1 -}}{{- range $i, $m := .Messages -}}{{- if eq $m.Role \"user\" -}}"
        "{{- $lastUser = $i -}}{{- end -}}{{- end -}}"
        "{{- range $i, $m := .Messages -}}{{- $last := eq (len (slice $.Messages $i)) 1 -}}"
        "{{ .Role }}{{ if $last }}!{{ end }}{{ if gt $i $lastUser }}>{{ end }},{{- end -}}"
    )
    assert render_go_template(template, {"Messages": MESSAGES}) == "system,user,assistant!>,"


def test_and_or_are_lazy_and_return_an_operand():
    template = '{{ if and .Messages (eq (index .Messages 0).Role "system") }}yes{{ else }}no{{ end }}'
    assert render_go_template(template, {"Messages": []}) == "no"
    assert render_go_template(template, {"Messages": MESSAGES}) == "yes"
    assert render_go_template('{{ or .Missing "fallback" }}', {}) == "fallback"


def test_else_if_chain():
    template = '{{ if eq .R "a" }}A{{ else if eq .R "b" }}B{{ else }}C{{ end }}'
    assert [render_go_template(template, {"R": r}) for r in "abz"] == ["A", "B", "C"]


def test_think_block_moves_to_thinking():
    (m,) = ollama_messages([{"role": "assistant", "content": "<think>plan</think>\n Answer"}])
    assert m == {"Role": "assistant", "Content": "Answer", "Thinking": "plan"}


def test_unknown_constructs_are_errors_not_guesses():
    with pytest.raises(GoTemplateError):
        render_go_template("{{ range .Messages }}x{{ end }}", {"Messages": []})  # only `range $i, $x := …`
    with pytest.raises(GoTemplateError):
        render_go_template("{{ if .A }}unclosed", {"A": 1})
    with pytest.raises(GoTemplateError):
        render_go_template("{{ $undefined }}", {})
