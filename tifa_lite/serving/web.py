"""The web chat page (``tifa-lite chat --web``): Gradio, with the system prompt and sampling
editable beside the conversation, replies streamed, and ``<think>`` blocks folded.

Folding is Gradio's own (``Chatbot(reasoning_tags=...)``): a think block is shown as a
collapsed "Reasoning" message above the answer. The page keeps the full replies; what goes
back to the model goes through :meth:`~tifa_lite.conversation.session.ChatSession.reply`, so the
``<think>`` history policy and the chat template are the ones training used.

No telemetry and no web fonts: the page is served from this machine and needs no network.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterator

THINK_TAGS = [("<think>", "</think>")]
# The cancel event of each session's running reply: a page whose tab was closed mid-reply
# leaves its generator un-iterated, so the next message stops that generation first.
_RUNNING: dict[int, threading.Event] = {}


def respond(session, text: str, history: list[dict[str, str]], system: str,
            sampling: dict[str, Any]) -> Iterator[list[dict[str, str]]]:
    """The conversation after each streamed piece of the reply to ``text``. Closing the
    generator (the page went away) stops the generation within a token; the session's lock
    means two replies never run at once."""
    from transformers import TextIteratorStreamer

    history = [*history, {"role": "user", "content": text}]
    messages = ([{"role": "system", "content": system}] if system.strip() else []) + history
    streamer = TextIteratorStreamer(session.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    result: dict[str, Any] = {}
    cancel = threading.Event()
    previous = _RUNNING.get(id(session))
    if previous is not None:
        previous.set()
    _RUNNING[id(session)] = cancel

    def generate() -> None:
        try:
            result["reply"] = session.reply(messages, streamer=streamer, cancel=cancel, **sampling)
        except Exception as exc:  # shown in the page; the page stays up
            result["error"] = exc
            streamer.end()

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    partial = ""
    try:
        for piece in streamer:
            partial += piece
            yield [*history, {"role": "assistant", "content": partial.lstrip()}]
        worker.join()
    finally:
        cancel.set()  # after the end a no-op; on close, the generation stops at its next token
        if _RUNNING.get(id(session)) is cancel:
            del _RUNNING[id(session)]
    if "error" in result:
        raise RuntimeError(f"generation failed: {result['error']}")
    yield [*history, {"role": "assistant", "content": result["reply"].text}]


def build_demo(session, title: str = "tifa-lite"):
    import gradio as gr

    s = session.sampling
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        history = gr.State([])
        gr.Markdown(f"## {title}")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="conversation", reasoning_tags=THINK_TAGS, elem_id="tifa-chat", height=460)
                box = gr.Textbox(placeholder="Say something…", show_label=False, elem_id="tifa-input")
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="tifa-send")
                    clear = gr.Button("Clear", elem_id="tifa-clear")
            with gr.Column(scale=2):
                system = gr.Textbox(value=session.system or "", label="system prompt (the character card)", lines=6,
                                    elem_id="tifa-system")
                # 0 is greedy: what a session without sampling (preset greedy) does.
                start_temperature = s.get("temperature") or 0.0 if s.get("do_sample", True) else 0.0
                temperature = gr.Slider(0.0, 2.0, value=start_temperature, step=0.05, label="temperature (0: greedy)")
                top_p = gr.Slider(0.05, 1.0, value=s.get("top_p") or 1.0, step=0.05, label="top_p")
                repetition_penalty = gr.Slider(1.0, 2.0, value=s.get("repetition_penalty") or 1.0, step=0.01,
                                               label="repetition_penalty")
                max_new_tokens = gr.Slider(1, 4096, value=s.get("max_new_tokens") or 512, step=1, label="max_new_tokens")

        def on_send(text, past, system_text, temp, p, rep, max_new):
            if not text.strip():
                yield past, past, text
                return
            sampling = {"temperature": temp, "top_p": p, "repetition_penalty": rep, "max_new_tokens": int(max_new),
                        "do_sample": temp > 0}
            try:
                for conversation in respond(session, text, past, system_text, sampling):
                    yield conversation, conversation, ""
            except RuntimeError as exc:
                raise gr.Error(str(exc)) from None

        inputs = [box, history, system, temperature, top_p, repetition_penalty, max_new_tokens]
        outputs = [chatbot, history, box]
        send.click(on_send, inputs, outputs)
        box.submit(on_send, inputs, outputs)
        clear.click(lambda: ([], [], ""), None, outputs)
    return demo


def _offline_theme():
    import gradio as gr

    # The default theme pulls fonts from a web font service; system fonts need no network.
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def launch(session, host: str = "127.0.0.1", port: int = 7860, block: bool = True, title: str = "tifa-lite"):
    """Serve the page; ``block=False`` returns the running demo (tests)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_demo(session, title=title)
    # One generation at a time: one model, two cores.
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
                theme=_offline_theme(), show_error=True)
    return demo
