"""Which versions of a model to serve, as TensorFlow Serving's model_version_policy says it:
`latest` (the newest N), `all`, or `specific` versions."""

from __future__ import annotations

from enum import StrEnum


class VersionPolicy(StrEnum):
    LATEST = "latest"
    ALL = "all"
    SPECIFIC = "specific"


def chosen_versions(
    found: list[int], policy: VersionPolicy, *, latest: int = 1, specific: list[int] | None = None
) -> list[int]:
    """The versions on disk (`found`) that the policy wants served, oldest first."""
    found = sorted(found)
    if policy is VersionPolicy.ALL:
        return found
    if policy is VersionPolicy.SPECIFIC:
        wanted = set(specific or [])
        return [version for version in found if version in wanted]
    return found[-latest:] if latest > 0 else []
