"""Conversations: chat templates and the think-tag policy, what a template's structure
allows (system turn, separators), and the chat session the CLI, the server and the web
page share."""
