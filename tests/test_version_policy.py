from __future__ import annotations

from app.runtime.version_policy import VersionPolicy, chosen_versions


def test_latest_keeps_the_newest_n() -> None:
    assert chosen_versions([3, 1, 10, 2], VersionPolicy.LATEST) == [10]
    assert chosen_versions([3, 1, 10, 2], VersionPolicy.LATEST, latest=2) == [3, 10]
    assert chosen_versions([], VersionPolicy.LATEST) == []


def test_all_and_specific() -> None:
    assert chosen_versions([2, 1], VersionPolicy.ALL) == [1, 2]
    assert chosen_versions([1, 2, 3], VersionPolicy.SPECIFIC, specific=[3, 1, 7]) == [1, 3]  # 7 is not on disk
    assert chosen_versions([1, 2], VersionPolicy.SPECIFIC) == []
