"""Value types shared by the sections of rules.yaml: names, durations, addresses, keywords."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
ADDRESS = r"^[^@\s<>]+@[^@\s<>]+$"


def seconds(value: Any) -> Any:
    """Accept durations as numbers of seconds or text such as "90s", "30m", "24h", "2d"."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration (e.g. 30m, 24h, 2d)")
        return float(match.group(1)) * _UNIT[match.group(2)]
    return value


def minutes(value: Any) -> Any:
    """Accept spans as numbers of minutes or text such as "90m", "4h", "2d" (not seconds)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None or match.group(2) == "s":
            raise ValueError(f"{value!r} is not a span of minutes (e.g. 90, 90m, 4h, 2d)")
        return float(match.group(1)) * _UNIT[match.group(2) or "m"] / 60
    return value


Duration = Annotated[float, BeforeValidator(seconds), Field(ge=0)]
Minutes = Annotated[float, BeforeValidator(minutes), Field(gt=0)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
Keyword = Annotated[str, Field(pattern=r"^\$?[A-Za-z0-9_.-]{1,64}$")]
Address = Annotated[str, Field(pattern=ADDRESS)]


class Strict(BaseModel):
    """A rules.yaml section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
