"""Is a string a sentence or an image? The client's auto-detection rule (no network I/O).

A string is an **image** when, and only when, one of these holds (checked in order):

1. it starts with ``data:`` and has a comma (a data URI);
2. it starts with ``http://`` or ``https://``, has a host and contains no whitespace
   (query strings are fine: ``https://host/img?id=3``);
3. it starts with ``file://`` (a local file URL);
4. it has no line break and, after ``~`` expansion, names an existing regular file, provided
   it looks like a path: it contains a path separator, starts with ``~`` or ``.``, or has a
   file extension (so a bare word such as ``LICENSE`` or ``test`` stays a sentence even if a
   file of that name sits in the working directory);
5. it has no whitespace and ends in a known image extension (``.jpg``, ``.png``, ``.webp``,
   ...; case-insensitive), whether or not the file exists: a missing ``cat.jpg`` is reported
   as an unreadable image naming it, never silently encoded as the sentence "cat.jpg".

Everything else is a **sentence**: ``"see file.png"``, ``"hello.world"``, ``"I love it."``,
``"http://example.com is down"``.
"""

from __future__ import annotations

import os
import re
from typing import Literal

StringKind = Literal["text", "image"]

_EXTENSIONS = "jpg jpeg jpe jfif png apng gif bmp dib webp tif tiff ico ppm pgm pbm pnm tga avif"
_EXTENSIONS += " heic heif jp2 j2k pcx icns eps dds psd qoi"
IMAGE_EXTENSIONS = frozenset("." + ext for ext in _EXTENSIONS.split())
_MAX_PATH_CHARS = 4096
_WHITESPACE = re.compile(r"\s")  # for str patterns: exactly what str.isspace() accepts


def classify_string(text: str) -> StringKind:
    """``"image"`` or ``"text"`` for one input string, by the rule in this module's docstring."""
    if not text:
        return "text"
    head = text[:8].lower()
    if head.startswith("data:"):
        return "image" if "," in text else "text"
    if head.startswith(("http://", "https://")):
        rest = text.split("://", 1)[1]
        has_host = bool(rest) and rest[0] not in "/?#"
        return "image" if has_host and not _has_space(text) else "text"
    if head.startswith("file://"):
        return "image"
    if len(text) > _MAX_PATH_CHARS or "\n" in text or "\r" in text or "\x00" in text:
        return "text"
    if _looks_like_path(text) and os.path.isfile(os.path.expanduser(text)):
        return "image"
    if not _has_space(text) and extension_of(text) in IMAGE_EXTENSIONS:
        return "image"
    return "text"


def extension_of(text: str) -> str:
    """Lower-case extension of the last path component (``""`` when none)."""
    name = text.rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem.strip(".") or not ext or not ext.isalnum():
        return ""
    return "." + ext.lower()


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith(("~", ".")) or extension_of(text) != ""


def _has_space(text: str) -> bool:
    return _WHITESPACE.search(text) is not None
