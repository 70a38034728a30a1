"""Settings: validated once, errors name file, line and key; secrets never in the YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import ConfigError
from daemon.settings import Secret, load_settings

GOOD = """\
database_url: sqlite:///data/mailcare.sqlite3
mailboxes:
  - name: support
    host: imap.example.com
    username: support@example.com
    password: {env: SUPPORT_PW}
    folders: [INBOX, Urgent]
    disposition: {action: move, folder: Stored}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailcare.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_file_loads_with_paths_anchored_at_the_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD))
    box = settings.mailboxes[0]
    assert box.effective_port == 993 and box.tls == "implicit" and box.verify
    assert box.folders == ["INBOX", "Urgent"]
    assert settings.database_url == f"sqlite:///{tmp_path / 'data/mailcare.sqlite3'}"
    assert settings.paths.rules == tmp_path / "rules.yaml"


def test_error_names_file_line_column_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("    folders: [INBOX, Urgent]\n", "    port: 99999\n"))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    text = str(caught.value)
    assert f"{path}:7:5: mailboxes.0.port" in text
    assert "less than or equal to 65535" in text


def test_unknown_key_and_password_in_yaml_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("password: {env: SUPPORT_PW}", "password: hunter2"))
    with pytest.raises(ConfigError, match=r"mailcare.yaml:6:\d+: mailboxes.0.password"):
        load_settings(path)
    with pytest.raises(ConfigError, match=r":1:1: colour: Extra inputs are not permitted"):
        load_settings(write(tmp_path, "colour: blue\n"))


def test_yaml_syntax_error_has_position(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mailcare.yaml:2:1: YAML syntax error: .*'\\t'"):
        load_settings(write(tmp_path, "log_level: INFO\n\trunner: {}\n"))


def test_plaintext_imap_only_on_loopback(tmp_path: Path) -> None:
    bad = GOOD.replace("host: imap.example.com", "host: imap.example.com\n    tls: none")
    with pytest.raises(ConfigError, match="only for loopback"):
        load_settings(write(tmp_path, bad))
    ok = GOOD.replace("host: imap.example.com", "host: 127.0.0.1\n    tls: none")
    assert load_settings(write(tmp_path, ok)).mailboxes[0].effective_port == 143


def test_move_needs_a_folder_and_names_are_unique(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"`folder` is required"):
        load_settings(write(tmp_path, GOOD.replace(", folder: Stored", "")))
    doubled = GOOD + GOOD.split("mailboxes:\n", 1)[1]
    with pytest.raises(ConfigError, match="mailbox names must be unique: support"):
        load_settings(write(tmp_path, doubled))


def test_secrets_from_environment_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORT_PW", "from-env")
    assert Secret(env="SUPPORT_PW").reveal() == "from-env"
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    assert Secret(file=secret_file).reveal() == "from-file"
    monkeypatch.delenv("SUPPORT_PW")
    with pytest.raises(ConfigError, match="SUPPORT_PW is not set"):
        Secret(env="SUPPORT_PW").reveal()
    with pytest.raises(ConfigError, match="cannot read secret file"):
        Secret(file=tmp_path / "missing").reveal()


def test_database_url_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILCARE_DATABASE_URL", "postgresql://postgres@127.0.0.1/x")
    assert load_settings(write(tmp_path, GOOD)).database_url == "postgresql://postgres@127.0.0.1/x"


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="settings file not found"):
        load_settings(tmp_path / "nope.yaml")
