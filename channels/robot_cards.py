"""The channel-neutral message as a group robot's card: pure functions.

:class:`Card` takes the title from ``message.subject`` or else the first line
of the rendered ``chat`` part, the body from the rest (Slack-style ``*bold*``
and ``<url|label>`` turned into common Markdown, which all three robots read),
and the link from ``extra["url"]``. :func:`wecom_payload`,
:func:`dingtalk_payload` and :func:`feishu_payload` shape it as each service's
``markdown`` card or plain ``text`` message, within its size limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .base import OutgoingMessage
from .chat import split_first_line, web_url

SLACK_LINK = re.compile(r"<(https?://[^|>\s]+)(?:\|([^>]*))?>")
SLACK_BOLD = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")


def to_markdown(text: str) -> str:
    """Slack-style mrkdwn of the ``chat`` part as common Markdown:
    ``<url|label>`` → ``[label](url)``, ``*bold*`` → ``**bold**``."""
    text = SLACK_LINK.sub(lambda m: f"[{m.group(2) or m.group(1)}]({m.group(1)})", text)
    return SLACK_BOLD.sub(r"**\1**", text)


def to_plain(text: str) -> str:
    """The same text without mrkdwn: ``<url|label>`` → ``label (url)``, no asterisks."""
    text = SLACK_LINK.sub(
        lambda m: f"{m.group(2)} ({m.group(1)})" if m.group(2) else m.group(1), text
    )
    return SLACK_BOLD.sub(r"\1", text)


@dataclass(frozen=True, slots=True)
class Card:
    """The channel-neutral message as every robot shows it."""

    title: str
    body: str  # Markdown
    url: str = ""

    @classmethod
    def of(cls, message: OutgoingMessage) -> Card:
        text = message.text.strip()
        if message.subject.strip():
            title, body = " ".join(message.subject.split()), text
        else:
            title, body = split_first_line(text)
        return cls(to_plain(title), to_markdown(body), web_url(message.extra.get("url", "")))

    def plain(self) -> str:
        lines = [self.title, to_plain_md(self.body), self.url]
        return "\n".join(line for line in lines if line).strip()


def to_plain_md(markdown: str) -> str:
    """Our own Markdown back to plain text (for ``MESSAGE_TYPE = "text"``)."""
    text = re.sub(r"\[([^\]]*)\]\((https?://[^)\s]+)\)", r"\1 (\2)", markdown)
    return text.replace("**", "")


def clip(text: str, limit_bytes: int) -> str:
    """``text`` cut to at most ``limit_bytes`` of UTF-8 (the providers count bytes)."""
    raw = text.encode()
    if len(raw) <= limit_bytes:
        return text
    return raw[: limit_bytes - 3].decode(errors="ignore") + "…"


def wecom_payload(card: Card, message_type: str = "markdown", link_text: str = "View") -> dict:
    """WeCom: ``markdown`` (content ≤ 4,096 bytes) or ``text`` (≤ 2,048 bytes)."""
    if message_type == "text":
        return {"msgtype": "text", "text": {"content": clip(card.plain(), 2048)}}
    parts = [f"**{card.title}**", card.body, f"[{link_text}]({card.url})" if card.url else ""]
    content = "\n\n".join(p for p in parts if p)
    return {"msgtype": "markdown", "markdown": {"content": clip(content, 4096)}}


def dingtalk_payload(card: Card, message_type: str = "markdown", link_text: str = "View") -> dict:
    """DingTalk: an ``actionCard`` with one button when there is a link, else
    ``markdown``; or ``text``. Nobody is @-mentioned (no ``isAtAll``)."""
    no_mentions = {"isAtAll": False, "atMobiles": [], "atUserIds": []}
    if message_type == "text":
        return {"msgtype": "text", "text": {"content": card.plain()}, "at": no_mentions}
    text = "\n\n".join(p for p in (f"#### {card.title}", card.body) if p)
    if card.url:
        return {
            "msgtype": "actionCard",
            "actionCard": {
                "title": card.title,
                "text": text,
                "singleTitle": link_text,
                "singleURL": card.url,
            },
        }
    return {
        "msgtype": "markdown",
        "markdown": {"title": card.title, "text": text},
        "at": no_mentions,
    }


def feishu_payload(card: Card, message_type: str = "markdown", link_text: str = "View") -> dict:
    """Feishu/Lark: an ``interactive`` card (header, a markdown element, a button)
    or ``text``."""
    if message_type == "text":
        return {"msg_type": "text", "content": {"text": card.plain()}}
    elements: list[dict[str, Any]] = []
    if card.body:
        elements.append({"tag": "markdown", "content": card.body})
    if card.url:
        button = {
            "tag": "button",
            "text": {"tag": "plain_text", "content": link_text},
            "type": "primary",
            "url": card.url,
        }
        elements.append({"tag": "action", "actions": [button]})
    return {
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": True},
            "header": {"title": {"tag": "plain_text", "content": card.title}, "template": "blue"},
            "elements": elements,
        },
    }
