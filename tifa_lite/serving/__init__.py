"""Serving a trained character: an OpenAI-compatible HTTP API (:mod:`.openai_api`) and a
web chat page (:mod:`.web`). Both answer through :meth:`tifa_lite.conversation.session.ChatSession.reply`,
the same rendering (chat template, ``<think>`` policy) and sampling as ``tifa-lite chat``."""
