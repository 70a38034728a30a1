"""Charset labels, superset mapping and the decoding fallbacks of daemon.charsets."""

from __future__ import annotations

import pytest

from daemon.charsets import codec_for, decode_base64, decode_bytes, is_ascii_compatible


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("gb2312", "gb18030"),
        ("GBK", "gb18030"),
        ("x-gbk", "gb18030"),
        ("cp936", "gb18030"),
        ("euc-cn", "gb18030"),
        ("csgb2312", "gb18030"),
        ("GB18030", "gb18030"),
        ("big5", "big5hkscs"),
        ("Big5-HKSCS", "big5hkscs"),
        ("ks_c_5601-1987", "cp949"),
        ("euc-kr", "cp949"),
        ("shift_jis", "cp932"),
        ("x-sjis", "cp932"),
        ("windows-31j", "cp932"),
        ("iso-2022-jp", "iso2022_jp"),
        ("us-ascii", "cp1252"),
        ("ISO-8859-1", "cp1252"),
        ("latin1", "cp1252"),
        ("windows-1252", "cp1252"),
        ("unicodebig", "utf-16-be"),
        ("unicode", "utf-16-le"),
        ("UTF-8", "utf-8"),
        ("utf8", "utf-8"),
        ("koi8-r", "koi8-r"),
        ("iso-8859-15", "iso8859-15"),
        ("tis-620", "cp874"),
        ("utf-7", "utf-7"),
        ('"utf-8"', "utf-8"),
        ("  UTF-8  ", "utf-8"),
    ],
)
def test_labels_map_to_the_superset_mail_clients_use(label: str, codec: str) -> None:
    assert codec_for(label) == codec


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ('utf-8"><b>', "utf-8"),
        ("windows-1252http-equivContent-Type", "cp1252"),
        ("us-ascii (plain text)", "cp1252"),
        ("iso-8859-1;format=flowed", "cp1252"),
        ("gb2312'", "gb18030"),
    ],
)
def test_labels_with_junk_appended_still_resolve(label: str, codec: str) -> None:
    assert codec_for(label) == codec


@pytest.mark.parametrize(
    "label",
    [None, "", "x-unknown", "unknown-8bit", "base64", "rot13", "hex", "unicode_escape", "?"],
)
def test_unknown_and_non_text_codecs_are_refused(label: str | None) -> None:
    assert codec_for(label) is None


def test_ascii_compatibility() -> None:
    assert is_ascii_compatible("gb18030")
    assert is_ascii_compatible(None)
    assert not is_ascii_compatible("utf-16-be")
    assert not is_ascii_compatible("utf-7")
    assert not is_ascii_compatible("iso2022_jp")


def decode(data: bytes, label: str | None) -> tuple[str, list[str]]:
    defects: list[str] = []
    return decode_bytes(data, label, defects, "test"), defects


def test_declared_charset_that_is_right_records_nothing() -> None:
    assert decode("Grüße".encode("cp1252"), "iso-8859-1") == ("Grüße", [])
    assert decode("您好".encode("gb2312"), "gb2312") == ("您好", [])
    assert decode(b"plain", None) == ("plain", [])


def test_gbk_characters_under_a_gb2312_label_decode_silently() -> None:
    assert decode("王喆 镕 珺".encode("gbk"), "gb2312") == ("王喆 镕 珺", [])


def test_gb18030_four_byte_sequences_under_gbk_label() -> None:
    assert decode("𠀀€".encode("gb18030"), "gbk")[0] == "𠀀€"


def test_big5_label_reads_hkscs_characters() -> None:
    assert decode("香港𥄫".encode("big5hkscs"), "big5") == ("香港𥄫", [])


def test_ks_c_5601_reads_cp949_extension_syllables() -> None:
    assert decode("똠방각하".encode("cp949"), "ks_c_5601-1987") == ("똠방각하", [])


def test_latin1_or_ascii_label_on_utf8_data_reads_utf8_and_says_so() -> None:
    text, defects = decode("naïve ☺".encode(), "us-ascii")
    assert text == "naïve ☺"
    assert defects == ["test: 8-bit data labelled us-ascii; read as utf-8"]
    assert decode("naïve".encode(), "iso-8859-1")[0] == "naïve"


def test_ascii_label_on_cp1252_data_reads_windows_1252() -> None:
    assert decode("“quoted” – café".encode("cp1252"), "us-ascii")[0] == "“quoted” – café"


def test_bytes_undefined_in_windows_1252_fall_back_to_latin1() -> None:
    assert decode(b"a\x81b", "iso-8859-1")[0] == "a\x81b"


def test_enough_valid_utf8_beats_a_declared_charset() -> None:
    text, defects = decode("Привет, мир".encode(), "gb2312")
    assert text == "Привет, мир"
    assert defects == ["test: labelled gb2312 but is utf-8"]


def test_short_text_that_is_valid_utf8_by_chance_keeps_its_charset() -> None:
    # 郑伟 in GB2312 is D6 A3 CE B0, which is also valid (meaningless) UTF-8.
    assert decode("郑伟".encode("gb2312"), "gb2312") == ("郑伟", [])


def test_invalid_declared_charset_falls_back_to_utf8() -> None:
    text, defects = decode("☺".encode(), "gb2312")  # E2 98 BA: a GBK pair, then a lone lead byte
    assert (text, defects) == ("☺", ["test: labelled gb2312 but is utf-8"])


def test_a_few_bad_bytes_keep_the_declared_charset() -> None:
    data = "您好，请帮我查询订单。".encode("gb18030") * 20 + b"\xff\xff"
    text, defects = decode(data, "gb2312")
    assert text.startswith("您好，请帮我查询订单。")
    assert defects == ["test: invalid gb2312 bytes replaced"]


def test_unknown_charset_tries_utf8_then_records_it() -> None:
    text, defects = decode(b"\xe2\x98\xba", "x-unknown")
    assert text == "☺"
    assert defects[0] == "test: unknown charset 'x-unknown'"


def test_unlabelled_western_8bit_reads_as_windows_1252() -> None:
    text, defects = decode("Información de la revisión".encode("cp1252"), None)
    assert text == "Información de la revisión"
    assert defects == ["test: 8-bit data read as windows-1252"]


@pytest.mark.parametrize(
    ("text", "codec"),
    [
        ("您好，我的訂單還沒有發貨，請幫忙查一下。", "big5"),
        ("您好，我的订单还没有发货，请帮忙查一下。", "gb2312"),
        ("こんにちは、注文がまだ届いていません", "shift_jis"),
        ("안녕하세요 주문이 아직 도착하지 않았습니다", "euc-kr"),
        ("Здравствуйте! Я не могу войти в свою учётную запись.", "koi8-r"),
    ],
)
def test_unlabelled_east_asian_and_cyrillic_text_is_detected(text: str, codec: str) -> None:
    decoded, defects = decode(text.encode(codec), None)
    assert decoded == text
    assert defects[0].startswith("test: charset guessed as")


def test_unicodebig_is_utf16_big_endian() -> None:
    assert decode("☺ dum".encode("utf-16-be"), "unicodebig")[0] == "☺ dum"


def test_odd_length_utf16_drops_the_dangling_byte() -> None:
    assert decode("ab".encode("utf-16-le") + b"\x00\x63\x00", "unicode")[0].startswith("ab")


def test_nul_characters_are_removed() -> None:
    assert decode(b"dum\x00my", "utf-8")[0] == "dummy"


def test_iso_2022_jp_plain() -> None:
    assert decode("日本語のテスト".encode("iso2022_jp"), "iso-2022-jp") == ("日本語のテスト", [])


def test_iso_2022_jp_with_nec_row_13_and_half_width_kana() -> None:
    # "①" (JIS row 13, a Windows extension) and half-width katakana via ESC ( I.
    data = b"\x1b$B-!\x1b(B \x1b(I1\x1b(B ok"
    assert decode(data, "iso-2022-jp")[0] == "① ｱ ok"


def test_iso_2022_jp_label_on_shift_jis_bytes() -> None:
    text, defects = decode("日本語のテスト".encode("cp932"), "ISO-2022-JP")
    assert text == "日本語のテスト"
    assert defects == ["test: iso-2022-jp label on cp932 data"]


def test_undeclared_iso_2022_jp_is_recognised_by_its_escapes() -> None:
    assert decode("送信できませんでした".encode("iso2022_jp"), None)[0] == "送信できませんでした"


def test_base64_repairs_padding_and_junk() -> None:
    defects: list[str] = []
    assert decode_base64(b"SGVsbG8", defects, "t") == b"Hello"
    assert decode_base64(b"SGVs*bG8=", [], "t") == b"Hello"
    assert decode_base64(b"SGVsbG8hI", [], "t") == b"Hello!"
    assert defects == ["t: broken base64 repaired"]
