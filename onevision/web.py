"""``onevision web``: a Gradio chat page that talks to any OpenAI-compatible server (``onevision serve``, vLLM...).

The page knows nothing of the model: it lists ``GET /v1/models``, sends the conversation to
``POST /v1/chat/completions`` with ``stream: true`` and shows the answer as it streams. Uploaded images and videos
travel as ``data:`` URLs in ``image_url`` / ``video_url`` parts, so the server needs no access to the browser's
files. It runs offline: Gradio's analytics are off and the theme uses the system's fonts (no web fonts).
"""

from __future__ import annotations

import base64
import mimetypes
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
TITLE = "onevision chat"


def media_part(path: str | os.PathLike) -> dict[str, Any]:
    """An OpenAI content part for a local image or video file, as a base64 ``data:`` URL."""
    path = Path(path)
    kind = "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"
    mime = mimetypes.guess_type(path.name)[0] or ("video/mp4" if kind == "video" else "image/png")
    url = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
    return {"type": f"{kind}_url", f"{kind}_url": {"url": url}}


def user_message(text: str, files: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """One user turn: the media first (in upload order), then the question."""
    parts = [media_part(f) for f in files]
    if text:
        parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


class ChatSession:
    """The conversation of one browser tab, as OpenAI messages, and the streaming call that extends it."""

    def __init__(self, client: Any, model: str, *, max_tokens: int = 256, temperature: float = 0.0):
        self.client = client
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.messages: list[dict[str, Any]] = []

    def ask(self, text: str, files: Sequence[str | os.PathLike] = ()) -> Iterator[str]:
        """Send one user turn; yields the answer so far after every streamed piece, then records it."""
        self.messages.append(user_message(text, files))
        stream = self.client.chat.completions.create(
            model=self.model,
            messages=self.messages,
            stream=True,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
        )
        answer = ""
        try:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    answer += chunk.choices[0].delta.content
                    yield answer
        except Exception:
            self.messages.pop()  # the turn failed: keep the conversation as it was
            raise
        self.messages.append({"role": "assistant", "content": answer})
        yield answer


def build_app(api: str, *, api_key: str | None = None, max_tokens: int = 256) -> Any:
    """The Gradio ``Blocks`` of the chat page for the OpenAI-compatible server at ``api`` (``.../v1``)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    import openai

    client = openai.OpenAI(base_url=api, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none")
    models = [m.id for m in client.models.list().data]
    if not models:
        raise RuntimeError(f"{api}: the server lists no models (GET /models)")

    def submit(box: dict[str, Any], chat: list[dict[str, Any]], model: str, session: ChatSession | None):
        if session is None or session.model != model:
            session = ChatSession(client, model, max_tokens=max_tokens)
            chat = []
        text, files = (box or {}).get("text", "").strip(), list((box or {}).get("files", []))
        if not text and not files:
            yield gr.MultimodalTextbox(value=None), chat, session
            return
        chat = [*chat, *({"role": "user", "content": {"path": f}} for f in files)]
        if text:
            chat.append({"role": "user", "content": text})
        chat.append({"role": "assistant", "content": ""})
        try:
            for partial in session.ask(text, files):
                chat[-1] = {"role": "assistant", "content": partial}
                yield gr.MultimodalTextbox(value=None, interactive=False), chat, session
        except Exception as exc:  # the server's one-line error, shown in the chat
            chat[-1] = {"role": "assistant", "content": f"error: {_error_message(exc)}"}
        yield gr.MultimodalTextbox(value=None, interactive=True), chat, session

    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(f"## {TITLE}\nServer: `{api}`")
        model = gr.Dropdown(models, value=models[0], label="Model", elem_id="model")
        chat = gr.Chatbot(label="Conversation", elem_id="chat", height=420)
        box = gr.MultimodalTextbox(
            file_types=["image", "video"],
            file_count="multiple",
            sources=["upload"],
            placeholder="Ask about the images or the video you attach",
            show_label=False,
            elem_id="ask",
        )
        session = gr.State(None)
        box.submit(submit, [box, chat, model, session], [box, chat, session])
        model.change(lambda: ([], None), None, [chat, session])
    return app


def theme() -> Any:
    """Gradio's default look with the system's fonts, so the page loads nothing from the internet."""
    import gradio as gr

    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )


def serve_page(
    api: str, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True, **kwargs: Any
) -> Any:
    """Start the chat page on ``host:port``; with ``block=False`` returns the running app (tests)."""
    app = build_app(api, **kwargs)
    app.queue()
    app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        theme=theme(),
        quiet=True,
        footer_links=[],
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
    )
    return app


def _error_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
