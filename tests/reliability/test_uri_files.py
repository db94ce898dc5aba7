"""Local files named by a ``uri``: never read by default; with ``allow_file``, only under
``file_roots`` (symlinks followed), each refusal naming the rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clipserve.errors import InputRefusedError, InvalidInputError
from clipserve.server.uri_fetch import fetch_uri
from clipserve.server.uri_policy import UriPolicy

PAYLOAD = os.urandom(3000)


@pytest.mark.parametrize("uri", ["/etc/passwd", "file:///etc/passwd", "file://localhost/etc/hosts"])
async def test_default_policy_reads_no_local_file(uri: str) -> None:
    with pytest.raises(InputRefusedError, match="does not read local files") as info:
        await fetch_uri(uri, UriPolicy())
    assert uri in str(info.value)
    assert "rule uri_policy.allow_file is off" in str(info.value)
    assert "file_roots" in str(info.value)


async def test_files_only_under_the_allowed_roots(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    (root / "cat.png").write_bytes(PAYLOAD)
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (root / "escape.png").symlink_to(tmp_path / "secret.txt")
    policy = UriPolicy(allow_file=True, file_roots=(str(root),))

    assert await fetch_uri(str(root / "cat.png"), policy) == PAYLOAD
    assert await fetch_uri((root / "cat.png").as_uri(), policy) == PAYLOAD
    for refused, what in (
        (str(tmp_path / "secret.txt"), "outside the allowed directories"),
        (f"{root}/../secret.txt", "outside the allowed directories"),
        (str(root / "escape.png"), "outside the allowed directories"),  # a symlink out
        ("images/cat.png", "relative paths"),
        ("file://otherhost/etc/passwd", "other hosts"),
    ):
        with pytest.raises(InputRefusedError, match=what) as info:
            await fetch_uri(refused, policy)
        assert f"rule uri_policy.file_roots = [{root}]" in str(info.value)
    with pytest.raises(InvalidInputError, match="cannot read file"):
        await fetch_uri(str(root / "missing.png"), policy)
    with pytest.raises(InvalidInputError, match="larger than 100 bytes"):
        small = UriPolicy(allow_file=True, file_roots=(str(root),), max_bytes=100)
        await fetch_uri(str(root / "cat.png"), small)


async def test_allow_file_without_roots_reads_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PAYLOAD)
    with pytest.raises(InputRefusedError):
        await fetch_uri(str(tmp_path / "a.png"), UriPolicy(allow_file=True))
