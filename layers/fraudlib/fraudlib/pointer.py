"""The pointer to the served (champion) model: a small JSON object switched last, atomically.

A reader that follows the pointer always finds a complete bundle, because the training job
writes every file of a bundle before it writes the pointer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from fraudlib.layout import bundle_prefix, reference_profile_key


class PointerFormatError(ValueError):
    """The pointer object exists but is not a valid pointer."""


@dataclass(frozen=True)
class ChampionPointer:
    """Which model is served, and where its bundle and reference profile are."""

    model_version: str
    bundle_prefix: str
    reference_profile_key: str
    promoted_at: str

    @classmethod
    def for_version(cls, model_version: str, promoted_at: str) -> ChampionPointer:
        return cls(
            model_version=model_version,
            bundle_prefix=bundle_prefix(model_version),
            reference_profile_key=reference_profile_key(model_version),
            promoted_at=promoted_at,
        )

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> ChampionPointer:
        try:
            raw: dict[str, Any] = json.loads(data)
            return cls(**{name: str(raw[name]) for name in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as exc:
            raise PointerFormatError(f"champion pointer is not valid: {exc}") from exc
