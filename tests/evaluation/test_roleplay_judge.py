"""The role-play LLM judge: the editable prompt file, parsing that survives malformed judge
answers (counted, never scored), order-swapped pairwise judging, an OpenAI-compatible
endpoint (a stub server on 127.0.0.1 started here) and the embedded model as judge."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.evaluation.test_roleplay import CONVERSATIONS, write_jsonl
from tifa_lite.cli import main
from tifa_lite.errors import ConfigError, TifaError
from tifa_lite.evaluation.roleplay_judge import (
    DEFAULT_PROMPTS, EndpointJudge, JudgePrompts, Scene, judge_pairwise, judge_replies, parse_scores, parse_verdict,
    scenes_from,
)

REPO = Path(__file__).resolve().parents[2]
CRITERIA = ["in_character", "scene_consistency", "fluency", "no_ooc"]
SCENE = Scene(
    profile="Sheldon is a physicist.",
    context=[{"role": "user", "content": "Penny: Hi."}, {"role": "assistant", "content": "Hello."},
             {"role": "user", "content": "Penny: What are you doing?"}],
    reference="Physics.", where="held.jsonl:2",
)


def scores_json(value):
    return json.dumps({name: value for name in CRITERIA})


class Scripted:
    """A judge with canned answers (the endpoint and local judges are tested below)."""

    name = "scripted"

    def __init__(self, answers):
        self.answers, self.prompts = list(answers), []

    def ask(self, prompt):
        self.prompts.append(prompt)
        answer = self.answers.pop(0)
        return answer(prompt) if callable(answer) else answer


def test_default_prompt_file_renders_every_part_of_the_scene():
    prompts = JudgePrompts()
    assert list(prompts.criteria) == CRITERIA
    text = prompts.render("single", "Sheldon", SCENE, response="String theory.")
    for part in ("Sheldon is a physicist.", "Penny: Hi.\nSheldon: Hello.\nPenny: What are you doing?", "Physics.",
                 "String theory.", scores_json(7), "- in_character: speaks as Sheldon would"):
        assert part in text
    pair = prompts.render("pairwise", "Sheldon", SCENE, response_a="Physics!", response_b="Nothing.")
    assert "[RESPONSE A]\nPhysics!" in pair and "[RESPONSE B]\nNothing." in pair and '{"winner": "A"}' in pair


def test_a_broken_prompt_file_is_named_with_what_to_fix(tmp_path):
    text = DEFAULT_PROMPTS.read_text(encoding="utf-8")
    typo = tmp_path / "typo.yaml"
    typo.write_text(text.replace("$response_a", "$reponse_a"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"typo.yaml: pairwise uses \$reponse_a"):
        JudgePrompts(typo)
    (tmp_path / "short.yaml").write_text("criteria: {fluency: fluent}\nsingle: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="short.yaml: missing pairwise"):
        JudgePrompts(tmp_path / "short.yaml")
    with pytest.raises(ConfigError, match="no such file"):
        JudgePrompts(tmp_path / "none.yaml")


def test_edited_criteria_are_what_is_parsed(tmp_path):
    edited = tmp_path / "mine.yaml"
    edited.write_text("criteria: {humour: is it funny}\nsingle: 'Rate $response: $criteria $example'\n"
                      "pairwise: '$response_a or $response_b?'\n", encoding="utf-8")
    prompts = JudgePrompts(edited)
    judge = Scripted(['{"humour": 9}', scores_json(8)])
    out = judge_replies(judge, prompts, [SCENE, SCENE], ["a", "b"], "Sheldon")
    assert judge.prompts[0] == 'Rate a: - humour: is it funny {"humour": 7}'
    assert (out["score"], out["n"], out["unparsable"]) == (9.0, 1, 1)


@pytest.mark.parametrize("answer, expected", [
    (f"Sure! {scores_json(8)} Hope that helps.", {n: 8.0 for n in CRITERIA}),
    ("in_character: 7\nscene_consistency: 6\nfluency = 9\nno_ooc - 10", dict(zip(CRITERIA, [7.0, 6.0, 9.0, 10.0]))),
    ('{"in_character": 7, "scene_consistency": 6, "fluency": 5, "no_ooc": 4', dict(zip(CRITERIA, [7.0, 6.0, 5.0, 4.0]))),
    ('{"in_character": 7, "fluency": 5} and scene_consistency: 3, no_ooc: 2', dict(zip(CRITERIA, [7.0, 3.0, 5.0, 2.0]))),
    ("I think it was great.", None),
    (scores_json(42), None),  # out of range
    ('{"in_character": 7, "fluency": 5}', None),  # criteria missing
    ('{"in_character": "high", "scene_consistency": 6, "fluency": 5, "no_ooc": 4}', None),
    ("", None),
    ("{{{{", None),
])
def test_parse_scores_survives_malformed_answers(answer, expected):
    assert parse_scores(answer, CRITERIA) == expected


@pytest.mark.parametrize("answer, expected", [
    ('{"winner": "B"}', "B"), ("The winner: a.", "A"), ("[[B]]", "B"), ("Response A is better because", "A"),
    ("tie", "tie"), ('{"winner": "tie"}', "tie"), ("B.", "B"),
    ("A or B, hard to say", None), ("[[A]] no wait [[B]]", None), ("A response that rambles", None), ("", None),
])
def test_parse_verdict(answer, expected):
    assert parse_verdict(answer) == expected


def test_scores_average_over_parsed_answers_and_count_the_rest():
    judge = Scripted([scores_json(6), "no idea", scores_json(8), "{oops"])
    out = judge_replies(judge, JudgePrompts(), [SCENE] * 4, ["r1", "r2", "r3", "r4"], "Sheldon")
    assert (out["score"], out["n"], out["unparsable"]) == (7.0, 2, 2)
    assert out["criteria"] == {n: 7.0 for n in CRITERIA}
    assert [e["scores"] is None for e in out["examples"]] == [False, True, False]


def test_pairwise_swaps_the_order_so_a_position_bias_cancels():
    biased = Scripted(['{"winner": "A"}'] * 4)  # always prefers whatever it reads first
    out = judge_pairwise(biased, JudgePrompts(), [SCENE, SCENE], ["mine1", "mine2"], ["other1", "other2"], "Sheldon")
    assert (out["win_rate"], out["n"], out["order_consistent"], out["both_orders_parsed"]) == (0.5, 2, 0, 2)
    assert "[RESPONSE A]\nmine1" in biased.prompts[0] and "[RESPONSE A]\nother1" in biased.prompts[1]

    def prefers_mine(prompt):
        return '{"winner": "A"}' if prompt.index("mine") < prompt.index("other") else '{"winner": "B"}'

    fair = Scripted([prefers_mine, prefers_mine, prefers_mine, "gibberish"])
    out = judge_pairwise(fair, JudgePrompts(), [SCENE, SCENE], ["mine1", "mine2"], ["other1", "other2"], "Sheldon")
    assert (out["win_rate"], out["n"], out["unparsable"], out["order_consistent"]) == (1.0, 2, 1, 1)


class StubEndpoint(BaseHTTPRequestHandler):
    """OpenAI-compatible /v1/chat/completions with scripted answers; 401 without the key."""

    answers: list[str] = []
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.headers.get("Authorization") != "Bearer sekrit":
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error": "bad key"}')
            return
        content = type(self).answers.pop(0)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_url():
    server = HTTPServer(("127.0.0.1", 0), StubEndpoint)
    StubEndpoint.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_endpoint_judge_through_the_cli(stub_url, tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TIFA_TEST_JUDGE_KEY", "sekrit")
    data = write_jsonl(tmp_path / "held.jsonl", CONVERSATIONS)
    StubEndpoint.answers = [f"Here you go: {scores_json(8)}", "I cannot rate this.", scores_json(6)]
    assert main(["eval", "roleplay-judge", "--model", str(tiny_model_dir), "--judge", "judge-7b", "--judge-url", stub_url,
                 "--judge-key-env", "TIFA_TEST_JUDGE_KEY", "--data", str(data), "--limit", "3",
                 "--max-new-tokens", "3", "--character", "Sheldon", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(last)[:2] == ["score", "n"]
    assert (last["score"], last["n"], last["unparsable"]) == (7.0, 2, 1)
    sent = StubEndpoint.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sekrit"
    assert sent["body"]["model"] == "judge-7b" and sent["body"]["temperature"] == 0
    assert "Leonard: Agreed, what's your point?" in sent["body"]["messages"][0]["content"]

    StubEndpoint.answers = ['{"winner": "A"}', '{"winner": "A"}', "[[B]]", "[[B]]"]
    assert main(["eval", "roleplay-judge", "--model", str(tiny_model_dir), "--judge", "judge-7b", "--judge-url", stub_url,
                 "--judge-key-env", "TIFA_TEST_JUDGE_KEY", "--data", str(data), "--limit", "2",
                 "--max-new-tokens", "3", "--against-reference", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(last)[:2] == ["win_rate", "n"]
    # Scene 1: A in both orders (a position bias: 0.5); scene 2: B in both orders (0.5).
    assert (last["win_rate"], last["n"], last["order_consistent"], last["against"]) == (0.5, 2, 0, "reference")
    assert "There's no point" in StubEndpoint.requests[-4]["body"]["messages"][0]["content"]

    StubEndpoint.answers = ["tie", "I like both", '{"winner": "B"}', "[[A]]"]
    assert main(["eval", "roleplay-judge", "--model", str(tiny_model_dir), "--judge", "judge-7b", "--judge-url", stub_url,
                 "--judge-key-env", "TIFA_TEST_JUDGE_KEY", "--data", str(data), "--limit", "2",
                 "--max-new-tokens", "3", "--against-model", str(tiny_model_dir), "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # Scene 1: a tie (the other order unparsable); scene 2: B then A, i.e. the other model both times.
    assert (last["win_rate"], last["n"], last["unparsable"], last["against"]) == (0.25, 2, 1, str(tiny_model_dir))


def test_endpoint_errors_say_what_to_check(stub_url, monkeypatch):
    monkeypatch.delenv("TIFA_TEST_JUDGE_KEY", raising=False)
    with pytest.raises(TifaError, match=r"HTTP 401 \(is \$TIFA_TEST_JUDGE_KEY set\?\)"):
        EndpointJudge(stub_url, "m", "TIFA_TEST_JUDGE_KEY").ask("hi")
    closed = stub_url.rsplit(":", 1)[0] + ":9/v1"  # the discard port: nothing listens there
    with pytest.raises(TifaError, match="cannot reach the judge"):
        EndpointJudge(closed, "m", timeout=5).ask("hi")


def test_embedded_model_judges_held_out_scenes(capsys):
    """The default judge (the embedded 135M model) on two real held-out scenes, fixed seed:
    whatever it answers is either scored or counted as unparsable."""
    data = REPO / "data" / "roleplay_sheldon_heldout.jsonl"
    assert main(["eval", "roleplay-judge", "--model", "smollm2-135m-instruct", "--data", str(data), "--limit", "2",
                 "--character", "Sheldon", "--max-new-tokens", "8", "--judge-max-new-tokens", "24", "--seed", "0",
                 "--json"]) == 0
    captured = capsys.readouterr()
    last = json.loads(captured.out.strip().splitlines()[-1])
    assert last["n"] + last["unparsable"] == 2
    assert last["judge"] == "smollm2-135m-instruct"
    assert (last["score"] is None) == (last["n"] == 0)
    assert "unparsable judge answers" in captured.err


def test_scenes_from_conversations():
    scenes = scenes_from([(CONVERSATIONS[1], "f:2"), (CONVERSATIONS[0], "f:1")])
    assert scenes[0].profile is None and scenes[0].reference == "Physics." and scenes[0].context[-1]["content"] == "Penny: What are you doing?"
    assert scenes[1].profile == "You are Sheldon." and len(scenes[1].context) == 1
