"""parse_message on hand-written edge cases, plus the small helpers around it."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.message import (
    Address,
    extract_message_id,
    guess_language,
    normalize_message_id,
    parse_message,
)

MAIL = Path(__file__).resolve().parent / "data" / "mail"


def fixture(name: str) -> bytes:
    return (MAIL / name).read_bytes()


def test_plain_message_fields() -> None:
    raw = (
        b"Return-Path: <anna@example.com>\r\n"
        b'From: "Smith, Anna" <Anna.Smith@Example.COM>\r\n'
        b"To: Support <support@helpdesk.example>, bob@example.org\r\n"
        b"Cc: =?utf-8?Q?J=C3=BCrgen?= <j@example.de>\r\n"
        b"Reply-To: replies@example.com\r\n"
        b"Subject: Cannot log in\r\n"
        b"Date: Mon, 16 Nov 2026 09:30:00 +0100\r\n"
        b"Message-ID: <abc@example.com>\r\n"
        b"X-Note: one\r\nx-note: two\r\n"
        b"\r\n"
        b"Hello,\r\n\r\nI cannot log in.\r\n"
    )
    message = parse_message(raw)
    assert message.subject == "Cannot log in"
    assert message.sender == Address("Smith, Anna", "anna.smith@example.com")
    assert message.to == [
        Address("Support", "support@helpdesk.example"),
        Address("", "bob@example.org"),
    ]
    assert message.cc == [Address("Jürgen", "j@example.de")]
    assert message.reply_to == [Address("", "replies@example.com")]
    assert message.date == datetime(2026, 11, 16, 8, 30, tzinfo=UTC)
    assert message.message_id == "<abc@example.com>"
    assert message.text == "Hello,\n\nI cannot log in.\n"
    assert message.html is None and not message.text_from_html
    assert message.content_type == "text/plain"
    assert message.language == "en"
    assert message.defects == []
    assert message.header("x-NOTE") == "one"
    assert message.headers_all("X-Note") == ["one", "two"]
    assert message.header("missing") is None
    assert message.headers[1] == ("From", '"Smith, Anna" <Anna.Smith@Example.COM>')
    assert message.tree.get("message-id") == "<abc@example.com>"


def test_multipart_alternative_prefers_plain_and_keeps_html() -> None:
    raw = (
        b'Content-Type: multipart/alternative; boundary="a"\n\n--a\nContent-Type: text/plain\n\n'
        b"plain body\n--a\nContent-Type: text/html; charset=utf-8\n\n<p>html body</p>\n--a--\n"
    )
    message = parse_message(raw)
    assert message.text == "plain body\n"
    assert message.html == "<p>html body</p>"
    assert not message.text_from_html
    assert message.content_type == "multipart/alternative"


def test_empty_plain_alternative_falls_back_to_html() -> None:
    raw = (
        b'Content-Type: multipart/alternative; boundary="a"\n\n--a\nContent-Type: text/plain\n\n'
        b"\n--a\nContent-Type: text/html\n\n<p>the real text</p>\n--a--\n"
    )
    message = parse_message(raw)
    assert message.text == "the real text\n"
    assert message.text_from_html


def test_html_only_mail() -> None:
    message = parse_message(fixture("html-only.eml"))
    assert message.text_from_html
    assert message.html is not None and message.html.startswith("<html>")
    assert message.text == (
        "Hello\xa0team,\n\n"
        "The log is in C:\\Users\\ann\\AppData\\Local\\Temp\\x.log – see the attached file.\n\n"
        "- first\n- second\n\nCafé & crème\nAnn\n"
    )
    assert "Ignored title" not in message.text and "var a" not in message.text


def test_rfc2231_continuations_and_encoded_word_filenames() -> None:
    message = parse_message(fixture("rfc2231-filenames.eml"))
    assert message.text == "See the files.\n"
    names = [(a.filename, a.content_type, a.size) for a in message.attachments]
    assert names == [
        ("发票明细表.pdf", "application/pdf", 9),
        ("错误日志.txt", "text/plain", 16),
        ("Grüße.csv", "text/csv", 3),
    ]
    assert message.attachments[1].sha256 == hashlib.sha256(b"line 1\r\nline 2\r\n").hexdigest()
    assert message.defects == []


def test_encoded_words_split_inside_multibyte_characters() -> None:
    message = parse_message(fixture("split-encoded-word.eml"))
    assert message.subject == "Re: 中文测试 café done"
    assert message.sender == Address("张伟", "zhang.wei@example.cn")


def test_nested_message_rfc822_is_an_attachment_not_body_text() -> None:
    message = parse_message(fixture("nested-rfc822.eml"))
    assert message.text == "Forwarding the customer's mail.\n"
    assert message.html is None
    [attached] = message.attachments
    assert attached.content_type == "message/rfc822"
    assert attached.inline and attached.filename is None
    assert attached.size > 100
    inner = message.tree.get_payload(1)
    assert not isinstance(inner, str)
    assert inner.get_payload(0)["Message-ID"] == "<inner@example.com>"


def test_broken_base64_is_repaired_and_recorded() -> None:
    message = parse_message(fixture("broken-base64.eml"))
    assert message.text == "Hello, world!\n"
    [image] = message.attachments
    assert (image.filename, image.content_type, image.size) == ("dot.png", "image/png", 8)
    assert "part 2 image/png: broken base64 repaired" in message.defects
    assert "part 1: InvalidBase64PaddingDefect" in message.defects


def test_bare_cr_line_ends_with_mbox_line_and_bom() -> None:
    message = parse_message(fixture("bare-cr.eml"))
    assert message.subject == "old Mac mail"
    assert message.message_id == "<cr@example.com>"
    assert message.text == "line one\nline two\n"
    assert extract_message_id(fixture("bare-cr.eml")) == "<cr@example.com>"


def test_unknown_and_garbage_charset_names() -> None:
    message = parse_message(fixture("unknown-charset.eml"))
    assert message.subject == "☺ smile"
    assert message.text == "Grüße\nnaïve\n"
    assert "part 1 text/plain: unknown charset 'x-klingon'" in message.defects
    assert "header Subject: unknown charset 'x-unknown'" in message.defects


def test_raw_8bit_headers() -> None:
    message = parse_message(fixture("8bit-headers.eml"))
    assert message.subject == "Grüße aus Köln"
    assert message.sender == Address("张伟", "zw@example.cn")
    assert message.text == "您好，请帮我查询订单。\n"
    assert message.language == "zh"
    assert message.defects == ["header From: raw 8-bit header read as gb18030"]


def test_big5_body_with_hkscs_character() -> None:
    message = parse_message(fixture("big5.eml"))
    assert message.subject == "訂單查詢"
    assert message.text == "您好，我的訂單還沒有發貨。香港用字：𥄫\n"
    assert message.defects == []


def test_gb18030_body_under_gb2312_label() -> None:
    message = parse_message(fixture("gb18030.eml"))
    assert message.subject == "王喆的订单"
    assert message.text == "您好，王喆和𠀀。€\n"
    assert message.language == "zh"


def deep_multipart(levels: int) -> bytes:
    head = [b"Subject: deep\nContent-Type: multipart/mixed; boundary=b0\n\n"]
    head += [
        b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i - 1, i)
        for i in range(1, levels)
    ]
    tail = [b"--b%d--\n" % i for i in range(levels - 1, -1, -1)]
    return b"".join([*head, b"--b%d\n\nhello\n" % (levels - 1), *tail])


def test_ten_thousand_nested_multiparts() -> None:
    started = time.perf_counter()
    message = parse_message(deep_multipart(10_000))
    assert time.perf_counter() - started < 5
    assert message.subject == "deep"
    assert message.text == ""
    assert any("MIME nesting deeper than" in defect for defect in message.defects)


def test_missing_header_body_separator() -> None:
    message = parse_message(b"Subject: x\nFrom: a@b.example\nthis line is body\nand this\n")
    assert message.subject == "x"
    assert message.text == "this line is body\nand this\n"
    assert "part body: MissingHeaderBodySeparatorDefect" in message.defects


def test_multipart_without_boundary_is_read_as_text() -> None:
    message = parse_message(b"Content-Type: multipart/mixed\n\n--x\n\nhello\n--x--\n")
    assert "hello" in message.text
    assert "part body: NoBoundaryInMultipartDefect" in message.defects


@pytest.mark.parametrize(
    ("cte", "body", "text"),
    [
        ("quoted-printable ", "caf=C3=A9\n", "café\n"),
        ("BASE64", "Y2Fmw6kK\n", "café\n"),
        ("base-64", "Y2Fmw6kK\n", "café\n"),
        ("8bits", "plain\n", "plain\n"),
        ("x-uuencode", "begin 644 x\n%8V%F PJ\n`\nend\n", "caf\xc3"),
    ],
)
def test_odd_transfer_encodings(cte: str, body: str, text: str) -> None:
    raw = f"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: {cte}\n\n{body}"
    assert parse_message(raw.encode()).text.startswith(text.rstrip("\xc3"))


def test_windows_paths_survive_every_transfer_encoding() -> None:
    path = r"C:\Users\x\AppData\Local\Temp\setup_err.log and \\fileserver01\shared\new_export\x64"
    for cte, body in [
        ("7bit", path),
        ("quoted-printable", path.replace("=", "=3D")),
        ("base64", __import__("base64").b64encode(path.encode()).decode()),
    ]:
        raw = f"Content-Type: text/plain\nContent-Transfer-Encoding: {cte}\n\n{body}\n".encode()
        assert path in parse_message(raw).text


def test_attachment_flags_and_content_id() -> None:
    raw = (
        b'Content-Type: multipart/related; boundary="r"\n\n--r\nContent-Type: text/html\n\n'
        b'<img src="cid:logo@x">\n--r\nContent-Type: image/gif\nContent-ID: < logo@x >\n'
        b"Content-Transfer-Encoding: base64\n\nR0lGODlh\n--r\nContent-Type: application/pdf\n"
        b"Content-Disposition: inline; filename=a.pdf\n\n%PDF\n--r--\n"
    )
    message = parse_message(raw)
    gif, pdf = message.attachments
    assert (gif.inline, gif.content_id, gif.filename, gif.size) == (True, "logo@x", None, 6)
    assert (pdf.inline, pdf.content_id, pdf.filename) == (True, None, "a.pdf")
    assert message.text_from_html


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("MAILER-DAEMON", [Address("", "mailer-daemon")]),
        ("undisclosed-recipients:;", []),
        ("a@x.example, , b@y.example", [Address("", "a@x.example"), Address("", "b@y.example")]),
        (
            "Team: a@x.example, b@y.example;",
            [Address("", "a@x.example"), Address("", "b@y.example")],
        ),
        ("<@route:c@z.example>", [Address("", "c@z.example")]),
        ("=?utf-8?B?5byg5Lyf?= <zw@x.example>", [Address("张伟", "zw@x.example")]),
        ('"=?utf-8?Q?M=C3=BCller?=" <m@x.example>', [Address("Müller", "m@x.example")]),
        ("john (comment) <j@x.example>", [Address("john (comment)", "j@x.example")]),
        ("", []),
    ],
)
def test_address_headers(header: str, expected: list[Address]) -> None:
    assert parse_message(f"To: {header}\n\nx\n".encode()).to == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Mon, 16 Nov 2026 09:30:00 +0100", datetime(2026, 11, 16, 8, 30, tzinfo=UTC)),
        ("16 Nov 2026 09:30 -0500 (EST)", datetime(2026, 11, 16, 14, 30, tzinfo=UTC)),
        ("Mon, 16 Nov 2026 09:30:00 GMT", datetime(2026, 11, 16, 9, 30, tzinfo=UTC)),
        ("Mon, 16 Nov 2026 09:30:00 -0000", datetime(2026, 11, 16, 9, 30, tzinfo=UTC)),
        ("Mon, 16 Nov 26 09:30:00 +0000", datetime(2026, 11, 16, 9, 30, tzinfo=UTC)),
        ("Mon, 31 Feb 2026 09:30:00 +0000", None),
        ("yesterday", None),
        ("", None),
    ],
)
def test_dates(header: str, expected: datetime | None) -> None:
    assert parse_message(f"Date: {header}\n\nx\n".encode()).date == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a@b>", "<a@b>"),
        ("  <a@b>  ", "<a@b>"),
        ("a@b", "<a@b>"),
        ("<a@b> (comment)", "<a@b>"),
        ("(c) <a@\r\n b>", "<a@b>"),
        ("<>", None),
        ("garbage", None),
        ("", None),
    ],
)
def test_normalize_message_id(value: str, expected: str | None) -> None:
    assert normalize_message_id(value) == expected


def test_references_are_tokens_deduplicated_in_order() -> None:
    raw = (
        b"In-Reply-To: Your message of Monday <p@x>\n"
        b"References: <a@x> <b@x>\n <a@x>\t<c@x> (old) <>\n\nbody\n"
    )
    message = parse_message(raw)
    assert message.in_reply_to == ["<p@x>"]
    assert message.references == ["<a@x>", "<b@x>", "<c@x>"]


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: x\nMessage-ID: <id@x>\n\nbody\n",
        b"Subject: x\r\nMessage-Id:\r\n <id@x>\r\n\r\nMessage-ID: <other@x>\r\n",
        b"Subject: x\rMESSAGE-ID: <id@x>\r\rbody\r",
        b"From a@b Mon Jan  5 09:00:00 2026\nMessage-ID: id@x\n\n",
        b"\xef\xbb\xbf\n\nMessage-ID: <id@x> (comment)\n",
        b"X-Other: y\nMessage-ID: <i\n d@x>\nX-After: z\n\n",
    ],
)
def test_extract_message_id_reads_only_the_header_block(raw: bytes) -> None:
    assert extract_message_id(raw) == "<id@x>"
    assert parse_message(raw).message_id == "<id@x>"


def test_extract_message_id_ignores_ids_in_the_body() -> None:
    assert extract_message_id(b"Subject: x\n\nMessage-ID: <body@x>\n") is None
    assert extract_message_id(b"Resent-Message-ID: <r@x>\n\n") is None
    assert extract_message_id(b"") is None


@pytest.mark.parametrize(
    ("subject", "text", "language"),
    [
        ("Cannot log in", "Hello, I cannot log in.", "en"),
        ("申请退款", "您好，我在上周购买的手机客户端因为质量问题申请了退款。", "zh"),
        ("订单", "Order #123 for 李明 is late, please check the tracking number.", "en"),
        ("注文", "こんにちは、注文がまだ届いていません。", "ja"),
        ("주문", "안녕하세요, 주문이 아직 도착하지 않았습니다.", "ko"),
        ("", "", "en"),
    ],
)
def test_guess_language(subject: str, text: str, language: str) -> None:
    assert guess_language(subject, text) == language


def test_nul_bytes_never_reach_the_text() -> None:
    message = parse_message(b"Subject: a\x00b\nContent-Type: text/plain\n\nc\x00d\n")
    assert message.subject == "ab"
    assert message.text == "cd\n"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\n\n\n",
        b"garbage without structure",
        b"From: " + b"a" * 100_000 + b"\nReferences: " + b"x" * 100_000 + b"\n\n",
        b"Content-Type: text/html\n\n" + b"<a " * 50_000,
        b"To: " + b"a:" * 10_000 + b"\n\n",
        b"Content-Type: multipart/mixed; boundary=a\n\n" + b"--a\n\nx\n" * 20_000,
    ],
)
def test_hostile_input_is_survived_quickly(raw: bytes) -> None:
    started = time.perf_counter()
    parse_message(raw)
    assert time.perf_counter() - started < 5


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    parse_message(raw)
    extract_message_id(raw)


MIME_PIECES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=b\n",
        b"Content-Type: message/rfc822\n",
        b"Content-Type: text/plain; charset=x-bad\n",
        b"Content-Type: text/html; charset*=utf-8''%E2\n",
        b"Content-Transfer-Encoding: base64\n",
        b"Content-Transfer-Encoding: quoted-printable\n",
        b"Content-Disposition: attachment; filename*0*=gb2312''%D6; filename*1*=%D0\n",
        b"Subject: =?utf-8?B?5Lit?= =?gb2312?Q?=D6=D0?=\n",
        b"From: =?x?Q?a?= <b@c>, \xff\xfe\n",
        b"\n",
        b"--b\n",
        b"--b--\n",
        b"=C3=A9 =\n",
        b"\xe4\xb8\xad\xd6\xd0\n",
        b"begin 644 f\n",
        b" folded\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(MIME_PIECES, max_size=30))
def test_random_mime_fragments_never_raise(pieces: list[bytes]) -> None:
    message = parse_message(b"".join(pieces))
    assert isinstance(message.text, str)
    message.text.encode("utf-8")  # no lone surrogates may reach the database
    for _, value in message.headers:
        value.encode("utf-8")
