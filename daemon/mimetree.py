"""Raw message bytes turned into a compat32 MIME tree, quickly and with bounded nesting."""

from __future__ import annotations

import binascii
import email.generator
import email.message
import email.parser
import email.policy
import io
import itertools
import logging
import re
from urllib.parse import unquote_to_bytes

from .charsets import decode_base64, decode_bytes
from .errors import ParseError

logger = logging.getLogger(__name__)

# MIME nesting deeper than this is kept as one opaque part: real mail nests a handful of
# levels, and the stdlib parser turns quadratic and then recursive past a few hundred.
MAX_DEPTH = 32

# The fast path hands anything nested deeper than this to the stdlib parser.
_FAST_DEPTH = 12
# One header field: its name, then the rest of its line and every continuation line.
_FIELD = re.compile(r"([\041-\071\073-\176]+):([^\n]*\n(?:[ \t][^\n]*\n)*)")
_MULTIPART_CTE = ("7bit", "8bit", "binary")
_PARAM = re.compile(r';\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')
_QUOTED_PAIR = re.compile(r'\\([\\"])')
_UUENCODED = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})
_STDLIB_CTE = frozenset({"base64", "quoted-printable", "x-uuencode", "uuencode", "uue", "x-uue"})
_PLAIN_CTE = frozenset({"", "7bit", "8bit", "binary", "7-bit", "8-bit"})


class Part(email.message.Message):
    """A compat32 message node that knows its depth and stops MIME nesting at MAX_DEPTH."""

    depth = 0
    too_deep = False

    def attach(self, payload: email.message.Message | str) -> None:
        """Attach a child one level deeper than this node."""
        if isinstance(payload, Part):
            payload.depth = self.depth + 1
            payload.too_deep = payload.depth > MAX_DEPTH
        super().attach(payload)

    def get_content_type(self) -> str:
        """Return the content type, or an opaque type for nodes past MAX_DEPTH."""
        if self.too_deep:
            return "application/octet-stream"
        return super().get_content_type()


_PARSER = email.parser.BytesParser(_class=Part, policy=email.policy.compat32)


class _AsRead(email.policy.Compat32):
    """A compat32 policy that writes header fields back exactly as they were read."""

    def fold_binary(self, name: str, value: str) -> bytes:
        """Return the field unchanged: compat32 would re-fold it, slowly and not as received."""
        return f"{name}: {value}{self.linesep}".encode("utf-8", "surrogateescape")


def node_bytes(part: email.message.Message, linesep: str) -> bytes:
    """Serialise a node (headers and body) close to how it arrived."""
    buffer = io.BytesIO()
    policy = _AsRead(linesep=linesep)
    email.generator.BytesGenerator(buffer, mangle_from_=False, policy=policy).flatten(part)
    return buffer.getvalue()


def header_fields(part: email.message.Message) -> dict[str, str]:
    """Return the first raw value of each header field by lower-cased name (8-bit kept escaped)."""
    fields: dict[str, str] = {}
    for name, value in part.raw_items():
        key = name.lower()
        if key not in fields:
            fields[key] = str(value)
    return fields


def header_params(value: str | None, defects: list[str], where: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type/Disposition value into its lower-cased head and its parameters."""
    if not value:
        return "", {}
    head, sep, _ = value.partition(";")
    params: dict[str, str] = {}
    if not sep:
        return head.strip().lower(), params
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    for match in _PARAM.finditer(value, len(head)):
        name, text = match.group(1).lower(), match.group(2).strip()
        if text.startswith('"'):
            text = _QUOTED_PAIR.sub(r"\1", text[1:-1] if text.endswith('"') else text[1:])
        if "*" in name:
            base, _, rest = name.partition("*")
            number = rest.rstrip("*")
            index = int(number) if number.isascii() and number.isdigit() else 0
            sections.setdefault(base, []).append((index, rest.endswith("*") or not rest, text))
        else:
            params.setdefault(name, text)
    for base, parts in sections.items():
        params[base] = _join_rfc2231(sorted(parts), defects, where)
    return head.strip().lower(), params


def _join_rfc2231(parts: list[tuple[int, bool, str]], defects: list[str], where: str) -> str:
    """Join RFC 2231 parameter continuations and decode them with their charset."""
    charset: str | None = None
    data = bytearray()
    for position, (_, encoded, text) in enumerate(parts):
        if encoded:
            if position == 0 and text.count("'") >= 2:
                charset, _, text = text.split("'", 2)
            data += unquote_to_bytes(text.encode("ascii", "surrogateescape"))
        else:
            data += text.encode("utf-8", "surrogateescape")
    return decode_bytes(bytes(data), charset or None, defects, f"{where} parameter")


def body_bytes(
    part: email.message.Message, cte: str | None, defects: list[str], where: str
) -> bytes:
    """Return the decoded body of a leaf part whose Content-Transfer-Encoding value is cte."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return b""
    cte = cte.lower() if cte else ""
    if cte in _STDLIB_CTE:
        return data  # the stdlib decoded it already
    token = cte.strip().strip("\"'").split(";")[0].strip()
    if token in _PLAIN_CTE:
        return data
    if token == "base64":
        return decode_base64(data, defects, where)
    if token == "quoted-printable":
        return binascii.a2b_qp(data)
    if token in _UUENCODED:
        return _uudecode(data)
    defects.append(f"{where}: unknown transfer encoding {token[:40]!r}")
    if "64" in token:
        return decode_base64(data, defects, where)
    if "quot" in token:
        return binascii.a2b_qp(data)
    return data


def _uudecode(data: bytes) -> bytes:
    """Decode a uuencoded body, tolerating a missing begin line and overlong lines."""
    out = bytearray()
    lines = data.splitlines()
    if lines and lines[0].startswith(b"begin "):
        lines = lines[1:]
    for line in lines:
        if line.strip() in (b"end", b"`", b""):
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            length = (((line[0] - 32) & 63) * 4 + 5) // 3
            try:
                out += binascii.a2b_uu(line[:length])
            except binascii.Error:
                continue
    return bytes(out)


def header_start(raw: bytes) -> int:
    """Return where the header block starts, past a BOM, blank lines and an mbox From line."""
    start = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    size = len(raw)
    while start < size and raw[start] in (0x0A, 0x0D):
        start += 1
    if raw.startswith(b"From ", start):
        end = raw.find(b"\n", start)
        cr = raw.find(b"\r", start)
        if cr != -1 and (end == -1 or cr + 1 < end):
            end = cr
        start = size if end == -1 else end + 1
    return start


def prepare(raw: bytes) -> bytes:
    """Return the bytes to parse: envelope junk removed, bare-CR line ends made LF."""
    start = header_start(raw)
    data = raw[start:] if start else raw
    lf, cr = data.find(b"\n"), data.find(b"\r")
    if cr != -1 and (lf == -1 or (cr < lf and data[cr + 1 : cr + 2] != b"\n")):
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data


def parse_tree(raw: bytes, defects: list[str]) -> email.message.Message:
    """Parse raw message bytes into a compat32 tree; fast path first, the stdlib parser else."""
    data = prepare(raw)
    text = data.decode("ascii", "surrogateescape")
    if "\r" not in text or text.count("\r") == text.count("\r\n"):
        tree = _node(text, 0, len(text), 0, nested=False)
        if tree is not None:
            return tree
    try:
        return _PARSER.parsebytes(data)
    except Exception as exc:  # RecursionError included; the header block may still be usable
        logger.debug("MIME parser failed; parsing the header block alone", exc_info=True)
        defects.append(f"message: MIME parser failed ({type(exc).__name__}); body kept as text")
    try:
        return _PARSER.parsebytes(data, headersonly=True)
    except Exception as exc:
        raise ParseError(f"unparseable message: {type(exc).__name__}: {exc}") from exc


# The fast path: well-formed mail split with str.find instead of the stdlib's line-by-line
# feed (which also compiles a new regex for every boundary). It answers only where its tree is
# the one the stdlib would build, and returns None for anything unusual; tests compare the two.
# In a multipart the line break before a boundary belongs to the boundary (RFC 2046), so a
# `nested` node loses it from its payload or epilogue.
def _node(text: str, start: int, end: int, depth: int, nested: bool) -> Part | None:
    """Build the node for text[start:end] as the stdlib parser would; None when it is unusual."""
    part = Part()
    part.depth = depth
    body = _headers(text, start, end, part)
    if body < 0:
        return None
    maintype, _, subtype = part.get_content_type().partition("/")
    if maintype == "message":
        # The stdlib strips the boundary's line break from the last node it created, which
        # is inside the attached message; passing `nested` down does the same.
        if depth >= _FAST_DEPTH:
            return None
        if subtype == "delivery-status":
            return _delivery_status(text, body, end, part)
        inner = _node(text, body, end, depth + 1, nested)
        if inner is None:
            return None
        part.attach(inner)
        return part
    if maintype != "multipart":
        payload = text[body:end]
        part.set_payload(_strip_eol(payload) if nested else payload)
        return part
    boundary = part.get_boundary()
    if depth >= _FAST_DEPTH or not boundary or subtype == "digest":
        return None
    if str(part.get("content-transfer-encoding", "8bit")).lower() not in _MULTIPART_CTE:
        return None
    delimiters = _delimiters(text, body, end, "--" + boundary)
    if len(delimiters) < 2 or delimiters[0][2] or not delimiters[-1][2]:
        return None
    if delimiters[0][0] > body:
        part.preamble = _strip_eol(text[body : delimiters[0][0]])
    for (_, after, _), (before, _, _) in itertools.pairwise(delimiters):
        if after == before:
            return None
        child = _node(text, after, before, depth + 1, nested=True)
        if child is None:
            return None
        part.attach(child)
    epilogue = text[delimiters[-1][1] : end]
    if nested:
        part.epilogue = _strip_eol(epilogue) if epilogue else None
    else:
        part.epilogue = epilogue
    return part


def _delivery_status(text: str, start: int, end: int, part: Part) -> Part | None:
    """Attach one body-less node per blank-line separated field block, as the stdlib does."""
    pos = start
    while True:
        block = Part()
        after = _headers(text, pos, end, block)
        if after < 0 or block.get_content_maintype() != "text":
            return None
        block.set_payload("")
        part.attach(block)
        if after >= end:
            return part
        pos = after


def _strip_eol(text: str) -> str:
    """Drop one line break from the end of text."""
    if text.endswith("\n"):
        return text[:-2] if text.endswith("\r\n") else text[:-1]
    return text[:-1] if text.endswith("\r") else text


def _headers(text: str, start: int, end: int, part: Part) -> int:
    """Store the header fields of text[start:end] on part; return where the body starts or -1."""
    pos = start
    if text.startswith("From ", pos, end):  # an mbox separator in front of an attached message
        newline = text.find("\n", pos, end)
        if newline < 0:
            return -1
        part.set_unixfrom(text[pos:newline].removesuffix("\r"))
        pos = newline + 1
    while True:
        if pos >= end:
            return end
        if text.startswith("\n", pos, end):
            return pos + 1
        if text.startswith("\r\n", pos, end):
            return pos + 2
        field = _FIELD.match(text, pos, end)
        if field is None:
            return -1
        part.set_raw(field.group(1), field.group(2).lstrip(" \t").rstrip("\r\n"))
        pos = field.end()


def _delimiters(text: str, start: int, end: int, separator: str) -> list[tuple[int, int, bool]]:
    """Return (line start, line end, is close) of the boundary lines up to the close line."""
    found: list[tuple[int, int, bool]] = []
    pos = start
    while True:
        hit = text.find(separator, pos, end)
        if hit == -1:
            return found
        pos = hit + 1
        if hit != start and text[hit - 1] != "\n":
            continue
        cursor = hit + len(separator)
        close = text.startswith("--", cursor, end)
        if close:
            cursor += 2
        while cursor < end and text[cursor] in " \t":
            cursor += 1
        if cursor < end and text[cursor] == "\r" and cursor + 1 < end:
            cursor += 1
        if cursor < end and text[cursor] != "\n":
            continue
        found.append((hit, min(cursor + 1, end), close))
        if close:
            return found
        pos = cursor + 1
