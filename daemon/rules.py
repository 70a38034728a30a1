"""The admin-edited rules.yaml: validated once into a typed object."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .configfile import load_yaml, validate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConversationRules(_Strict):
    """How messages are grouped into conversations (tickets)."""

    ticket_prefix: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9-]{0,15}$")] = "MC"
    merge_copies: bool = True
    thread_by_tag: bool = True


class Rules(_Strict):
    """Everything rules.yaml decides."""

    version: Literal[1] = 1
    conversations: ConversationRules = ConversationRules()


def load_rules(path: Path) -> Rules:
    """Load and validate rules.yaml; a missing file means the defaults."""
    if not path.exists():
        return Rules()
    return validate(load_yaml(path), Rules)
