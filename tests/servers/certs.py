"""A throwaway certificate authority and a `localhost` server certificate for TLS tests."""

from __future__ import annotations

import logging
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SERVER_IDENTITIES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class TestCertificates:
    """PEM files of a test CA and of a server certificate it issued for localhost/127.0.0.1."""

    __test__ = False  # not a test class, despite the name

    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: str | Path | None = None) -> TestCertificates:
        """Issue a fresh CA and server certificate and write them into directory."""
        import trustme

        target = Path(directory) if directory is not None else Path(tempfile.mkdtemp())
        target.mkdir(parents=True, exist_ok=True)
        authority = trustme.CA(organization_name="mailcare tests")
        leaf = authority.issue_cert(*SERVER_IDENTITIES)
        certs = cls(
            ca_file=target / "ca.pem",
            cert_file=target / "server-cert.pem",
            key_file=target / "server-key.pem",
        )
        authority.cert_pem.write_to_path(str(certs.ca_file))
        with certs.cert_file.open("wb") as chain:
            for pem in leaf.cert_chain_pems:
                chain.write(pem.bytes())
        leaf.private_key_pem.write_to_path(str(certs.key_file))
        certs.key_file.chmod(0o600)
        logger.debug("test certificates written to %s", target)
        return certs

    def client_context(self) -> ssl.SSLContext:
        """Return a verifying client context that trusts only the test CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        """Return a server context presenting the localhost certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context
