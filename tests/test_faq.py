"""FAQ entries: loading with located errors, bilingual TF-IDF matching and its filters."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import ConfigError
from daemon.faq import FaqIndex, faq_terms

SHIPPED = Path(__file__).resolve().parent.parent / "templates" / "faq"


def entry(
    directory: Path,
    name: str,
    question: str,
    answer: str = "See the help pages.",
    **fields: str,
) -> Path:
    """Write one FAQ entry file; extra fields go into the front matter as they are."""
    front = "".join(f"{key}: {value}\n" for key, value in {"language": "en", **fields}.items())
    path = directory / name
    path.write_text(f"---\nquestion: {question}\n{front}---\n{answer}\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shipped() -> FaqIndex:
    """The FAQ entries shipped in templates/faq."""
    return FaqIndex.load(SHIPPED)


def test_shipped_entries_load(shipped: FaqIndex) -> None:
    languages = [entry.language for entry in shipped.entries]
    assert (languages.count("en"), languages.count("zh")) == (6, 4)
    first = shipped.entries[0]
    assert first.id == "cancel-subscription"
    assert first.path == SHIPPED / "cancel-subscription.md"
    assert first.answer.startswith("Open **Account")
    assert first.as_context() == {
        "id": "cancel-subscription",
        "question": "How do I cancel my subscription?",
        "answer": first.answer,
        "url": "https://example.com/help/cancel-subscription",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Can't log in\nHi, I forgot my password and the reset email never arrived. "
            "Can you help? Thanks, Tom",
            "reset-password",
        ),
        (
            "Invoice needed\nHello, could you send me a copy of the invoice for order 48213? "
            "I need it for my accountant.",
            "invoice-copy",
        ),
        (
            "Refund still missing\nDear team, I returned the jacket two weeks ago (order 7731) "
            "and your warehouse confirmed it arrived, but I have not received my refund yet. "
            "When will the money be back on my card? Regards, Maria Lopez",
            "refund-policy",
        ),
        (
            "Where is my order?\nI ordered a week ago and the package still has not arrived. "
            "The tracking page shows nothing.",
            "shipping-time",
        ),
        (
            "Wrong address\nI just placed order 5521 but entered my old shipping address. "
            "Can I still change it?",
            "change-order",
        ),
        (
            "Cancel\nPlease cancel my subscription at the end of this month. "
            "I no longer need the plan.",
            "cancel-subscription",
        ),
    ],
)
def test_english_texts_find_their_entry(shipped: FaqIndex, text: str, expected: str) -> None:
    matches = shipped.match(text, language="en")
    assert matches
    assert matches[0].entry.id == expected
    assert matches[0].score >= 0.3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("退货\n你好，我买的衣服尺码不合适，想退货退款，请问怎么操作？", "zh-returns"),
        (
            "退款还没到账\n您好，我上周已经把商品寄回去了，仓库也签收了，但是退款到现在还没有到账，"
            "麻烦帮我查一下，订单号 20240311。",
            "zh-returns",
        ),
        (
            "报销需要发票\n我们公司报销需要电子发票，之前下单时忘记填写抬头了，现在还能补开吗？",
            "zh-fapiao",
        ),
        ("登录不了\n我忘记密码了，登不上账号，怎么重置？", "zh-change-password"),
        ("快递\n我的包裹已经五天了还没收到，物流也不更新，帮忙查一下。", "zh-tracking"),
    ],
)
def test_chinese_texts_find_their_entry(shipped: FaqIndex, text: str, expected: str) -> None:
    matches = shipped.match(text, language="zh-CN")
    assert matches
    assert matches[0].entry.id == expected
    assert matches[0].score >= 0.3


@pytest.mark.parametrize(
    ("text", "language"),
    [
        (
            "Partnership\nWe are a marketing agency and would like to discuss a partnership "
            "opportunity with your company next quarter.",
            "en",
        ),
        ("Great product\nJust wanted to say I love your app, the new design is beautiful!", "en"),
        ("Server down\nOur dashboard returns error 500 since 9am, all users are affected.", "en"),
        ("合作\n我们是一家广告公司，希望与贵公司洽谈合作事宜。", "zh"),
        ("系统故障\n你们的系统从早上开始一直报错，我们的业务完全停了，请尽快处理！", "zh"),
        ("", "en"),
        ("Hi, thanks!", "en"),
    ],
)
def test_unrelated_text_matches_nothing(shipped: FaqIndex, text: str, language: str) -> None:
    assert shipped.match(text, language=language) == []


def test_limit_and_min_score(shipped: FaqIndex) -> None:
    text = "I ordered the wrong size. Can I change my order, or return it for a refund?"
    everything = shipped.match(text, language="en", limit=10, min_score=0.0)
    assert len(everything) > 3
    scores = [match.score for match in everything]
    assert scores == sorted(scores, reverse=True)
    assert shipped.match(text, language="en") == [m for m in everything if m.score >= 0.2][:3]
    assert shipped.match(text, language="en", limit=1) == everything[:1]
    assert shipped.match(text, language="en", limit=0) == []
    assert all(m.score >= 0.25 for m in shipped.match(text, language="en", min_score=0.25))


def test_languages_never_mix(tmp_path: Path) -> None:
    entry(tmp_path, "vpn-en.md", "VPN does not connect", keywords="[vpn, connect]")
    entry(tmp_path, "vpn-zh.md", "VPN 连接不上", keywords="[vpn, 连接]", language="zh")
    index = FaqIndex.load(tmp_path)
    assert [m.entry.id for m in index.match("my VPN won't connect", language="en")] == ["vpn-en"]
    assert [m.entry.id for m in index.match("VPN 连接不上", language="zh")] == ["vpn-zh"]
    assert index.match("my VPN won't connect", language="fr") == []
    assert {m.entry.id for m in index.match("VPN", language=None)} == {"vpn-en", "vpn-zh"}


def test_english_question_never_matches_chinese_entries(shipped: FaqIndex) -> None:
    assert shipped.match("How do I reset my password?", language="zh") == []
    assert shipped.match("忘记密码了", language="en") == []


def test_department_entries_only_match_their_department(shipped: FaqIndex) -> None:
    text = "Could you send me a copy of my invoice as PDF?"

    def top(department: str | None) -> str | None:
        found = shipped.match(text, language="en", department=department)
        return found[0].entry.id if found else None

    assert top("billing") == "invoice-copy"
    assert top(None) == "invoice-copy"
    assert top("sales") != "invoice-copy"
    password = "I forgot my password"
    for department in ("billing", "sales", None):
        found = shipped.match(password, language="en", department=department)
        assert found[0].entry.id == "reset-password"


def test_ties_are_ordered_by_id(tmp_path: Path) -> None:
    for name in ("b.md", "a.md", "c.md"):
        entry(tmp_path, name, "How do I export my data?", keywords="[export, data]")
    index = FaqIndex.load(tmp_path)
    assert [m.entry.id for m in index.match("export data", language="en")] == ["a", "b", "c"]


def test_keywords_count_more_than_answers(tmp_path: Path) -> None:
    entry(tmp_path, "keyword.md", "Question one", keywords="[voucher]")
    entry(tmp_path, "answer.md", "Question two", answer="A voucher is mentioned here.")
    index = FaqIndex.load(tmp_path)
    matches = index.match("voucher", language="en", min_score=0.0)
    assert [m.entry.id for m in matches] == ["keyword", "answer"]


def test_terms_are_bilingual_stems_without_stopwords() -> None:
    assert faq_terms("Hi, where are my parcels? They were shipped 3 days ago") == [
        "parcel",
        "ship",
        "day",
        "ago",
    ]
    assert faq_terms("我要退货") == ["退", "货", "我要", "要退", "退货"]


def test_id_defaults_to_the_file_name(tmp_path: Path) -> None:
    entry(tmp_path, "gift-cards.md", "Do you sell gift cards?")
    entry(tmp_path, "other.md", "Where are you?", id="our-address")
    (tmp_path / "README.md").write_text("# not an entry\n", encoding="utf-8")
    (tmp_path / "_draft.md").write_text("not even front matter\n", encoding="utf-8")
    assert [e.id for e in FaqIndex.load(tmp_path).entries] == ["gift-cards", "our-address"]


def test_duplicate_id_names_both_files(tmp_path: Path) -> None:
    first = entry(tmp_path, "a.md", "First?", id="same")
    second = entry(tmp_path, "b.md", "Second?", id="same")
    with pytest.raises(ConfigError) as info:
        FaqIndex.load(tmp_path)
    assert str(info.value) == f"{second}:4:1: FAQ id 'same' is already used by {first}"


def test_id_taken_from_a_file_name_can_clash_too(tmp_path: Path) -> None:
    entry(tmp_path, "a.md", "First?", id="b")
    second = entry(tmp_path, "b.md", "Second?")
    with pytest.raises(ConfigError, match=rf"^{second}:1: FAQ id 'b' is already used"):
        FaqIndex.load(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("question: x\n", r"a\.md:1: an FAQ entry starts with a '---' line"),
        ("---\nquestion: x\nlanguage: en\nanswer\n", r"a\.md:1: the front matter is not closed"),
        ("---\nquestion: x\nlanguage: en\nkeywords: [a, b\n---\nanswer\n", r"a\.md:5:1: YAML"),
        ("---\nquestion: x\nlanguage: en\n---\n\n", r"a\.md:5: the answer .* is empty"),
        ("---\nlanguage: en\nquestion:\n---\nanswer\n", r"a\.md:3:1: question: Input should"),
        ("---\nquestion: x\nlanguage: en\ncolour: red\n---\nx\n", r"a\.md:4:1: colour: Extra"),
        ("---\nquestion: x\nlanguage: en\nurl: ftp://x\n---\nx\n", r"a\.md:4:1: url: String"),
        ("---\nquestion: x\n---\nanswer\n", r"a\.md:2:1: language: Field required"),
        ("---\nquestion: x\nlanguage: en\nid: a b\n---\nx\n", r"a\.md:4:1: id: String"),
        ("---\n- a list\n---\nanswer\n", r"a\.md:2:1: \(top level\): Input should be"),
    ],
)
def test_broken_entries_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "a.md").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        FaqIndex.load(tmp_path)


def test_unusable_file_name_needs_an_id(tmp_path: Path) -> None:
    entry(tmp_path, "how to pay.md", "How do I pay?")
    with pytest.raises(ConfigError, match=r"how to pay\.md:1: the file name is not a usable id"):
        FaqIndex.load(tmp_path)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such FAQ directory"):
        FaqIndex.load(tmp_path / "missing")


def test_changed_and_reload(tmp_path: Path) -> None:
    entry(tmp_path, "a.md", "How do I pay by invoice?", keywords="[invoice]")
    index = FaqIndex.load(tmp_path)
    assert not index.changed()
    entry(tmp_path, "b.md", "How do I pay by card?", keywords="[card]")
    assert index.changed()
    assert index.match("card", language="en") == []
    fresh = index.reload()
    assert not fresh.changed()
    assert [m.entry.id for m in fresh.match("card", language="en")] == ["b"]
    (tmp_path / "b.md").write_text("broken\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        fresh.reload()
    assert [m.entry.id for m in fresh.match("card", language="en")] == ["b"]
