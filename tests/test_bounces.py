"""Bounce parsing: reasons from RFC 3463 codes and diagnostic text, DSN fields, plain text."""

from __future__ import annotations

import pytest

from daemon.bounce_reasons import HARD_REASONS, classify
from daemon.bounces import Bounce, FailedRecipient, parse_plain_bounce, text_blocks
from daemon.message import parse_message


def recipient(address: str, reason: str) -> FailedRecipient:
    """A failed recipient whose hard flag follows the reason."""
    return FailedRecipient(address, "5.0.0", "failed", None, reason, reason in HARD_REASONS)


def plain_bounce(body: str, subject: str = "Mail delivery failed") -> Bounce:
    """The bounce read from a plain-text report sent by MAILER-DAEMON."""
    raw = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\n"
        f"To: support@shop.example\nSubject: {subject}\n\n{body}"
    )
    bounce, _ = parse_plain_bounce(parse_message(raw.encode()), parse_message(raw.encode()).text)
    return bounce


@pytest.mark.parametrize(
    ("status", "text", "reason"),
    [
        (
            "5.1.1",
            "550 5.1.1 <a@b.example>: Recipient address rejected: User unknown",
            "userunknown",
        ),
        ("5.1.1", None, "userunknown"),
        ("5.1.0", None, "userunknown"),
        ("5.1.2", None, "hostunknown"),
        ("5.1.6", None, "hasmoved"),
        ("5.1.10", None, "notaccept"),
        ("5.2.2", None, "mailboxfull"),
        ("5.3.4", None, "toobig"),
        ("5.4.4", None, "hostunknown"),
        ("4.4.7", None, "expired"),
        ("5.7.1", None, "blocked"),
        ("5.7.26", None, "authfailure"),
        ("5.7.99", None, "policy"),
        ("5.0.0", None, "undefined"),
        (None, None, "undefined"),
        ("5.1.1", "550 5.1.1 Mailbox full, quota exceeded", "mailboxfull"),
        ("5.1.1", "550 max message size exceeded", "toobig"),
        ("5.7.1", "553 sorry, that user mail-box not found (#5.7.1)", "userunknown"),
        ("5.7.1", "550 5.7.1 Message rejected as spam", "spam"),
        (
            "5.7.1",
            "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org",
            "blocked",
        ),
        ("5.0.0", "550 Host not found", "hostunknown"),
        ("5.0.0", "554 Domain not found", "hostunknown"),
        ("5.0.0", "550 Requested action not taken: mailbox unavailable", "userunknown"),
        ("5.0.0", "550 No such user here", "userunknown"),
        ("5.0.0", "The email account that you tried to reach does not exist", "userunknown"),
        ("5.2.1", "550 5.2.1 The email account that you tried to reach is disabled", "suspended"),
        ("5.0.0", "550 Account suspended", "suspended"),
        ("5.0.0", "550 Relaying denied", "norelaying"),
        ("5.0.0", "550 SPF check failed", "authfailure"),
        ("5.0.0", "550 Sender address rejected: Domain not found", "rejected"),
        ("5.0.0", "Too many hops", "networkerror"),
        ("5.4.7", "retry timeout exceeded", "expired"),
        ("5.0.0", "message infected with a virus", "virus"),
        ("5.0.0", "Message contains a virus, scanned by antivirus system", "virus"),
    ],
)
def test_classify(status: str | None, text: str | None, reason: str) -> None:
    assert classify(status, text) == reason


def test_hard_reasons_are_sisimai_hard() -> None:
    assert frozenset({"userunknown", "hostunknown", "hasmoved", "notaccept"}) == HARD_REASONS


def test_addresses_in_the_text_are_not_read_as_words() -> None:
    assert classify("5.0.0", "550 <blocked@example.org>... User unknown") == "userunknown"


def test_severity_and_hard_addresses() -> None:
    hard, soft = recipient("a@x.example", "userunknown"), recipient("b@x.example", "mailboxfull")
    assert Bounce((hard,), None, None, "rfc3464").severity == "hard"
    assert Bounce((soft,), None, None, "rfc3464").severity == "soft"
    mixed = Bounce((hard, soft), None, None, "rfc3464")
    assert mixed.severity == "mixed"
    assert mixed.hard_addresses == ("a@x.example",)
    assert Bounce((), None, None, "plain").severity == "soft"


def test_text_blocks_read_quoted_and_folded_fields() -> None:
    text = (
        "> Reporting-MTA: dns; mx.example.org\n>\n> Final-Recipient: rfc822; a@x.example\n"
        "> Action: failed\n> Status: 5.1.1\n> Diagnostic-Code: smtp; 550 5.1.1\n"
        ">     user unknown\n> X-Vendor-Field: ignored\n"
    )
    blocks = text_blocks(text)
    assert blocks[0] == [("reporting-mta", "dns; mx.example.org")]
    assert ("diagnostic-code", "smtp; 550 5.1.1 user unknown") in blocks[1]
    assert ("status", "5.1.1") in blocks[1]


def test_sendmail_reason_line_wins_over_transcript() -> None:
    bounce = plain_bounce(
        "   ----- The following addresses had permanent fatal errors -----\n"
        "lee@x.example\n    (reason: 553 Sender Policy Framework (SPF) fail)\n\n"
        "   ----- Transcript of session follows -----\n"
        "550 5.1.1 lee@x.example... User unknown\n",
        subject="Returned mail: see transcript for details",
    )
    (failed,) = bounce.recipients
    assert (failed.address, failed.reason, failed.hard) == ("lee@x.example", "authfailure", False)
    assert bounce.format == "plain:sendmail"


def test_gmail_layout_reads_the_technical_details() -> None:
    bounce = plain_bounce(
        "Delivery to the following recipient failed permanently:\n\n     kai@x.example\n\n"
        "Technical details of permanent failure:\nThe error that the other server returned was: "
        "550 5.1.1 The email account that you tried to reach does not exist.\n",
        subject="Delivery Status Notification (Failure)",
    )
    (failed,) = bounce.recipients
    assert (failed.address, failed.status, failed.reason) == (
        "kai@x.example",
        "5.1.1",
        "userunknown",
    )


def test_each_recipient_keeps_its_own_reason() -> None:
    bounce = plain_bounce(
        "The following address(es) failed:\n\n"
        '"mia@x.example":\nSMTP error from remote server after RCPT command:\n'
        "5.1.1 <mia@x.example>... User Unknown\n"
        '"ole@x.example":\nSMTP error from remote server after RCPT command:\n'
        "5.2.2 <ole@x.example>... Mailbox Full\n"
    )
    assert [(r.address, r.reason) for r in bounce.recipients] == [
        ("mia@x.example", "userunknown"),
        ("ole@x.example", "mailboxfull"),
    ]
    assert bounce.severity == "mixed"


def test_user_unknown_after_data_is_a_filter() -> None:
    bounce = plain_bounce(
        "<pia@x.example>: host mx.x.example[192.0.2.1] said: 550 : User unknown (in\n"
        "    reply to end of DATA command)\n"
    )
    (failed,) = bounce.recipients
    assert (failed.reason, failed.hard) == ("filtered", False)


def test_refusal_at_mail_from_is_about_the_sender() -> None:
    bounce = plain_bounce(
        "  rob@x.example\n"
        "    SMTP error from remote mail server after MAIL FROM:<shop@y.example>:\n"
        "    550 5.1.7 No such domain y.example\n"
    )
    (failed,) = bounce.recipients
    assert (failed.reason, failed.hard) == ("rejected", False)


def test_transient_dns_failure_is_not_a_dead_domain() -> None:
    bounce = plain_bounce("<sam@x.example>: 451 4.4.3 Host not found, try again\n")
    (failed,) = bounce.recipients
    assert failed.reason == "networkerror"
    assert not failed.hard


def test_original_message_id_from_quoted_headers() -> None:
    bounce = plain_bounce(
        "<tom@x.example>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
        "--- Below this line is a copy of the message.\n\n"
        "From: support@shop.example\nMessage-ID: <orig-1@shop.example>\nSubject: hi\n\nbody\n",
        subject="failure notice",
    )
    assert bounce.original_message_id == "<orig-1@shop.example>"
    assert bounce.format == "plain:qmail"
    assert bounce.recipients[0].hard


def test_diagnostic_is_one_capped_line() -> None:
    bounce = plain_bounce("<uma@x.example>:\n550 5.1.1 " + "no such user " * 100 + "\n")
    diagnostic = bounce.recipients[0].diagnostic
    assert diagnostic is not None
    assert "\n" not in diagnostic
    assert len(diagnostic) <= 500


def test_report_without_a_readable_address_still_classifies() -> None:
    bounce = plain_bounce("Your message could not be delivered: 552 mailbox is full\n")
    (failed,) = bounce.recipients
    assert (failed.address, failed.reason) == (None, "mailboxfull")
    assert bounce.hard_addresses == ()
