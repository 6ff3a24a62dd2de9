"""Request bodies in the shapes role-play front ends send to an OpenAI-compatible URL,
written for these tests from the front ends' public source (not copied from it):

* SillyTavern, Chat Completion API with the "Custom (OpenAI-compatible)" source:
  src/endpoints/backends/chat-completions.js builds the body from the prompt manager's
  messages plus ``temperature``, ``max_tokens``, ``stream``, ``presence_penalty``,
  ``frequency_penalty``, ``top_p``, ``top_k``, ``stop``, ``logit_bias``, ``seed``, ``n`` and
  then spreads its ``bodyParams`` over it (the "Additional Parameters" YAML such as
  ``min_p``/``repetition_penalty``, ``logprobs``, ``tools``/``tool_choice`` when function
  calling is on, ``reasoning_effort``). Example dialogues go as system turns named
  ``example_user``/``example_assistant``; the author's note is a system turn in the middle;
  group chats name the speakers.
* Open WebUI, an "OpenAI API" connection: backend/open_webui/utils/payload.py
  (``apply_model_params_to_body_openai``) maps the model's advanced params onto the body:
  ``temperature``, ``top_p``, ``min_p``, ``max_tokens``, ``frequency_penalty``,
  ``presence_penalty``, ``reasoning_effort``, ``seed``, ``stop``, ``logit_bias``,
  ``response_format``; the system prompt is the first message; title and follow-up
  generation are separate non-streamed requests.
"""

from __future__ import annotations

CARD = "You are Tifa Lockhart, a warm bartender at the Seventh Heaven in Midgar. Stay in character."

SILLYTAVERN_CHAT = {
    "messages": [
        {"role": "system", "content": CARD},
        {"role": "system", "content": "[Start a new chat]"},
        {"role": "system", "name": "example_user", "content": "Do you serve anything without alcohol?"},
        {"role": "system", "name": "example_assistant", "content": "*slides a glass over* Sure, try this one."},
        {"role": "user", "content": "Hi Tifa, busy night?"},
        {"role": "assistant", "content": "*wipes the counter* Not too bad. What can I get you?"},
        {"role": "system", "content": "[Author's note: keep replies short and friendly.]"},
        {"role": "user", "content": "Surprise me."},
    ],
    "model": "tifa",
    "temperature": 1,
    "max_tokens": 300,
    "stream": True,
    "presence_penalty": 0.7,
    "frequency_penalty": 0.7,
    "top_p": 1,
    "top_k": 0,
    "stop": [],
    "logit_bias": {},
    "n": 1,
    # bodyParams: the source's "Additional Parameters" and feature switches
    "min_p": 0.05,
    "repetition_penalty": 1.1,
    "logprobs": False,
    "reasoning_effort": "medium",
    "include_reasoning": False,  # another vendor's field: accepted, ignored
}

SILLYTAVERN_GROUP_CHAT = {
    "messages": [
        {"role": "system", "content": "A group chat at the Seventh Heaven with Tifa and Barret."},
        {"role": "user", "name": "Cloud", "content": "Evening, everyone."},
        {"role": "assistant", "name": "Barret", "content": "Spiky! Pull up a chair."},
        {"role": "user", "name": "Cloud", "content": "Tifa, what's on the menu?"},
    ],
    "model": "tifa",
    "temperature": 0.9,
    "max_tokens": 200,
    "stream": False,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "top_p": 0.95,
    "top_k": 40,
    "stop": ["\nCloud:", "\nBarret:"],
    "logit_bias": {},
    "seed": 42,
    "n": 1,
    "tools": [],
    "tool_choice": "auto",
}

OPEN_WEBUI_CHAT = {
    "model": "tifa",
    "messages": [
        {"role": "system", "content": CARD},
        {"role": "user", "content": "Hello! Who are you?"},
        {"role": "assistant", "content": "<think>Greet them warmly.</think>I'm Tifa. Welcome in!"},
        {"role": "user", "content": [{"type": "text", "text": "What do you recommend tonight?"}]},
    ],
    "stream": True,
    "stream_options": {"include_usage": True},
    "temperature": 0.8,
    "top_p": 0.9,
    "min_p": 0.05,
    "max_tokens": 256,
    "frequency_penalty": 0.2,
    "presence_penalty": 0.1,
    "seed": 7,
    "stop": ["<|im_end|>"],
    "logit_bias": {},
    "response_format": {"type": "text"},
    "reasoning_effort": "low",
}

OPEN_WEBUI_TITLE_TASK = {
    "model": "tifa",
    "messages": [{"role": "user", "content": "### Task:\nGenerate a concise, 3-5 word title for the chat.\n"
                                              "### Chat History:\n<chat_history>\nUSER: Hello! Who are you?\n"
                                              "ASSISTANT: I'm Tifa.\n</chat_history>"}],
    "stream": False,
    "max_tokens": 50,
    "temperature": 0.1,
}

FRONTEND_REQUESTS = {
    "sillytavern_chat": SILLYTAVERN_CHAT,
    "sillytavern_group_chat": SILLYTAVERN_GROUP_CHAT,
    "open_webui_chat": OPEN_WEBUI_CHAT,
    "open_webui_title_task": OPEN_WEBUI_TITLE_TASK,
}

HELLO = [{"role": "user", "content": "Hello, who are you?"}]

# The table: each row is a field real front ends send, answered 200 or a documented 400.
TABLE_ROWS_OK = {
    "penalties": {"presence_penalty": 0.7, "frequency_penalty": 0.7},
    "min_p": {"min_p": 0.05},
    "logit_bias_empty": {"logit_bias": {}},
    "reasoning_effort": {"reasoning_effort": "low"},
    "response_format_text": {"response_format": {"type": "text"}},
    "logprobs_false": {"logprobs": False},
    "parallel_tool_calls": {"parallel_tool_calls": False},
    "tools_empty": {"tools": []},
    "developer_role": {"messages": [{"role": "developer", "content": "Be brief."}, *HELLO]},
    "named_messages": {"messages": [{"role": "user", "name": "Cloud", "content": "Hi"}]},
    "system_in_the_middle": {"messages": [*HELLO, {"role": "assistant", "content": "Tifa."},
                                          {"role": "system", "content": "[Author's note: be brief]"},
                                          {"role": "user", "content": "And?"}]},
    "stream_include_usage": {"stream": True, "stream_options": {"include_usage": True}},
    "max_completion_tokens": {"max_completion_tokens": 3},
    "unknown_vendor_field": {"cache_prompt": True, "mirostat_mode": 0},
}
