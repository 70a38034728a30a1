"""Campaign mail bytes: the MIME skeleton is built once per run, each recipient fills it in.

Per recipient only what differs is made: To, Subject (rendered only when the subject uses
a variable), Date, Message-ID, the List-Unsubscribe token and the two rendered bodies.
Everything else (sender, list headers, part headers, the boundary) is bytes prepared once.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from .campaign_config import CampaignDefinition
from .compose import bare_id, body_part, clean, encoded_header, mailbox, split_mailbox
from .html_text import html_to_text
from .render import TemplateStore
from .unsubscribe import list_unsubscribe_headers, make_token, unsubscribe_url

FAMILY = "campaigns"
_SLOT = "mcu-slot"  # stands for the token in headers and links prepared once


@dataclass(frozen=True, slots=True)
class Person:
    """The recipient as a template sees it."""

    subscriber_id: int | None
    address: str
    name: str | None = None
    language: str | None = None
    tier: str | None = None
    lifecycle: str | None = None
    tags: frozenset[str] = frozenset()
    attributes: Mapping[str, Any] | None = None

    def context(self) -> dict[str, Any]:
        """The `subscriber` template variable."""
        return {
            "address": self.address,
            "name": self.name or "",
            "language": self.language or "",
            "tier": self.tier or "",
            "lifecycle": self.lifecycle or "",
            "tags": sorted(self.tags),
            "attributes": dict(self.attributes or {}),
        }


@dataclass(frozen=True, slots=True)
class Links:
    """Where unsubscribe requests go: the web endpoint and/or a mailto address."""

    key: bytes
    public_url: str | None
    mailto: str | None


class CampaignComposer:
    """Builds one run's mail for each recipient from the skeleton made at construction."""

    def __init__(
        self,
        definition: CampaignDefinition,
        run_id: int,
        templates: TemplateStore,
        *,
        sender: str,
        reply_to: str | None,
        list_title: str,
        company: Mapping[str, str],
        links: Links,
        loop: tuple[str, str],
    ) -> None:
        self.definition = definition
        self.run_id = run_id
        self.templates = templates
        self.links = links
        self.company = dict(company)
        name, address = split_mailbox(sender)
        self.sender_address = address
        self.domain = address.rpartition("@")[2]
        self.list_name = definition.list
        self.list_title = list_title
        head = [f"From: {mailbox(name, address)}"]
        if reply_to is not None:
            head.append(f"Reply-To: {mailbox(*split_mailbox(reply_to))}")
        list_id = f"{definition.list.replace('_', '-').lower()}.{self.domain}"
        head.append(f"List-Id: {encoded_header(clean(list_title, 200), 'List-Id')} <{list_id}>")
        head.append("Precedence: bulk")
        head.append(f"{loop[0]}: {loop[1]}")
        head.append(f"X-Mailcare-Campaign: {clean(definition.name, 100)}")
        head.append("MIME-Version: 1.0")
        self._head = ("\r\n".join(head) + "\r\n").encode("utf-8")
        self._parts = self._new_parts()
        # built once with a placeholder for the token: they are the same for every recipient
        headers = list_unsubscribe_headers(_SLOT, links.public_url, links.mailto)
        self._unsubscribe_lines = [f"{name}: {value}" for name, value in headers]
        self._url_template = (
            unsubscribe_url(links.public_url, _SLOT) if links.public_url is not None else None
        )
        self._variants: dict[str, str] = {}

    def _variant(self, language: str | None) -> str:
        key = (language or "").split("-")[0].lower()
        variant = self._variants.get(key)
        if variant is None:
            variant = self.templates.select(FAMILY, self.definition.template, language=key or None)
            self._variants[key] = variant
        return variant

    def token(self, person: Person) -> str | None:
        """The recipient's signed unsubscribe token (None for someone not subscribed)."""
        if person.subscriber_id is None:
            return None
        return make_token(self.links.key, person.subscriber_id, self.list_name, self.run_id)

    def context(self, person: Person, token: str | None) -> dict[str, Any]:
        """Everything a campaign template can use."""
        url = ""
        if token is not None and self._url_template is not None:
            url = self._url_template.replace(_SLOT, token)
        return {
            "subscriber": person.context(),
            "campaign": {"name": self.definition.name, "kind": self.definition.kind},
            "list": {"name": self.list_name, "title": self.list_title},
            "company": self.company,
            "unsubscribe_url": url,
            "unsubscribe_address": self.links.mailto or "",
            **self.definition.variables,
        }

    def build(self, person: Person, message_id: str, date: datetime) -> bytes:
        """The recipient's message bytes (CRLF, ready for DATA)."""
        variant = self._variant(person.language)
        token = self.token(person)
        rendered = self.templates.render_variant(
            FAMILY, self.definition.template, variant, self.context(person, token)
        )
        text = rendered.text
        if not text.strip() and rendered.html is not None:
            text = html_to_text(rendered.html)
        lines = [
            f"To: {mailbox(person.name, person.address)}",
            f"Subject: {encoded_header(clean(rendered.subject, 900), 'Subject')}",
            f"Date: {format_datetime(date)}",
            f"Message-ID: <{bare_id(message_id)}>",
        ]
        if token is not None:
            lines.extend(line.replace(_SLOT, token) for line in self._unsubscribe_lines)
        top = ("\r\n".join(lines) + "\r\n").encode("utf-8")
        if rendered.html is None:
            return top + self._head + body_part(text, "plain")
        boundary, opening, between, end = self._parts
        while boundary in text or boundary in rendered.html:
            self._parts = self._new_parts()
            boundary, opening, between, end = self._parts
        return (
            top
            + self._head
            + opening
            + body_part(text, "plain")
            + between
            + body_part(rendered.html, "html")
            + end
        )

    @staticmethod
    def _new_parts() -> tuple[str, bytes, bytes, bytes]:
        # "=" and "_" never occur in base64; a 7bit body that holds it gets a new one
        boundary = f"=_mc_{secrets.token_hex(14)}"
        return (
            boundary,
            (
                f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
                f"--{boundary}\r\n"
            ).encode("ascii"),
            f"\r\n--{boundary}\r\n".encode("ascii"),
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        )
