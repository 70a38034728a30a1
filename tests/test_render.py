"""Mail templates: variant selection, safe subjects, errors that name the file, and `check`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.errors import TemplateError
from daemon.render import SUBJECT_MAX_CHARS, TemplateStore, variant_chain
from daemon.template_check import BODY_ADVISED_WORDS, Finding, check, sample_context

SHIPPED = Path(__file__).resolve().parent.parent / "templates"
SIMPLE = "Subject: {{{{ ticket }}}} {{{{ subject }}}}\n\nHello from {variant}, {{{{ ticket }}}}.\n"


def write(root: Path, relative: str, text: str) -> Path:
    """Write one template file below `root`."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def variant_store(root: Path, *variants: str, html: tuple[str, ...] = ()) -> TemplateStore:
    """Return a store whose replies/ack template has the given variants."""
    for variant in variants:
        write(root, f"replies/ack/{variant}.txt", SIMPLE.format(variant=variant))
    for variant in html:
        write(root, f"replies/ack/{variant}.html", f"<p>{variant} {{{{ ticket }}}}</p>\n")
    return TemplateStore(root)


def messages(findings: list[Finding], path: str) -> list[str]:
    """Return the messages of the findings for one path."""
    return [finding.message for finding in findings if finding.path == path]


def test_variant_chain_order() -> None:
    assert variant_chain("complaints", "emergency", "en") == (
        "complaints.emergency.en",
        "complaints.en",
        "emergency.en",
        "en",
        "complaints.emergency",
        "complaints",
        "emergency",
        "default",
    )
    assert variant_chain("sales", None, "zh") == ("sales.zh", "zh", "sales", "default")
    assert variant_chain(None, "normal", None) == ("normal", "default")
    assert variant_chain() == ("default",)


def test_variant_chain_ignores_values_that_are_no_names() -> None:
    assert variant_chain(None, None, "zh_Hans") == ("zh", "default")
    assert variant_chain("../etc", "Emergency", "EN-us") == (
        "emergency.en",
        "en",
        "emergency",
        "default",
    )


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        ({"department": "complaints", "urgency": "emergency", "language": "en"}, "complaints.en"),
        ({"department": "billing", "urgency": "emergency", "language": "en"}, "emergency.en"),
        ({"department": "billing", "urgency": "normal", "language": "en"}, "en"),
        ({"department": "complaints", "urgency": "normal", "language": "zh"}, "complaints"),
        ({"department": "billing", "urgency": "normal", "language": "zh"}, "default"),
        ({"department": None, "urgency": None, "language": None}, "default"),
    ],
)
def test_first_existing_variant_wins(
    tmp_path: Path, selectors: dict[str, str | None], expected: str
) -> None:
    store = variant_store(tmp_path, "complaints.en", "emergency.en", "en", "complaints", "default")
    rendered = store.render("replies", "ack", sample_context("en"), **selectors)
    assert rendered.variant == f"replies/ack/{expected}.txt"
    assert rendered.text == f"Hello from {expected}, [MC#1042].\n"


def test_html_only_from_the_same_variant(tmp_path: Path) -> None:
    store = variant_store(tmp_path, "en", "default", html=("default",))
    english = store.render("replies", "ack", sample_context(), language="en")
    fallback = store.render("replies", "ack", sample_context(), language="fr")
    assert english.html is None
    assert fallback.html == "<p>default [MC#1042]</p>\n"


def test_missing_template_names_the_directory_and_tried_files(tmp_path: Path) -> None:
    store = variant_store(tmp_path, "en")
    with pytest.raises(
        TemplateError, match=r"replies/ack: no template among zh\.txt, default\.txt"
    ):
        store.render("replies", "ack", sample_context(), language="zh")
    with pytest.raises(TemplateError, match="replies/nothing"):
        store.render("replies", "nothing", sample_context())
    with pytest.raises(TemplateError, match="no template family 'letters'"):
        store.render("letters", "ack", sample_context())
    with pytest.raises(TemplateError, match="no template name"):
        store.render("replies", "../replies", sample_context())


def test_subject_is_one_safe_line(tmp_path: Path) -> None:
    store = variant_store(tmp_path, "default")
    context = sample_context()
    context["subject"] = "Hello\r\nBcc: victim@example.com\x00\x1b[31m\tand\u2028more"
    rendered = store.render("replies", "ack", context)
    assert rendered.subject == "[MC#1042] Hello Bcc: victim@example.com [31m and more"
    context["subject"] = "word " * 100
    long = store.render("replies", "ack", context).subject
    assert len(long) == SUBJECT_MAX_CHARS
    assert long.endswith("…")


def test_text_is_normalised_and_only_html_is_escaped(tmp_path: Path) -> None:
    write(
        tmp_path,
        "replies/ack/default.txt",
        "Subject: {{ ticket }} {{ company.name }}\r\n\r\nDear {{ customer.name }},   \r\n"
        "\r\n\r\n\r\nR&D <team>\t\r\n{% if faq %}\r\nFAQ\r\n{% endif %}\r\nBye\r\n\r\n",
    )
    write(tmp_path, "replies/ack/default.html", "<p>{{ customer.name }}</p>\r\n")
    context = sample_context()
    context["customer"] = {"name": "Tom <b>& Co", "address": "t@example.com", "tier": "gold"}
    context["company"] = {"name": "R&D <Ltd>", "signature": "-"}
    rendered = TemplateStore(tmp_path).render("replies", "ack", context)
    assert rendered.subject == "[MC#1042] R&D <Ltd>"
    assert rendered.text == "Dear Tom <b>& Co,\n\nR&D <team>\nFAQ\nBye\n"
    assert rendered.html == "<p>Tom &lt;b&gt;&amp; Co</p>\n"


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "replies/ack/default.txt", "Subject: x\n\nfine\n{% if faq %}\nno end\n")
    store = TemplateStore(tmp_path)
    with pytest.raises(TemplateError, match=r"replies/ack/default\.txt:\d+: syntax error") as info:
        store.render("replies", "ack", sample_context())
    assert str(tmp_path) in str(info.value)
    write(tmp_path, "replies/ack/default.txt", "Subject: {{ ticket }\n\nbody\n")
    store.reload()
    with pytest.raises(TemplateError, match=r"default\.txt:1: syntax error"):
        store.render("replies", "ack", sample_context())


def test_syntax_error_in_html_names_the_html_file(tmp_path: Path) -> None:
    variant_store(tmp_path, "default")
    write(tmp_path, "replies/ack/default.html", "<p>\n{{ ticket }\n</p>\n")
    with pytest.raises(TemplateError, match=r"replies/ack/default\.html:2: syntax error"):
        TemplateStore(tmp_path).render("replies", "ack", sample_context())


def test_undefined_variable_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "replies/ack/default.txt", "Subject: x\n\nline three\n{{ custmer.name }}\n")
    with pytest.raises(TemplateError, match=r"default\.txt:4: undefined: 'custmer' is undefined"):
        TemplateStore(tmp_path).render("replies", "ack", sample_context())


def test_missing_key_of_a_mapping_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "replies/ack/default.txt", "Subject: {{ customer.nickname }}\n\nx\n")
    with pytest.raises(TemplateError, match=r"default\.txt:1: undefined: .*nickname"):
        TemplateStore(tmp_path).render("replies", "ack", sample_context())


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("Hello\n\nbody\n", r"default\.txt:1: the first line must be 'Subject: \.\.\.'"),
        ("Subject: x\nbody\n", r"default\.txt:2: an empty line must follow the subject"),
    ],
)
def test_layout_errors(tmp_path: Path, source: str, message: str) -> None:
    write(tmp_path, "replies/ack/default.txt", source)
    with pytest.raises(TemplateError, match=message):
        TemplateStore(tmp_path).render("replies", "ack", sample_context())


@pytest.mark.parametrize(
    "expression",
    ["{{ faq.append(1) }}", "{{ ''.__class__.__mro__ }}", "{{ customer.update(name='x') }}"],
)
def test_sandbox_refuses_unsafe_expressions(tmp_path: Path, expression: str) -> None:
    write(tmp_path, "replies/ack/default.txt", f"Subject: x\n\n{expression}\n")
    with pytest.raises(TemplateError, match=r"default\.txt:3: "):
        TemplateStore(tmp_path).render("replies", "ack", sample_context())


def test_partials_can_be_included(tmp_path: Path) -> None:
    write(tmp_path, "_partials/signature.txt", "-- \n{{ company.signature }}\n")
    write(
        tmp_path,
        "replies/ack/default.txt",
        'Subject: {{ ticket }}\n\nThanks.\n{% include "_partials/signature.txt" %}',
    )
    rendered = TemplateStore(tmp_path).render("replies", "ack", sample_context())
    assert rendered.text == "Thanks.\n--\nThe Example support team\n"


def test_exists_means_a_default_variant(tmp_path: Path) -> None:
    store = variant_store(tmp_path, "default", "en")
    write(tmp_path, "replies/english-only/en.txt", SIMPLE.format(variant="en"))
    assert store.exists("replies", "ack")
    assert not store.exists("replies", "english-only")
    assert not store.exists("replies", "missing")
    assert not store.exists("letters", "ack")


def test_compiled_templates_stay_until_reload(tmp_path: Path) -> None:
    path = write(tmp_path, "replies/ack/default.txt", "Subject: one\n\nfirst\n")
    store = TemplateStore(tmp_path)
    assert store.render("replies", "ack", {}).text == "first\n"
    assert not store.changed()
    path.write_text("Subject: two\n\nsecond, longer\n", encoding="utf-8")
    assert store.changed()
    assert store.render("replies", "ack", {}).text == "first\n"
    store.reload()
    assert not store.changed()
    assert store.render("replies", "ack", {}).subject == "two"


def test_changed_sees_new_removed_and_touched_files(tmp_path: Path) -> None:
    path = write(tmp_path, "replies/ack/default.txt", "Subject: one\n\nfirst\n")
    store = TemplateStore(tmp_path)
    write(tmp_path, "replies/ack/en.txt", "Subject: en\n\nEnglish\n")
    assert store.changed()
    store.reload()
    assert store.render("replies", "ack", {}, language="en").text == "English\n"
    (tmp_path / "replies/ack/en.txt").unlink()
    assert store.changed()
    store.reload()
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert store.changed()


def test_shipped_acknowledgements_render_in_both_languages() -> None:
    store = TemplateStore(SHIPPED)
    english = store.render("replies", "acknowledge", sample_context("en"), language="en")
    assert english.variant == "replies/acknowledge/en.txt"
    assert english.subject == "[MC#1042] Received: My invoice shows the wrong amount"
    first_line = english.text.split("\n\n")[1]
    assert "[MC#1042]" in first_line
    assert "by Monday 10:00 (Europe/Berlin)" in first_line
    assert "https://example.com/faq/invoice-copy" in english.text
    assert english.html is not None
    assert '<html lang="en">' in english.html
    assert 'href="https://example.com/faq/invoice-copy"' in english.html

    chinese = store.render("replies", "acknowledge", sample_context("zh"), language="zh")
    assert chinese.variant == "replies/acknowledge/zh.txt"
    assert chinese.subject == "[MC#1042] 已收到您的来信：发票金额不对"
    assert chinese.text.startswith("王芳，您好：\n\n感谢您的来信！")
    assert "我们会在周一 10:00 之前（Asia/Shanghai）回复您。" in chinese.text


def test_shipped_variants_and_language_fallback() -> None:
    store = TemplateStore(SHIPPED)
    context = sample_context("en")
    select = store.select
    assert select("replies", "acknowledge", department="complaints", language="en") == (
        "complaints.en"
    )
    assert select("replies", "acknowledge", urgency="emergency", language="en") == "emergency.en"
    assert select("replies", "acknowledge", department="complaints", language="zh") == "zh"
    german = store.render("replies", "acknowledge", context, language="de")
    assert german.variant == "replies/acknowledge/default.txt"
    assert german.html is None
    assert german.text.startswith("Dear Anna Schmidt,")


def test_shipped_templates_cope_with_no_name_no_faq_no_promise() -> None:
    store = TemplateStore(SHIPPED)
    for language in ("en", "zh"):
        context = sample_context(language)
        context["customer"] = {"name": None, "address": "x@example.com", "tier": "ordinary"}
        context["faq"] = []
        context["expected_answer"] = None
        context["subject"] = ""
        for department, urgency in (("complaints", "normal"), ("general", "emergency")):
            rendered = store.render(
                "replies",
                "acknowledge",
                context,
                department=department,
                urgency=urgency,
                language=language,
            )
            assert "None" not in rendered.text
            assert rendered.text.startswith(("Hello,", "您好："))
            assert "[MC#1042]" in rendered.subject


def test_shipped_templates_pass_check() -> None:
    assert check(TemplateStore(SHIPPED)) == []
    assert check(TemplateStore(SHIPPED), sample_context("zh")) == []


def test_check_reports_errors_per_variant(tmp_path: Path) -> None:
    write(tmp_path, "replies/ack/default.txt", "Subject: {{ ticket }}\n\n{{ nothing }}\n")
    write(tmp_path, "replies/ack/en.txt", "Subject: {{ ticket }}\n\n{% for x in faq %}\n")
    # fails only for a customer without a name: check renders that case too
    write(tmp_path, "replies/ack/zh.txt", "Subject: {{ ticket }}\n\n{{ customer.name + '' }}\n")
    findings = check(TemplateStore(tmp_path))
    errors = {f.path: f.message for f in findings if f.level == "error"}
    assert set(errors) == {"replies/ack/default.txt", "replies/ack/en.txt", "replies/ack/zh.txt"}
    assert "'nothing' is undefined" in errors["replies/ack/default.txt"]
    assert "syntax error" in errors["replies/ack/en.txt"]
    assert "zh.txt:3:" in errors["replies/ack/zh.txt"]


def test_check_gives_writing_advice(tmp_path: Path) -> None:
    long_body = "word " * (BODY_ADVISED_WORDS + 10)
    write(
        tmp_path, "replies/ack/long.txt", f"Subject: {{{{ ticket }}}} {'x' * 80}\n\n{long_body}\n"
    )
    write(tmp_path, "replies/ack/notag.txt", "Subject: Thanks\n\nWe got your message.\n")
    write(tmp_path, "replies/ack/empty.txt", "Subject: \n\n{{ ticket }}\n")
    write(tmp_path, "replies/ack/copy.txt", "Subject: {{ ticket }} Received\n\nReceived.\n")
    write(tmp_path, "replies/ack/en.txt", SIMPLE.format(variant="en"))
    write(tmp_path, "replies/ack/en.html", "<p><img src='x.png'></p>\n")
    write(tmp_path, "replies/ack/orphan.html", "<p>{{ ticket }}</p>\n")
    write(tmp_path, "replies/ack/notes.md", "no template\n")
    write(tmp_path, "replies/stray.txt", "Subject: x\n\ny\n")
    findings = check(TemplateStore(tmp_path))
    assert all(finding.level == "warning" for finding in findings)

    def about(name: str) -> str:
        return " | ".join(messages(findings, f"replies/ack/{name}"))

    assert "subject has 90 characters" in about("long.txt")
    assert "keep it short" in about("long.txt")
    assert "lacks the ticket tag" in about("notag.txt")
    assert "never uses {{ ticket }}" in about("notag.txt")
    assert "the subject is empty" in about("empty.txt")
    assert "mostly repeats the subject" in about("copy.txt")
    assert "HTML alternative shows no text" in about("en.txt")
    assert "never used: HTML needs orphan.txt" in about("orphan.html")
    assert "ignored" in about("notes.md")
    assert messages(findings, "replies/ack") == [
        "no default.txt: mail matching no variant gets none"
    ]
    assert "ignored" in messages(findings, "replies/stray.txt")[0]


def test_check_counts_chinese_characters_as_half_words(tmp_path: Path) -> None:
    write(tmp_path, "replies/ack/default.txt", "Subject: {{ ticket }} 收到\n\n" + "好" * 300 + "\n")
    assert check(TemplateStore(tmp_path)) == []
    write(tmp_path, "replies/ack/default.txt", "Subject: {{ ticket }} 收到\n\n" + "好" * 500 + "\n")
    (finding,) = check(TemplateStore(tmp_path))
    assert "keep it short" in finding.message


def test_check_accepts_a_fixed_context(tmp_path: Path) -> None:
    write(
        tmp_path,
        "notifications/sla/default.txt",
        "Subject: {{ who }} late\n\nPlease answer the customer today.\n",
    )
    assert check(TemplateStore(tmp_path), {"who": "Ticket 7"}) == []
    findings = check(TemplateStore(tmp_path))
    assert findings[0].level == "error"
    assert "'who' is undefined" in findings[0].message


def test_sample_contexts() -> None:
    english, chinese = sample_context("en"), sample_context("zh")
    assert english["language"] == "en"
    assert chinese["language"] == "zh"
    assert set(english) == set(chinese)
    assert sample_context(None)["language"] == "en"
