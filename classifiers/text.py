"""Text extraction shared by training and the daemon: subject and own words, no quotes."""

from __future__ import annotations

import re

__all__ = ["clean_subject", "extract_text", "strip_body"]

_SUBJECT_PREFIX = re.compile(
    r"^\s*(?:(?:re|fw|fwd|aw|wg|sv|vs|tr|回复|答复|回覆|转发|轉寄)\s*(?:\[\d+\])?\s*[:：]\s*)+",
    re.IGNORECASE,
)
# The first line of whatever is not the sender's own words: everything from there on goes.
_CUT = re.compile(
    r"""^[ \t]*(?:
        -{2,}[ \t]*(?:original[ \t]+message|forwarded[ \t]+message|原始邮件|原始郵件)[ \t]*-{2,}
      | _{20,}
      | on[ \t][^\n]{4,250}\n?[^\n]{0,120}wrote[ \t]*:
      | (?:在|於)[^\n]{4,120}(?:写道|寫道)[ \t]*[:：]
      | (?:from|发件人|寄件者)[ \t]*[:：][^\n]*\n(?:[^\n]*\n){0,2}?[ \t]*
        (?:sent|date|to|subject|发送时间|时间|日期|收件人|主题)[ \t]*[:：]
      | --[ ]?$
      | sent[ \t]+from[ \t]+my[ \t]+\S[^\n]{0,40}$
      | (?:sent[ \t]+from[ \t]+(?:mail|outlook)|get[ \t]+outlook)[ \t]+for[ \t]+\S[^\n]{0,30}$
      | (?:发自我的|来自我的)[^\n]{1,20}$
    )""",
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)
_QUOTED_LINE = re.compile(r"^[ \t]*>[^\n]*(?:\n|$)", re.MULTILINE)
# Only runs that need changing match: a lone ASCII space is left alone (most of any text).
_HSPACE = re.compile(r"[\t\f\v\u00a0\u3000][ \t\f\v\u00a0\u3000]*| [ \t\f\v\u00a0\u3000]+")
_LINE_EDGES = re.compile(r" +\n *|\n +")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_subject(subject: str) -> str:
    """Return the subject without reply/forward prefixes and with whitespace collapsed."""
    return _HSPACE.sub(" ", _SUBJECT_PREFIX.sub("", subject.replace("\n", " "))).strip()


def strip_body(body: str) -> str:
    """Return the sender's own words: quoted text, attributions and signatures removed."""
    text = body.replace("\r\n", "\n").replace("\r", "\n")
    cut = _CUT.search(text)
    if cut:
        text = text[: cut.start()]
    text = _HSPACE.sub(" ", _QUOTED_LINE.sub("", text))
    return _BLANK_LINES.sub("\n\n", _LINE_EDGES.sub("\n", text)).strip()


def extract_text(subject: str, body: str) -> str:
    """Return the classifier input: the cleaned subject, a newline, the sender's own words."""
    return f"{clean_subject(subject)}\n{strip_body(body)}".strip()
