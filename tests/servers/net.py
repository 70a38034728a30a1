"""Loopback networking helpers: free ports and readiness polling with a deadline."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

LOOPBACK = "127.0.0.1"
POLL_INTERVAL = 0.005

T = TypeVar("T")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Tell whether something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def read_greeting(port: int, host: str = LOOPBACK, timeout: float = 2.0) -> bytes:
    """Connect, read the server's first line and close; raises OSError when nothing answers."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def poll_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    alive: Callable[[], bool] | None = None,
) -> T:
    """Call probe until it returns a value other than None; TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if alive is not None and not alive():
            raise RuntimeError(f"gave up waiting for {what}: the process is gone")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not ready within {timeout:.1f} s")
        time.sleep(POLL_INTERVAL)
