"""Raw RFC 5322 bytes turned into a ParsedMessage that every later step can trust."""

from __future__ import annotations

import email.message
import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime

from .charsets import decode_bytes
from .encoded_words import decode_header
from .header_values import (
    Address,
    message_ids,
    normalize_message_id,
    parse_addresses,
    parse_date,
)
from .html_text import html_to_text
from .mimetree import (
    MAX_DEPTH,
    Part,
    body_bytes,
    header_fields,
    header_params,
    header_start,
    node_bytes,
    parse_tree,
)

__all__ = [
    "Address",
    "Attachment",
    "ParsedMessage",
    "extract_message_id",
    "guess_language",
    "normalize_message_id",
    "parse_message",
]

logger = logging.getLogger(__name__)

_LANG_SAMPLE = 4000
_LINESEP_PROBE = 2000
_EAST_ASIAN = re.compile(
    "[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002fa1f]"
)
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_NOT_LETTERS = re.compile(r"[\W\d_]+")
_HEADER_END = re.compile(rb"\r?\n\r?\n|\r\r")
_MESSAGE_ID_LINE = re.compile(rb"^message-id[ \t]*:(.*(?:\n[ \t].*)*)", re.I | re.M)
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([\w.:-]+)""", re.I)
_MIME_TYPE = re.compile(r"\s*([\w!#$%&'*+.^`|~-]+)\s*/\s*([\w!#$%&'*+.^`|~-]+)")
_NEWLINES = re.compile(r"\r\n?")


@dataclass(frozen=True, slots=True)
class Attachment:
    """A stored file of a message; size and sha256 are of the decoded bytes."""

    filename: str | None
    content_type: str
    size: int
    sha256: str
    inline: bool
    content_id: str | None


@dataclass(slots=True, eq=False)
class ParsedMessage:
    """Everything later steps read from one message; `tree` is the compat32 MIME tree."""

    message_id: str | None
    subject: str
    sender: Address | None
    reply_to: list[Address]
    to: list[Address]
    cc: list[Address]
    date: datetime | None
    in_reply_to: list[str]
    references: list[str]
    headers: list[tuple[str, str]]
    text: str
    html: str | None
    text_from_html: bool
    attachments: list[Attachment]
    language: str
    content_type: str
    defects: list[str]
    tree: email.message.Message = field(repr=False)

    def header(self, name: str) -> str | None:
        """Return the first decoded value of a header field, case-insensitively."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def headers_all(self, name: str) -> list[str]:
        """Return every decoded value of a header field, in message order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


@dataclass(slots=True)
class _Body:
    """What a walk over (part of) the MIME tree found."""

    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    charset: str | None = None
    linesep: str = "\n"


def extract_message_id(raw: bytes) -> str | None:
    """Return the normalised Message-ID of raw message bytes, reading only the header block."""
    start = header_start(raw)
    end = _HEADER_END.search(raw, start)
    head = raw[start : end.start() if end else len(raw)]
    head = head.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    match = _MESSAGE_ID_LINE.search(head)
    if match is None:
        return None
    return normalize_message_id(match.group(1).decode("utf-8", "replace"))


def _text_of(data: bytes, label: str | None, html: bool, defects: list[str], where: str) -> str:
    """Decode a text body with its charset (or an HTML meta charset) and LF line ends."""
    if html and not label:
        meta = _META_CHARSET.search(data, 0, 4096)
        if meta is not None:
            label = meta.group(1).decode("ascii")
    text = decode_bytes(data, label, defects, where).removeprefix("\ufeff")
    if "\r" in text:
        text = _NEWLINES.sub("\n", text)
    return text


def _walk(part: email.message.Message, path: str, body: _Body, defects: list[str]) -> None:
    """Collect body text, HTML and attachments below one MIME node."""
    try:
        _walk_part(part, path, body, defects)
    finally:
        for defect in part.defects:
            defects.append(f"part {path or 'body'}: {type(defect).__name__}")


def _walk_part(part: email.message.Message, path: str, body: _Body, defects: list[str]) -> None:
    """Collect what one MIME node holds; see _walk."""
    if isinstance(part, Part) and part.too_deep:
        defects.append(f"part {path}: MIME nesting deeper than {MAX_DEPTH}; kept unparsed")
        return
    fields = header_fields(part)
    ctype = _content_type(part, fields.get("content-type"))
    if part.is_multipart() and not ctype.startswith("message/"):
        subs: list[_Body] = []
        for number, child in enumerate(part.get_payload(), 1):
            if isinstance(child, email.message.Message):
                sub = _Body(charset=body.charset, linesep=body.linesep)
                _walk(child, f"{path}.{number}" if path else str(number), sub, defects)
                subs.append(sub)
        if ctype == "multipart/alternative":
            with_plain = [sub for sub in subs if sub.plain]
            with_html = [sub for sub in subs if sub.html]
            if with_plain:
                body.plain.extend(with_plain[0].plain)
            if with_html:
                body.html.extend(with_html[0].html)
        for sub in subs:
            if ctype != "multipart/alternative":
                body.plain.extend(sub.plain)
                body.html.extend(sub.html)
            body.attachments.extend(sub.attachments)
            body.charset = body.charset or sub.charset
        return
    # A leaf is body text when it is text/plain or text/html without a filename and not marked
    # as an attachment; it is an attachment when it is so marked, has a filename, or is not
    # text at all (images, PDFs, message/rfc822, ...). Other unnamed text/* leaves (calendar,
    # rfc822-headers, ...) are neither; they stay in the tree.
    where = f"part {path or 'body'} {ctype}"
    disposition, dparams = header_params(fields.get("content-disposition"), defects, where)
    _, cparams = header_params(fields.get("content-type"), defects, where)
    cte = fields.get("content-transfer-encoding")
    filename = dparams.get("filename") or cparams.get("name")
    if filename is not None:
        filename = decode_header(filename, defects, f"{where} filename", body.charset).strip()
    if ctype.startswith("multipart/"):
        defects.append(f"{where}: multipart without usable parts; read as text")
        ctype = "text/plain"
    if ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename:
        charset = cparams.get("charset")
        if body.charset is None and charset:
            body.charset = charset
        text = _text_of(
            body_bytes(part, cte, defects, where), charset, ctype == "text/html", defects, where
        )
        (body.html if ctype == "text/html" else body.plain).append(text)
        return
    if disposition != "attachment" and not filename and ctype.startswith("text/"):
        return
    data = (
        _message_bytes(part, body.linesep, defects, where) if ctype.startswith("message/") else None
    )
    if data is None:
        data = body_bytes(part, cte, defects, where)
    content_id = fields.get("content-id")
    body.attachments.append(
        Attachment(
            filename=filename or None,
            content_type=ctype,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            inline=disposition == "inline" or (not disposition and content_id is not None),
            content_id=("".join(content_id.split()).strip("<>") or None) if content_id else None,
        )
    )


def _content_type(part: email.message.Message, value: str | None) -> str:
    """Return the lower-cased type/subtype of a Content-Type value; text/plain when garbled."""
    if value is None:
        return part.get_default_type()
    match = _MIME_TYPE.match(value)
    return f"{match.group(1)}/{match.group(2)}".lower() if match else "text/plain"


def _message_bytes(
    part: email.message.Message, linesep: str, defects: list[str], where: str
) -> bytes | None:
    """Return the content of a message/* part as sent, or None when it was not parsed."""
    children = part.get_payload()
    if not isinstance(children, list):
        return None
    try:
        return b"".join(
            node_bytes(child, linesep)
            for child in children
            if isinstance(child, email.message.Message)
        )
    except Exception as exc:  # the stdlib generator on a broken tree; the size is best effort
        defects.append(f"{where}: cannot serialise attached message ({type(exc).__name__})")
        return b""


# Deliberately cheap: East Asian characters (ideographs, kana, hangul) under 30 % of the letters
# of subject and text mean "en"; otherwise "ko" when hangul is most of them, "ja" when at least
# a fifth are kana (Chinese never uses kana), else "zh". Only the first 4,000 characters count.
def guess_language(subject: str, text: str) -> str:
    """Guess "zh", "ja", "ko" or "en" from the share of East Asian characters in the letters."""
    sample = f"{subject}\n{text[:_LANG_SAMPLE]}"
    east = _EAST_ASIAN.subn("", sample)[1]
    if not east or east * 10 < len(_NOT_LETTERS.sub("", sample)) * 3:
        return "en"
    if _HANGUL.subn("", sample)[1] * 2 > east:
        return "ko"
    if _KANA.subn("", sample)[1] * 5 >= east:
        return "ja"
    return "zh"


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse raw message bytes; never fails on bad input, records what it had to repair."""
    defects: list[str] = []
    tree = parse_tree(raw, defects)
    body = _Body(linesep="\r\n" if b"\r\n" in raw[:_LINESEP_PROBE] else "\n")
    try:
        _walk(tree, "", body, defects)
    except Exception as exc:
        logger.warning("%s: body extraction failed", tree.get("message-id"), exc_info=True)
        defects.append(f"message: body extraction failed ({type(exc).__name__})")
    headers: list[tuple[str, str]] = []
    first: dict[str, str] = {}
    subject = ""
    for name, value in tree.raw_items():
        value = str(value)
        decoded = decode_header(value, defects, f"header {name}", body.charset)
        headers.append((name, decoded))
        key = name.lower()
        if key not in first:
            first[key] = value
            if key == "subject":
                subject = decoded.strip()
    text = "\n".join(chunk.rstrip("\n") for chunk in body.plain) + "\n" if body.plain else ""
    text_from_html = bool(body.html) and (not text or text.isspace())
    if text_from_html:
        text = html_to_text("\n".join(body.html))
    senders = parse_addresses(first.get("from"), defects, "header From", body.charset)
    return ParsedMessage(
        message_id=normalize_message_id(first.get("message-id", "")),
        subject=subject,
        sender=senders[0] if senders else None,
        reply_to=parse_addresses(first.get("reply-to"), defects, "header Reply-To", body.charset),
        to=parse_addresses(first.get("to"), defects, "header To", body.charset),
        cc=parse_addresses(first.get("cc"), defects, "header Cc", body.charset),
        date=parse_date(first.get("date")),
        in_reply_to=message_ids(first.get("in-reply-to")),
        references=message_ids(first.get("references")),
        headers=headers,
        text=text,
        html=body.html[0] if body.html else None,
        text_from_html=text_from_html,
        attachments=body.attachments,
        language=guess_language(subject, text),
        content_type=_content_type(tree, first.get("content-type")),
        defects=list(dict.fromkeys(defects)),
        tree=tree,
    )
