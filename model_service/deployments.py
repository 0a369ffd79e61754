"""Which version of a model answers an unversioned request: the deployed one, or a weighted canary."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from shared.artifacts import validate_version


@dataclass(frozen=True)
class Deployment:
    """A model's serving versions: ``version`` takes the traffic a canary does not."""

    version: int
    canary_version: int | None = None
    canary_weight: float = 0.0  # percent of unversioned requests, 0 to 100

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Deployment:
        """Parse a ``deployment.json`` record (already known to name a version)."""
        canary = record.get("canary") or {}
        weight = float(canary.get("weight", 0.0)) if canary else 0.0
        return cls(
            version=validate_version(record["version"]),
            canary_version=validate_version(canary["version"]) if canary else None,
            canary_weight=min(100.0, max(0.0, weight)),
        )

    def versions(self) -> list[int]:
        """Every version this deployment can route to."""
        return [self.version] + ([self.canary_version] if self.canary_version is not None else [])

    def choose(self, draw: float | None = None) -> int:
        """The version for one request; ``draw`` in [0, 100) replaces the random draw (for tests)."""
        if self.canary_version is None or self.canary_weight <= 0.0:
            return self.version
        point = random.uniform(0.0, 100.0) if draw is None else draw  # noqa: S311 - traffic split, not security
        return self.canary_version if point < self.canary_weight else self.version
