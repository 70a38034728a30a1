"""Skip tests whose server is missing, except in CI, where such a skip is a failure."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

SERVER_MISSING = "server missing:"
REQUIRE_ENV = "MAILCARE_REQUIRE_SERVERS"


def servers_required() -> bool:
    """True when MAILCARE_REQUIRE_SERVERS asks for every real server to be present."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def require_server(name: str, available: bool, why: str = "") -> None:
    """Skip (or, with MAILCARE_REQUIRE_SERVERS=1, fail) the current test when name is missing."""
    if available:
        return
    message = f"{SERVER_MISSING} {name}" + (f": {why}" if why else "")
    if servers_required():
        pytest.fail(f"{message} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(message)


def skip_reason(report: pytest.TestReport) -> str | None:
    """The reason of a skipped report, or None when it was not skipped."""
    if not report.skipped:
        return None
    longrepr: Any = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason.removeprefix("Skipped: ")
    return str(longrepr)


def fail_server_skip(report: pytest.TestReport) -> None:
    """Turn a `server missing:` skip into a failure when servers are required."""
    reason = skip_reason(report)
    if reason is None or not reason.startswith(SERVER_MISSING) or not servers_required():
        return
    report.outcome = "failed"
    report.longrepr = f"{reason} ({REQUIRE_ENV}=1 turns this skip into a failure)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Apply fail_server_skip to every report; catches skips made without require_server."""
    report: pytest.TestReport = yield
    fail_server_skip(report)
    return report
