"""Which version of a model answers an unversioned request: the deployed one, or a weighted canary.

A ``Deployment`` is the parsed ``deployment.json`` record. Its transitions (``deployed``, ``with_canary``,
``promoted``, ``rolled_back``) return the next record or raise ``Conflict``; the registry applies them
under its lock, after verifying the version they route to. ``history`` holds the previously deployed
versions, newest last, so that ``rolled_back`` can walk back more than once. No Flask here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from shared.artifacts import validate_version
from shared.errors import Conflict

#: Previously deployed versions kept for rollback (the oldest are dropped first).
MAX_HISTORY = 20


@dataclass(frozen=True)
class Deployment:
    """A model's serving versions: ``version`` takes the traffic a canary does not."""

    version: int
    canary_version: int | None = None
    canary_weight: float = 0.0  # percent of unversioned requests, 0 to 100
    history: tuple[int, ...] = ()  # previously deployed versions, newest last

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Deployment:
        """Parse a ``deployment.json`` record (already known to name a version); ``history`` is optional."""
        canary = record.get("canary") or {}
        weight = float(canary.get("weight", 0.0)) if canary else 0.0
        history = record.get("history", [])
        if not isinstance(history, list):
            raise TypeError("history must be a list of versions")
        return cls(
            version=validate_version(record["version"]),
            canary_version=validate_version(canary["version"]) if canary else None,
            canary_weight=min(100.0, max(0.0, weight)),
            history=tuple(validate_version(v) for v in history[-MAX_HISTORY:]),
        )

    def to_record(self) -> dict[str, Any]:
        """The ``deployment.json`` record; ``canary`` and ``history`` only when there is one."""
        record: dict[str, Any] = {"version": self.version}
        if self.canary_version is not None:
            record["canary"] = {"version": self.canary_version, "weight": self.canary_weight}
        if self.history:
            record["history"] = list(self.history)
        return record

    def versions(self) -> list[int]:
        """Every version this deployment can route to."""
        return [self.version] + ([self.canary_version] if self.canary_version is not None else [])

    def choose(self, draw: float | None = None) -> int:
        """The version for one request; ``draw`` in [0, 100) replaces the random draw (for tests)."""
        if self.canary_version is None or self.canary_weight <= 0.0:
            return self.version
        point = random.uniform(0.0, 100.0) if draw is None else draw  # noqa: S311 - traffic split, not security
        return self.canary_version if point < self.canary_weight else self.version

    # --- transitions -------------------------------------------------------------------------------

    def deployed(self, version: int) -> Deployment:
        """``version`` serves everything; the canary goes, and the replaced version joins the history."""
        history = self.history if version == self.version else (*self.history, self.version)
        return Deployment(version, history=history[-MAX_HISTORY:])

    def with_canary(self, version: int, weight: float) -> Deployment:
        """``version`` takes ``weight`` percent (in (0, 100]) of unversioned traffic; weight 0 removes the canary."""
        if not isinstance(weight, int | float) or isinstance(weight, bool) or not 0.0 <= weight <= 100.0:
            # NaN fails the range test too.
            raise Conflict(f"canary weight must be a percentage in (0, 100], or 0 to remove the canary; got {weight}")
        if weight == 0:
            return Deployment(self.version, history=self.history)
        if version == self.version:
            raise Conflict(f"version {version} is already deployed; a canary must be another version")
        return Deployment(self.version, version, float(weight), self.history)

    def promoted(self) -> Deployment:
        """The canary becomes the deployed version, taking all the traffic."""
        if self.canary_version is None:
            raise Conflict(f"there is no canary to promote (version {self.version} serves alone)")
        return self.deployed(self.canary_version)

    def rolled_back(self) -> Deployment:
        """The previously deployed version serves again (and leaves the history); any canary goes."""
        if not self.history:
            raise Conflict(f"there is no earlier deployment to roll back to (version {self.version} has no history)")
        return Deployment(self.history[-1], history=self.history[:-1])
