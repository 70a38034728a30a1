"""The SMTP sink the tests use is the daemon's own (daemon.sink), with scripted failures."""

from daemon.sink import OK, ReceivedMessage, SmtpSink

__all__ = ["OK", "ReceivedMessage", "SmtpSink"]
