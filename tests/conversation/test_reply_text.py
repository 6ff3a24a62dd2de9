"""The streamed deltas of a reply join to exactly the whole reply, for any text and any stop
strings (overlapping, multi-character, with newlines, several at once, split anywhere): a
property over generated texts, stop sets and piece boundaries."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tifa_lite.conversation.reply_text import StreamText, final_text, safe_text

# Few symbols, so stop strings and their prefixes occur often in the generated texts.
ATOMS = ["a", "b", " ", "\n", "Kai", ":", " the", "é", "<think>", "\n\n"]
texts = st.lists(st.sampled_from(ATOMS), max_size=30).map("".join)
stops = st.lists(st.lists(st.sampled_from(["a", "b", " ", "\n", ":", "K", "ai", "the"]), min_size=1, max_size=4)
                 .map("".join), max_size=3)


def _stream(raw: str, cuts: list[int], stop, strip: bool, think_open: bool) -> str:
    stream = StreamText(stop, strip, think_open)
    sent = ""
    for cut in sorted(set(cuts)) + [len(raw)]:
        sent += stream.feed(raw[:cut])
        whole, _ = final_text(raw, stop, strip, think_open)
        assert whole.startswith(sent), (raw[:cut], sent, whole)  # nothing sent is ever taken back
    return sent + stream.finish(final_text(raw, stop, strip, think_open)[0])


@settings(max_examples=400, deadline=None, database=None)
@given(raw=texts, stop=stops, strip=st.booleans(), think_open=st.booleans())
def test_stream_joins_to_the_whole_reply(raw, stop, strip, think_open):
    # What is safe to send depends only on the text so far, so feeding it at every character
    # checks every way the tokens could have split it.
    assert _stream(raw, list(range(len(raw))), stop, strip, think_open) == final_text(raw, stop, strip, think_open)[0]


def test_examples_from_the_issue():
    # the reply with a paragraph break and a stop string that starts with a newline
    raw = "Aria:\n- Aria: Hint, the answer\nKai: next"
    assert _stream(raw, list(range(len(raw))), ["\nKai:"], True, False) == "Aria:\n- Aria: Hint, the answer"
    raw = "*Aria takes the glass*"
    assert _stream(raw, [1, 5, 6, 11, 15], [" the"], True, False) == "*Aria takes"
    raw = "Hello Kai.\n\nMore"
    assert _stream(raw, [3, 9, 11], ["\n\n", "Kai"], True, False) == "Hello"


def test_whole_reply_cuts_at_the_earliest_stop_and_strips():
    assert final_text("  hi there\nKai: x ", ["\nKai:"]) == ("hi there", True)
    assert final_text("  hi there ", None) == ("hi there", False)
    assert final_text(" hi there ", ["zz"], strip=False) == (" hi there ", False)
    assert final_text("xabcb", ["abc", "b"]) == ("x", True)  # the earliest start wins


def test_safe_text_holds_back_what_may_still_change():
    assert safe_text("Hello wor", ["world"]) == "Hello"
    assert safe_text("Hello \n", ["\nKai:"]) == "Hello"
    assert safe_text("caf\ufffd", None) == "caf"  # an unfinished UTF-8 character
    assert safe_text("<thi", None, think_open=True) == ""
