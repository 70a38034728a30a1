"""parse_message on the shared real-world mail and on the generated support-mail corpus."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.message import ParsedMessage, extract_message_id, parse_message

Check = Callable[[ParsedMessage], bool]


def manifest(shared_dir: Path) -> list[dict[str, str]]:
    with (shared_dir / "data" / "mail" / "manifest.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def mail_path(shared_dir: Path, row: dict[str, str]) -> Path:
    """Manifest paths start with the shared directory's own name."""
    return shared_dir.joinpath(*Path(row["path"]).parts[1:])


def test_every_real_world_mail_parses(shared_dir: Path) -> None:
    rows = manifest(shared_dir)
    assert len(rows) >= 400
    problems: list[str] = []
    for row in rows:
        raw = mail_path(shared_dir, row).read_bytes()
        try:
            message = parse_message(raw)
        except Exception as exc:  # collected, so one run reports every file that fails
            problems.append(f"{row['path']}: {type(exc).__name__}: {exc}")
            continue
        if extract_message_id(raw) != message.message_id:
            problems.append(f"{row['path']}: extract_message_id disagrees with parse_message")
        for value in [message.text, message.subject, *(v for _, v in message.headers)]:
            value.encode("utf-8")  # nothing undecodable (lone surrogates) may leak out
    assert problems == []


# What the manifest's notes say each charset case must decode to.  Where upstream (Kopano)
# expected a lossy result, the check asks for the better, lossless reading instead.
CHARSET_CASES: dict[str, tuple[str, Check]] = {
    "kopano__mime_charset_01.eml": ("tæst", lambda m: m.subject == "tæst" and m.text == "tæst\n"),
    "kopano__mime_charset_02.eml": ("tæst", lambda m: m.subject == "tæst" and m.text == "tæst\n"),
    "kopano__mime_charset_03.eml": (
        "us-ascii",
        lambda m: "How does the decoder copé wìth hïgh bïtş, like from utf-8?" in m.text,
    ),
    "kopano__no-charset-03.eml": (
        "no charset",
        lambda m: m.subject == "C3" and m.html == "<html>\n",
    ),
    "kopano__no-content-type.eml": (
        "no Content-Type",
        lambda m: (
            m.content_type == "text/plain" and m.text == "Message part without a Content-Type\n"
        ),
    ),
    "kopano__unknown-text-charset.eml": (
        "e2 98 ba",
        lambda m: m.text == "☺\n" and m.subject == "☺",
    ),
    "kopano__zcp-11699-p.eml": (
        "☺ dum",
        lambda m: m.subject.startswith("☺ dum") and "☺ dummy ☻" in m.text,
    ),
    "kopano__zcp-13337.eml": ("U+00A0", lambda m: m.html is not None and "\xa0" in m.html),
    "kopano__zcp-13449-meca.eml": (
        "Mécanique",
        lambda m: m.subject == "Orange mécanique" and "Orange Mécanique" in m.text,
    ),
    "kopano__zcp-13449-na.eml": (
        "raw 8-bit",
        lambda m: m.subject == "Nøt ASCIIだよ" and m.text == "これはアスキーではない!\n",
    ),
    "rt__multipart-alternative-with-umlaut.eml": ("iso-8859-1", lambda m: "Grüßen" in m.text),
    "rt__new-ticket-from-gb18030.eml": (
        "GB18030",
        lambda m: m.subject == "测试" and m.text == "测试\n" and m.language == "zh",
    ),
    "rt__text-html-with-umlaut.eml": (
        "umlaut",
        lambda m: m.text_from_html and "Mit freundlichen Grüßen" in m.text,
    ),
    "mimekit__japanese.eml": (
        "ISO-2022-JP",
        lambda m: (
            m.subject == "日本語メールテスト (testing Japanese emails)"
            and "日本語が\n正常に\n送れているか\nテスト." in m.text
        ),
    ),
    "rubymail__attachment_emails_attachment_pdf_non_ascii.eml": (
        "non-ASCII",
        lambda m: (
            m.subject == "Another PDF with 🎉 Unicode chars in it 🍿"
            and [a.filename for a in m.attachments] == ["broken.pdf"]
        ),
    ),
    "rubymail__multi_charset_japanese.eml": (
        "Japanese",
        lambda m: m.subject == "まみむめも" and m.text.startswith("かきくえこ\n"),
    ),
    "rubymail__multi_charset_japanese_attachment_long_name.eml": (
        "long",
        lambda m: (
            [a.filename for a in m.attachments] == ["かきくけこ" * 5 + ".txt"]
            and m.subject == "まみむめも" * 10
        ),
    ),
    "rubymail__plain_emails_raw_email.eml": (
        "euc-kr",
        lambda m: m.subject == "NOTE: 한국말로 하는 것" and "제 이름은 Jamis입니다." in m.text,
    ),
    "cpython__msg_10.eml": (
        "iso-8859-1",
        lambda m: (
            m.html == "¡This is a Quoted Printable encoded message!\n"
            and m.text.count("This is a Base64 encoded message.") == 2
        ),
    ),
}


def test_charset_cases_decode_as_their_notes_describe(shared_dir: Path) -> None:
    rows = [row for row in manifest(shared_dir) if row["category"] == "charsets"]
    assert rows
    failures = []
    for row in rows:
        name = Path(row["path"]).name
        assert name in CHARSET_CASES, f"no expectation written down for {name}: {row['notes']}"
        hint, check = CHARSET_CASES[name]
        assert hint in row["notes"], f"{name}: the manifest notes changed: {row['notes']}"
        message = parse_message(mail_path(shared_dir, row).read_bytes())
        if not check(message):
            failures.append(f"{name}: subject={message.subject!r} text={message.text[:120]!r}")
    assert failures == []


@pytest.fixture(scope="module")
def support_corpus(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The team's benchmark corpus (1,000 messages, seed 42), generated once per module."""
    script = shared_dir / "corpus" / "make_corpus.py"
    if not script.is_file():
        pytest.skip(f"corpus generator not found: {script}")
    out = tmp_path_factory.mktemp("corpus")
    subprocess.run(
        [sys.executable, str(script), "1000", "42", str(out)], check=True, capture_output=True
    )
    return out


def squeeze(text: str) -> str:
    return " ".join(text.split())


def fidelity_problems(meta: dict[str, Any], message: ParsedMessage) -> list[str]:
    """Compare one parsed message with what the generator says it wrote."""
    problems = []
    if message.subject != meta["subject"]:
        problems.append(f"subject {message.subject!r} != {meta['subject']!r}")
    probe, text = meta["probe"], message.text
    # Bodies are wrapped: English at spaces, Chinese anywhere, so compare without line breaks.
    if squeeze(probe) not in squeeze(text) and "".join(probe.split()) not in "".join(text.split()):
        problems.append(f"probe missing: {probe[:40]!r}")
    if meta["win_path"] and meta["win_path"] not in text:
        problems.append(f"windows path changed: {meta['win_path']!r}")
    expected = (
        [(meta["attachment"]["name"], meta["attachment"]["size"])] if meta["attachment"] else []
    )
    got = [(a.filename, a.size) for a in message.attachments]
    if got != expected:
        problems.append(f"attachments {got} != {expected}")
    if message.sender is None or message.sender.addr != meta["from"]:
        problems.append(f"sender {message.sender} != {meta['from']}")
    if message.in_reply_to != ([meta["reply_to"]] if meta["reply_to"] else []):
        problems.append(f"in_reply_to {message.in_reply_to} != {meta['reply_to']}")
    if message.language != meta["lang"]:
        problems.append(f"language {message.language} != {meta['lang']}")
    if message.message_id != meta["message_id"]:
        problems.append(f"message_id {message.message_id} != {meta['message_id']}")
    if meta["cc"] and [a.addr for a in message.cc] != [meta["cc"]]:
        problems.append(f"cc {message.cc} != {meta['cc']}")
    if "\ufffd" in text or message.defects:
        problems.append(f"decoding trouble: {message.defects}")
    return problems


def test_support_corpus_is_parsed_faithfully(support_corpus: Path) -> None:
    with (support_corpus / "manifest.jsonl").open(encoding="utf-8") as f:
        metas = [json.loads(line) for line in f]
    assert len(metas) == 1000
    failures = {}
    for meta in metas:
        message = parse_message((support_corpus / meta["file"]).read_bytes())
        problems = fidelity_problems(meta, message)
        if problems:
            failures[meta["file"]] = problems
    assert failures == {}
    kinds = {
        "mislabeled_gb2312": sum(m["mislabeled_gb2312"] for m in metas),
        "win_path": sum(bool(m["win_path"]) for m in metas),
        "reply": sum(bool(m["reply_to"]) for m in metas),
        "attachment": sum(bool(m["attachment"]) for m in metas),
    }
    assert all(count > 0 for count in kinds.values()), kinds  # every trap was exercised
