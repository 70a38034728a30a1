"""Header text decoded: unfolding, RFC 2047 encoded words and raw 8-bit bytes."""

from __future__ import annotations

import binascii
import re

from .charsets import codec_for, decode_base64, decode_bytes, decode_unknown, is_ascii_compatible

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_FOLD = re.compile(r"\r\n|\r|\n")


def recover_raw(value: str) -> bytes | None:
    """Return the original bytes of a header parsed from bytes with surrogateescape, if any."""
    try:
        raw = value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return None
    return raw


def decode_header(value: str, defects: list[str], where: str, hint: str | None = None) -> str:
    """Unfold a raw header value and decode RFC 2047 words and raw 8-bit bytes in it."""
    if "\n" in value or "\r" in value:
        value = _FOLD.sub("", value)
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        raw = recover_raw(value)
        if raw is not None:
            value = _decode_raw_header(raw, defects, where, hint)
    if "=?" not in value:
        return value
    return _decode_words(value, defects, where)


def _decode_raw_header(raw: bytes, defects: list[str], where: str, hint: str | None) -> str:
    """Decode a header that arrived as raw 8-bit bytes: utf-8, the body charset, a guess."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    codec = codec_for(hint)
    if codec is not None and codec != "utf-8" and is_ascii_compatible(codec):
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError:
            pass
        else:
            defects.append(f"{where}: raw 8-bit header read as {codec}")
            return text
    return decode_unknown(raw, defects, f"{where}: raw 8-bit header")


def _decode_words(value: str, defects: list[str], where: str) -> str:
    """Decode encoded words, joining adjacent words of one charset before decoding."""
    out: list[str] = []
    pending: bytearray = bytearray()
    pending_label = ""
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        label = match.group(1).split("*", 1)[0]
        if between and (not pending or not between.isspace()):
            if pending:
                out.append(decode_bytes(bytes(pending), pending_label, defects, where))
                pending.clear()
            out.append(between)
        elif pending and label.lower() != pending_label.lower():
            out.append(decode_bytes(bytes(pending), pending_label, defects, where))
            pending.clear()
        pending_label = label
        pending += _word_bytes(match.group(2), match.group(3), defects, where)
        pos = match.end()
    if pending:
        out.append(decode_bytes(bytes(pending), pending_label, defects, where))
    out.append(value[pos:])
    return "".join(out)


def _word_bytes(kind: str, text: str, defects: list[str], where: str) -> bytes:
    """Return the bytes carried by one encoded word."""
    data = text.encode("utf-8", "surrogateescape")
    if kind in "qQ":
        return binascii.a2b_qp(data, header=True)
    return decode_base64(data, defects, where)
