"""The fast MIME tree builder must agree with the stdlib compat32 parser wherever it answers."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon import mimetree
from daemon.mimetree import MAX_DEPTH, Part, header_start, parse_tree, prepare

STDLIB = email.parser.BytesParser(_class=Part, policy=email.policy.compat32)


def fast_tree(raw: bytes) -> email.message.Message | None:
    """The fast path's tree, or None where it hands over to the stdlib parser."""
    text = prepare(raw).decode("ascii", "surrogateescape")
    if "\r" in text and text.count("\r") != text.count("\r\n"):
        return None
    return mimetree._node(text, 0, len(text), 0, nested=False)


def difference(fast: email.message.Message, slow: email.message.Message, path: str = "") -> str:
    """Describe the first difference between two trees; empty when they are the same."""
    checks = [
        ("headers", list(fast.raw_items()), list(slow.raw_items())),
        ("multipart", fast.is_multipart(), slow.is_multipart()),
        ("preamble", fast.preamble, slow.preamble),
        ("epilogue", fast.epilogue, slow.epilogue),
        ("defects", [type(d) for d in fast.defects], [type(d) for d in slow.defects]),
        ("default type", fast.get_default_type(), slow.get_default_type()),
        ("unixfrom", fast.get_unixfrom(), slow.get_unixfrom()),
    ]
    if not fast.is_multipart():
        checks.append(("payload", fast.get_payload(), slow.get_payload()))
        checks.append(("decoded", fast.get_payload(decode=True), slow.get_payload(decode=True)))
    for what, mine, theirs in checks:
        if mine != theirs:
            return f"{path or 'root'} {what}: {mine!r} != {theirs!r}"
    if fast.is_multipart():
        mine_parts, their_parts = fast.get_payload(), slow.get_payload()
        assert isinstance(mine_parts, list) and isinstance(their_parts, list)
        if len(mine_parts) != len(their_parts):
            return f"{path or 'root'} parts: {len(mine_parts)} != {len(their_parts)}"
        for number, (mine, theirs) in enumerate(zip(mine_parts, their_parts, strict=True), 1):
            assert isinstance(mine, email.message.Message)
            assert isinstance(theirs, email.message.Message)
            found = difference(mine, theirs, f"{path}.{number}" if path else str(number))
            if found:
                return found
    return ""


def assert_same_as_stdlib(raw: bytes) -> bool:
    """Assert the fast tree equals the stdlib tree; tell whether the fast path answered."""
    fast = fast_tree(raw)
    if fast is None:
        return False
    assert difference(fast, STDLIB.parsebytes(prepare(raw))) == ""
    return True


HAND_WRITTEN = [
    b"Subject: x\n\nbody\n",
    b"Subject: x\r\nX-Folded: a\r\n b\r\n\tc\r\n\r\nbody\r\nmore\r\n",
    b"Subject: x\n\n",
    b"Subject:\n  leading\nX-Empty:\n\nbody",
    b'Content-Type: multipart/mixed; boundary="b"\n\npre\n\n--b\n\none\n'
    b"--b\nContent-Type: text/html\n\n<p>two</p>\n\n--b--\nepilogue\n",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b--",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b \t\n\nx\n--b-- \n\n",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\n--bx\n--b x\n---b\n--b--\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
    b"Content-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\nplain\r\n"
    b"--c\r\n\r\nhtml\r\n--c--\r\ninner epilogue\r\n--b--\r\n",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\n"
    b"Content-Type: multipart/mixed; boundary=c\n\n--c\n\nx\n--c--\n--b--\n",
    b"Content-Type: text/plain; charset=gb2312\n\n\xc4\xfa\xba\xc3\n",
    b"Subject: headers only\n",
    b"Content-Type: message/rfc822\n\nSubject: inner\n\nx\n",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\n"
    b"From a@b Mon Jan  5 09:00:00 2026\nSubject: inner\n\nx\n\n--b--\n",
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\n"
    b"Content-Type: multipart/alternative; boundary=c\n\n--c\n\ny\n--c--\nepi\n\n--b--\n",
    b"Content-Type: multipart/report; boundary=b\r\n\r\n--b\r\n"
    b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
    b"Final-Recipient: rfc822; a@b\r\nStatus: 5.1.1\r\n\r\n--b--\r\n",
    b"Content-Type: multipart/report; boundary=b\n\n--b\nContent-Type: message/delivery-status\n\n"
    b"Reporting-MTA: dns; x\n\n\n\nAction: failed\n--b\nContent-Type: text/rfc822-headers\n\n"
    b"Subject: x\n--b--\n",
    b"Content-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: x\n",
]


@pytest.mark.parametrize("raw", HAND_WRITTEN)
def test_hand_written_messages_match_the_stdlib(raw: bytes) -> None:
    assert assert_same_as_stdlib(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"no header here\n\nbody\n",
        b" continuation first\nSubject: x\n\nbody\n",
        b"Subject: x\nbody without separator\n",
        b"Content-Type: multipart/mixed\n\n--b\n\nx\n--b--\n",
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nno close\n",
        b"Content-Type: multipart/mixed; boundary=b\n\nno start\n--b--\n",
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n--b\n\nx\n--b--\n",
        b"Content-Type: message/rfc822\n\nnot a header\n\nx\n",
        b"Content-Type: multipart/digest; boundary=b\n\n--b\n\nx\n--b--\n",
        b"Content-Type: multipart/mixed; boundary=b\nContent-Transfer-Encoding: base64\n\n"
        b"--b\n\nx\n--b--\n",
    ],
)
def test_unusual_messages_go_to_the_stdlib_parser(raw: bytes) -> None:
    assert fast_tree(raw) is None
    assert parse_tree(raw, []) is not None


LINE_ENDS = st.sampled_from(["\n", "\r\n"])
BOUNDARY = st.text("abcXYZ0189'()+_,-./:=?", min_size=1, max_size=12).filter(
    lambda b: b.strip() == b and '"' not in b
)
BODY_LINE = st.one_of(
    st.text("ab -=\t", max_size=12),
    st.sampled_from(["", "--", "--b", "--b--", "--b x", "---b", "--bb", "From me", " x", "=?x?="]),
)


@st.composite
def messages(draw: st.DrawFn, depth: int = 0) -> list[str]:
    """A random but well-formed MIME entity as lines (without line ends)."""
    lines = [f"X-Depth: {depth}"]
    if draw(st.booleans()):
        lines += ["X-Folded: first", draw(st.sampled_from([" second", "\tthird", "  "]))]
    if depth < 3 and draw(st.booleans()):
        boundary = draw(BOUNDARY)
        lines += [f'Content-Type: multipart/mixed; boundary="{boundary}"', ""]
        lines += draw(st.lists(BODY_LINE, max_size=2))
        for _ in range(draw(st.integers(1, 3))):
            lines.append(f"--{boundary}" + draw(st.sampled_from(["", " ", "\t "])))
            lines += draw(messages(depth + 1))
        lines.append(f"--{boundary}--")
        lines += draw(st.lists(BODY_LINE, max_size=2))
        return lines
    if depth < 3 and draw(st.integers(0, 4)) == 0:
        lines += ["Content-Type: message/rfc822", ""]
        if draw(st.booleans()):
            lines.append("From someone Mon Jan  5 09:00:00 2026")
        return lines + draw(messages(depth + 1))
    if draw(st.integers(0, 4)) == 0:
        lines += ["Content-Type: message/delivery-status", ""]
        for _ in range(draw(st.integers(0, 3))):
            lines += ["Action: failed", "Status: 5.1.1"][: draw(st.integers(0, 2))]
            lines += [""] * draw(st.integers(0, 2))
        return lines
    lines.append("")
    return lines + draw(st.lists(BODY_LINE, max_size=4))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), LINE_ENDS, st.booleans())
def test_random_mime_structures_match_the_stdlib(
    lines: list[str], line_end: str, final_line_end: bool
) -> None:
    raw = (line_end.join(lines) + (line_end if final_line_end else "")).encode()
    assert_same_as_stdlib(raw)


def test_shared_corpus_matches_the_stdlib(shared_dir: Path) -> None:
    files = sorted((shared_dir / "data" / "mail").rglob("*.eml"))
    answered = sum(assert_same_as_stdlib(path.read_bytes()) for path in files)
    assert answered > len(files) // 2


def test_support_corpus_matches_the_stdlib(tmp_path: Path, shared_dir: Path) -> None:
    script = shared_dir / "corpus" / "make_corpus.py"
    if not script.is_file():
        pytest.skip(f"corpus generator not found: {script}")
    subprocess.run(
        [sys.executable, str(script), "300", "7", str(tmp_path)], check=True, capture_output=True
    )
    files = sorted(tmp_path.glob("*.eml"))
    assert len(files) == 300
    assert all(assert_same_as_stdlib(path.read_bytes()) for path in files)


@pytest.mark.parametrize(
    ("raw", "start"),
    [
        (b"Subject: x\n\n", 0),
        (b"\xef\xbb\xbfSubject: x\n", 3),
        (b"\r\n\nSubject: x\n", 3),
        (b"From a@b Mon Jan  5 09:00:00 2026\nSubject: x\n", 34),
        (b"From a@b Mon Jan  5 09:00:00 2026\r\nSubject: x\r\n", 35),
        (b"From a@b Mon\rSubject: x\r", 13),
        (b"From: a@b\n", 0),
        (b"", 0),
    ],
)
def test_header_start(raw: bytes, start: int) -> None:
    assert header_start(raw) == start


def test_prepare_turns_bare_cr_into_lf_but_leaves_crlf() -> None:
    assert prepare(b"Subject: x\r\rbody\r") == b"Subject: x\n\nbody\n"
    assert prepare(b"Subject: x\r\n\r\nbody\r\n") == b"Subject: x\r\n\r\nbody\r\n"


def deep_multipart(levels: int) -> bytes:
    head = [b"Subject: deep\nContent-Type: multipart/mixed; boundary=b0\n\n"]
    head += [
        b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i - 1, i)
        for i in range(1, levels)
    ]
    tail = [b"--b%d--\n" % i for i in range(levels - 1, -1, -1)]
    return b"".join([*head, b"--b%d\n\nhello\n" % (levels - 1), *tail])


def test_nesting_stops_at_max_depth() -> None:
    defects: list[str] = []
    tree = parse_tree(deep_multipart(MAX_DEPTH + 10), defects)
    node: email.message.Message = tree
    depth = 0
    while node.is_multipart():
        children = node.get_payload()
        assert isinstance(children, list)
        node = children[0]
        depth += 1
    assert depth == MAX_DEPTH + 1
    assert isinstance(node, Part) and node.too_deep
    assert node.get_content_type() == "application/octet-stream"
    assert defects == []


def test_deep_message_rfc822_chain_is_bounded() -> None:
    raw = b"Subject: outer\n" + b"Content-Type: message/rfc822\n\n" * 5000 + b"Subject: in\n\nx\n"
    tree = parse_tree(raw, [])
    depth = 0
    node: email.message.Message = tree
    while node.is_multipart():
        children = node.get_payload()
        assert isinstance(children, list)
        node = children[0]
        depth += 1
    assert depth <= MAX_DEPTH + 1
