"""Charset labels mapped the way mail clients read them, and decoding that never fails."""

from __future__ import annotations

import binascii
import codecs
import functools
import logging
import re

from charset_normalizer import from_bytes

logger = logging.getLogger(__name__)

# Labels Python does not know, or knows under a narrower meaning than mail clients do.
_EXTRA_LABELS = {
    "x-gbk": "gbk",
    "csgb2312": "gb2312",
    "gb_2312-80": "gb2312",
    "x-euc-cn": "gb2312",
    "cn-gb": "gb2312",
    "x-cp936": "gbk",
    "windows-936": "gbk",
    "x-x-big5": "big5",
    "cn-big5": "big5",
    "csbig5": "big5",
    "x-big5": "big5",
    "windows-950": "cp950",
    "windows-31j": "cp932",
    "x-ms-cp932": "cp932",
    "x-sjis": "shift_jis",
    "csshiftjis": "shift_jis",
    "ms_kanji": "shift_jis",
    "x-euc-jp": "euc_jp",
    "cseucpkdfmtjapanese": "euc_jp",
    "csiso2022jp": "iso2022_jp",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "ksc_5601": "cp949",
    "windows-949": "cp949",
    "x-windows-949": "cp949",
    "unicodebig": "utf-16-be",
    "unicodefffe": "utf-16-be",
    "unicode": "utf-16-le",
    "unicodelittle": "utf-16-le",
    "windows-874": "cp874",
    "iso-8859-8-i": "iso8859-8",
    "iso-8859-6-i": "iso8859-6",
    "x-mac-roman": "mac-roman",
    "x-mac-cyrillic": "mac-cyrillic",
    "koi8-ru": "koi8-u",
    "x-user-defined": "cp1252",
    "ansi": "cp1252",
}

# Narrow codecs widened to the superset that senders actually use under that label.
_SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "big5": "big5hkscs",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
    "iso8859-1": "cp1252",
    "ascii": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
}

# Codec names that are not charsets of mail text even though Python can look them up.
_NOT_CHARSETS = frozenset(
    {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined", "charmap"}
)

# Codecs whose 7-bit input is not plain ASCII text.
_NOT_ASCII_COMPATIBLE = ("utf-16", "utf-32", "utf-7", "iso2022", "hz")

# Labels that are so often wrong that valid UTF-8 beats them.
_WEAK = frozenset({"ascii", "iso8859-1", "cp1252"})

# Detector answers too uncertain to beat the windows-1252 reading that mail clients default to.
_LATIN = frozenset(
    {
        "ascii", "cp1252", "iso8859-1", "iso8859-15", "cp1250", "iso8859-2", "cp1257",
        "iso8859-4", "iso8859-13", "cp1254", "iso8859-9", "iso8859-3", "iso8859-10",
        "iso8859-14", "iso8859-16", "cp850", "cp852", "cp858", "cp437", "cp775", "cp860",
        "cp861", "cp863", "cp865", "mac-roman", "mac-latin2", "mac-iceland", "mac-turkish",
    }
)  # fmt: skip
_DETECT_BYTES = 65536
_UTF8_EVIDENCE = 8
_CJK = frozenset({"gb18030", "big5hkscs", "cp950", "cp932", "euc_jp", "cp949", "johab", "hz"})
_CJK_ORDER = ("gb18030", "big5hkscs", "cp932", "cp949")
_CJK_SAMPLE = 2000
_SPACED_WIDE = re.compile(r"[^\x00-\x7f] [^\x00-\x7f]")
_FALLBACKS = {"big5hkscs": ("cp950",), "cp949": ("johab",), "cp932": ("euc_jp",)}
_LABEL_HEAD = re.compile(r"[a-z0-9_.:-]+")
_LABEL_DIGITS = re.compile(r"[a-z_.:-]*\d+(?:[-_]\d+)*")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


@functools.lru_cache(maxsize=512)
def codec_for(label: str | None) -> str | None:
    """Return the Python codec a mail client would use for a charset label, or None."""
    if not label:
        return None
    clean = label[:100].strip().strip("\"'").strip().lower()
    match = _LABEL_HEAD.match(clean)
    if match is None:
        return None
    token = match.group(0)
    candidates = [token]
    digits = _LABEL_DIGITS.match(token)
    if digits is not None and digits.group(0) != token:
        candidates.append(digits.group(0))
    for candidate in candidates:
        name = _lookup(candidate)
        if name is not None:
            return name
    return None


def _lookup(label: str) -> str | None:
    """Return the superset codec name for one clean label, or None when unknown."""
    label = _EXTRA_LABELS.get(label, label)
    try:
        name = codecs.lookup(label).name
        "a".encode(name)  # refuses bytes-to-bytes codecs such as base64 or hex
    except (LookupError, UnicodeError, ValueError):
        return None
    if name in _NOT_CHARSETS:
        return None
    return _SUPERSETS.get(name, name)


def is_ascii_compatible(codec: str | None) -> bool:
    """Tell whether 7-bit bytes in this codec always mean ASCII text."""
    return codec is None or not codec.startswith(_NOT_ASCII_COMPATIBLE)


def decode_bytes(data: bytes, label: str | None, defects: list[str], where: str) -> str:
    """Decode data labelled with a charset; fall back step by step and record each step."""
    text = _decode_bytes(data, label, defects, where)
    return text.replace("\x00", "") if "\x00" in text else text


def _decode_bytes(data: bytes, label: str | None, defects: list[str], where: str) -> str:
    """Decode without the NUL clean-up; see decode_bytes."""
    codec = codec_for(label)
    if label and codec is None:
        defects.append(f"{where}: unknown charset {label.strip()[:40]!r}")
    if is_ascii_compatible(codec) and data.isascii():
        if codec in (None, "cp1252") and (b"\x1b$B" in data or b"\x1b$@" in data):
            return _iso2022jp(data, defects, where)
        return data.decode("ascii")
    if codec == "iso2022_jp":
        return _iso2022jp(data, defects, where)
    if codec and codec.startswith("utf-16") and data.startswith((b"\xff\xfe", b"\xfe\xff")):
        codec = "utf-16"  # a byte-order mark beats the label's byte order
    if codec != "utf-8" and is_ascii_compatible(codec):
        # Valid UTF-8 beats a weak label; it beats a real one once there is too much of it to be
        # chance (two GB2312 characters are valid UTF-8 about 2% of the time; eight bytes never).
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if codec is None or codec in _WEAK:
                defects.append(f"{where}: 8-bit data labelled {label or 'nothing'}; read as utf-8")
                return text
            if len(data) - len(text) >= _UTF8_EVIDENCE:
                defects.append(f"{where}: labelled {label} but is utf-8")
                return text
    if codec is None:
        return decode_unknown(data, defects, where)
    for candidate in (codec, *_FALLBACKS.get(codec, ())):
        try:
            text = data.decode(candidate)
        except UnicodeDecodeError:
            continue
        if candidate != codec:
            defects.append(f"{where}: {label} data read as {candidate}")
        return text
    if codec == "cp1252":
        return data.decode("latin-1")
    if codec.startswith("utf-16") and len(data) % 2:
        return data[:-1].decode(codec, "replace")
    return _decode_lying(data, codec, label, defects, where)


def _decode_lying(
    data: bytes, codec: str, label: str | None, defects: list[str], where: str
) -> str:
    """Decode data that is not valid in its declared codec."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        defects.append(f"{where}: labelled {label} but is utf-8")
        return text
    text = data.decode(codec, "replace")
    if text.count("\ufffd") * 50 <= len(text):
        defects.append(f"{where}: invalid {label} bytes replaced")
        return text
    return decode_unknown(data, defects, where)


def decode_unknown(data: bytes, defects: list[str], where: str) -> str:
    """Decode bytes of unknown charset: utf-8, a detected non-Latin charset, else windows-1252."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    guess = _detect(data)
    if guess in _CJK:
        guess = _cjk_reading(data) or guess
    if guess is not None and guess not in _LATIN and is_ascii_compatible(guess):
        defects.append(f"{where}: charset guessed as {guess}")
        return data.decode(guess, "replace")
    defects.append(f"{where}: 8-bit data read as windows-1252")
    return data.decode("cp1252", "replace")


def _detect(data: bytes) -> str | None:
    """Return the codec a detector finds most likely for data, or None."""
    try:
        best = from_bytes(data[:_DETECT_BYTES]).best()
        if best is None:
            return None
        name = codecs.lookup(best.encoding).name
        return _SUPERSETS.get(name, name)
    except (LookupError, ValueError, RuntimeError):
        logger.debug("charset detection failed", exc_info=True)
        return None


# Detectors confuse GB2312, Big5, Shift_JIS and EUC-KR on short texts. Each has a core of
# everyday characters (GB2312, Big5 level 1, JIS level 1 and kana, KS X 1001 hangul), and the
# right reading lands in its core far more often than a wrong one does. EUC-KR and GB2312
# share their byte layout, so word spacing tells those two apart.
def _cjk_reading(data: bytes) -> str | None:
    """Pick the East Asian codec whose reading of data uses the most everyday characters."""
    best, best_score = None, 0.0
    for codec in _CJK_ORDER:
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        wide = [char for char in text[:_CJK_SAMPLE] if ord(char) > 0x7F]
        if not wide:
            continue
        score = sum(1 for char in wide if _is_core(char, codec)) / len(wide)
        if codec == "cp949" and _SPACED_WIDE.search(text):
            score += 0.1  # Korean separates words with spaces; Chinese and Japanese do not
        if score > best_score + 0.05:
            best, best_score = codec, score
    return best


def _is_core(char: str, codec: str) -> bool:
    """Tell whether char is an everyday character of the script codec is made for."""
    try:
        if codec == "gb18030":
            return len(char.encode("gb2312")) == 2
        if codec == "big5hkscs":
            code = int.from_bytes(char.encode("big5"), "big")
            return 0xA140 <= code <= 0xC67E
        if codec == "cp932":
            lead = char.encode("shift_jis")[0]
            return 0x81 <= lead <= 0x84 or 0x88 <= lead <= 0x98 or 0xA1 <= lead <= 0xDF
        lead = char.encode("euc_kr")[0]
        return 0xA1 <= lead <= 0xAC or 0xB0 <= lead <= 0xC8
    except UnicodeEncodeError:
        return False


def _iso2022jp(data: bytes, defects: list[str], where: str) -> str:
    """Decode ISO-2022-JP as Windows does (CP5022x), or Shift_JIS sent under its name."""
    try:
        return data.decode("iso2022_jp")
    except UnicodeDecodeError:
        pass
    if not data.isascii():
        for candidate in ("utf-8", "cp932", "euc_jp"):
            try:
                text = data.decode(candidate)
            except UnicodeDecodeError:
                continue
            defects.append(f"{where}: iso-2022-jp label on {candidate} data")
            return text
    sjis = _jis_to_sjis(data)
    if sjis is None:
        defects.append(f"{where}: iso-2022-jp with unusual escapes")
        return data.decode("iso2022_jp_2", "replace")
    text = sjis.decode("cp932", "replace")
    if "\ufffd" in text:
        defects.append(f"{where}: invalid iso-2022-jp bytes replaced")
    return text


def _jis_to_sjis(data: bytes) -> bytes | None:
    """Re-encode ISO-2022-JP (with vendor rows and half-width kana) as CP932 bytes."""
    out = bytearray()
    mode, i, size = "ascii", 0, len(data)
    while i < size:
        byte = data[i]
        if byte == 0x1B:
            seq = data[i + 1 : i + 3]
            if seq in (b"(B", b"(J"):
                mode = "ascii"
            elif seq in (b"$@", b"$B"):
                mode = "jis"
            elif seq == b"(I":
                mode = "kana"
            else:
                return None
            i += 3
        elif byte == 0x0E:
            mode, i = "kana", i + 1
        elif byte == 0x0F:
            mode, i = "ascii", i + 1
        elif byte in (0x0A, 0x0D) or mode == "ascii" or byte > 0x7F:
            out.append(byte)
            i += 1
        elif mode == "kana":
            out.append(byte | 0x80)
            i += 1
        elif i + 1 < size and 0x21 <= byte <= 0x7E and 0x21 <= data[i + 1] <= 0x7E:
            low = data[i + 1]
            lead = (byte + 1) // 2 + 0x70
            out.append(lead + 0x40 if lead >= 0xA0 else lead)
            if byte & 1:
                out.append(low + (0x20 if low >= 0x60 else 0x1F))
            else:
                out.append(low + 0x7E)
            i += 2
        else:
            out.append(byte)
            i += 1
    return bytes(out)


def decode_base64(data: bytes, defects: list[str], where: str) -> bytes:
    """Decode base64 leniently: junk characters skipped, bad padding repaired."""
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        pass
    clean = _B64_JUNK.sub(b"", data.split(b"=", 1)[0] if b"=" in data else data)
    if len(clean) % 4 == 1:
        clean = clean[:-1]
    defects.append(f"{where}: broken base64 repaired")
    return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
