"""Header text: unfolding, RFC 2047 encoded words and raw 8-bit header bytes."""

from __future__ import annotations

import base64

import pytest

from daemon.encoded_words import decode_header


def decode(value: str, hint: str | None = None) -> tuple[str, list[str]]:
    defects: list[str] = []
    return decode_header(value, defects, "Subject", hint), defects


def raw8(data: bytes) -> str:
    """A header value as the compat32 parser hands it over for raw 8-bit bytes."""
    return data.decode("ascii", "surrogateescape")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain ascii", "plain ascii"),
        ("=?utf-8?Q?caf=C3=A9?=", "café"),
        ("=?UTF-8?B?Y2Fmw6k=?=", "café"),
        ("=?iso-8859-1?q?Gr=FC=DFe_aus_K=F6ln?=", "Grüße aus Köln"),
        ("Re: =?utf-8?Q?caf=C3=A9?= ok", "Re: café ok"),
        ("=?utf-8?Q?a?= =?utf-8?Q?b?=", "ab"),
        ("=?utf-8?Q?a?=\r\n =?iso-8859-1?Q?=E9?=", "aé"),
        ("=?utf-8*en?Q?lang_tag?=", "lang tag"),
        ("=?gb18030?B?suLK1A===?=", "测试"),
        ("=?unicodebig?B?JjoAIABkAHUAbQ==?=", "☺ dum"),
        ("=?windows-1252http-equivContent-Type?Q?Orange_m=E9canique?=", "Orange mécanique"),
        ("=?utf-8?Q?no space between?=words", "no space betweenwords"),
        ("Folded\r\n subject\n\tline", "Folded subject\tline"),
    ],
)
def test_encoded_words(value: str, text: str) -> None:
    assert decode(value)[0] == text


def test_words_split_inside_a_multibyte_character_are_joined_first() -> None:
    data = "中文测试".encode()
    first, second = base64.b64encode(data[:4]).decode(), base64.b64encode(data[4:]).decode()
    value = f"=?UTF-8?B?{first}?=\r\n =?utf-8?b?{second}?="
    assert decode(value) == ("中文测试", [])


def test_q_words_split_inside_a_character() -> None:
    assert decode("=?utf-8?Q?caf=C3?= =?utf-8?Q?=A9?=") == ("café", [])


def test_gbk_characters_in_a_gb2312_word() -> None:
    value = "=?GB2312?B?" + base64.b64encode("王喆".encode("gbk")).decode() + "?="
    assert decode(value) == ("王喆", [])


def test_unknown_charset_in_a_word_is_recorded() -> None:
    text, defects = decode("=?x-unknown?Q?=E2=98=BA?=")
    assert text == "☺"
    assert defects[0] == "Subject: unknown charset 'x-unknown'"


def test_raw_utf8_header() -> None:
    assert decode(raw8("Grüße ☺".encode())) == ("Grüße ☺", [])


def test_raw_8bit_header_uses_the_body_charset() -> None:
    text, defects = decode(raw8("张伟".encode("gbk")), hint="gb2312")
    assert text == "张伟"
    assert defects == ["Subject: raw 8-bit header read as gb18030"]


def test_raw_8bit_header_without_any_hint() -> None:
    text, defects = decode(raw8("café".encode("latin-1")))
    assert text == "café"
    assert defects == ["Subject: raw 8-bit header: 8-bit data read as windows-1252"]


def test_raw_utf8_mixed_with_encoded_words() -> None:
    assert decode(raw8("ü ".encode()) + "=?utf-8?Q?=C3=A9?=")[0] == "ü é"


def test_nul_is_dropped() -> None:
    assert decode("a\x00b")[0] == "ab"


def test_broken_base64_word_is_repaired() -> None:
    text, defects = decode("=?utf-8?B?Y2Fmw6k?=")
    assert text == "café"
    assert defects == ["Subject: broken base64 repaired"]
