"""Text extraction: quotes, attributions and signatures go, the sender's words stay."""

from __future__ import annotations

import pytest

from classifiers.text import clean_subject, extract_text


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Invoice 12", "Invoice 12"),
        ("RE: Fwd: FW: order", "order"),
        ("回复：转发：发票问题", "发票问题"),
        ("AW: WG:  Termin ", "Termin"),
        ("Reminder: renew", "Reminder: renew"),
    ],
)
def test_subject_prefixes(subject: str, expected: str) -> None:
    assert clean_subject(subject) == expected


@pytest.mark.parametrize(
    "body",
    [
        "Please fix it.\n\nOn Mon, 3 Jun 2024 at 10:00, Support <s@x.example> wrote:\n> old text",
        "Please fix it.\nOn Mon, 3 Jun 2024 at 10:00, Support <s@x.example>\nwrote:\n> old text",
        "Please fix it.\n-----Original Message-----\nFrom: Support\nSent: Monday\nold text",
        "Please fix it.\r\nFrom: Support <s@x.example>\r\nSent: Monday\r\nTo: me\r\n\r\nold text",
        "Please fix it.\n________________________________\nFrom: Support\nold text",
        "Please fix it.\n-- \nJohn Smith\nACME Ltd, old text",
        "Please fix it.\n\nSent from my iPhone\nold text",
        "Please fix it.\n> old text\n>> older text",
    ],
)
def test_english_quotes_and_signatures_removed(body: str) -> None:
    assert extract_text("Help", body) == "Help\nPlease fix it."


@pytest.mark.parametrize(
    "body",
    [
        "请尽快处理。\n\n------------------ 原始邮件 ------------------\n发件人: 客服\n旧内容",
        "请尽快处理。\n-----原始邮件-----\n发件人: 客服\n旧内容",
        "请尽快处理。\n在 2024年6月3日 10:00，客服 <s@x.example> 写道：\n> 旧内容",
        "请尽快处理。\n发件人: 客服\n发送时间: 2024年6月3日\n主题: 旧\n旧内容",
        "请尽快处理。\n\n发自我的iPhone",
    ],
)
def test_chinese_quotes_removed(body: str) -> None:
    assert extract_text("发票", body) == "发票\n请尽快处理。"


def test_own_words_kept_in_order_and_whitespace_collapsed() -> None:
    body = "First   line\u3000here.\n\n\n\nSecond line.\nFrom here on it is mine."
    assert extract_text("", body) == "First line here.\n\nSecond line.\nFrom here on it is mine."


def test_empty_input() -> None:
    assert extract_text("", "") == ""
