"""HTML bodies to plain text: structure, entities, hidden parts and hostile markup."""

from __future__ import annotations

import time

import pytest

from daemon.html_text import html_to_text


def test_paragraphs_line_breaks_and_entities() -> None:
    html = "<html><body><p>Hello&nbsp;team,</p><p>line one<br>line two<br/>t&amp;c &lt;ok&gt;</p>"
    assert html_to_text(html) == "Hello\xa0team,\n\nline one\nline two\nt&c <ok>\n"


def test_head_title_style_script_and_comments_are_hidden() -> None:
    html = (
        "<html><head><title>Secret title</title><style>p {color: red}</style>"
        "<script>if (a < b) { alert('x') }</script></head>"
        "<!--[if gte mso 9]><xml><o:OfficeDocumentSettings/></xml><![endif]-->"
        "<body><div>Visible</div></body></html>"
    )
    assert html_to_text(html) == "Visible\n"


def test_lists_tables_and_preformatted_text() -> None:
    html = (
        "<ul><li>first</li><li>second</li></ul><table><tr><td>a</td><td>b</td></tr>"
        "<tr><td>c</td><td>d</td></tr></table><pre>  keep\n    spacing</pre>"
    )
    assert html_to_text(html) == "- first\n- second\n\na b\nc d\n\n  keep\n    spacing\n"


def test_whitespace_collapses_outside_pre() -> None:
    assert html_to_text("<p>  many \n\n  spaces\there </p>") == "many spaces here\n"


def test_backslashes_survive() -> None:
    html = r"<p>Open C:\Users\anna\AppData\Local\Temp\setup_err.log and \\srv\share\x.xlsx</p>"
    assert (
        html_to_text(html)
        == "Open C:\\Users\\anna\\AppData\\Local\\Temp\\setup_err.log and \\\\srv\\share\\x.xlsx\n"
    )


def test_attributes_with_angle_brackets_and_stray_less_than() -> None:
    html = '<p title="a > b">x < y and <a href="http://e.example/?q=1>2">link</a></p>'
    assert html_to_text(html) == "x < y and link\n"


def test_unclosed_title_does_not_hide_the_body() -> None:
    assert html_to_text("<title>oops<body>the text") == "the text\n"


def test_empty_and_text_only_input() -> None:
    assert html_to_text("") == ""
    assert html_to_text("<html></html>") == ""
    assert html_to_text("just text") == "just text\n"


@pytest.mark.parametrize(
    "junk", ["<a " * 50_000, "<!--" * 50_000, '<a b="' * 50_000, "<" * 100_000, "&#" * 50_000]
)
def test_hostile_markup_is_handled_in_linear_time(junk: str) -> None:
    started = time.perf_counter()
    html_to_text(junk)
    assert time.perf_counter() - started < 2.0
