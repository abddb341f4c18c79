"""Readable, file-name-safe ids for pieces and tracks named in any script.

An id keeps the letters, digits and combining marks of every script (``ヴァイオリン`` stays
``ヴァイオリン``, ``Violoncelle d'amour`` becomes ``Violoncelle_d_amour``); other characters
(spaces, punctuation, path separators, control characters) become ``_``. Names are NFC-normalised
first, so the same name typed on macOS (NFD file names) and elsewhere gives the same id. Names whose
ids would collide (equal ignoring case, because case-insensitive file systems would merge their
files) each get a suffix ``-`` + 6 hex digits of the SHA-1 of the name.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections import defaultdict
from collections.abc import Iterable

_PUNCT_KEPT = "._-"


def _kept(ch: str) -> bool:
    """Letters (L*), digits/numbers (N*) and combining marks (M*) of any script, and ``._-``."""
    return ch in _PUNCT_KEPT or unicodedata.category(ch)[0] in "LNM"


def safe_id(text: str) -> str:
    """Id of one name: NFC, runs of other characters -> ``_``, stripped of leading/trailing
    ``_.-`` (so it starts with a letter or digit); ``"x"`` for a name with no letter or digit."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFC", str(text)):
        if _kept(ch):
            out.append(ch)
        elif not out or out[-1] != "_":
            out.append("_")
    s = "".join(out).strip(_PUNCT_KEPT)
    return s if s and is_safe_id(s) else "x"


def is_safe_id(text: str) -> bool:
    """True if ``text`` could be an id: non-empty, NFC, only letters, digits, marks and ``._-``,
    starting with a letter or digit."""
    return (
        bool(text)
        and unicodedata.normalize("NFC", text) == text
        and unicodedata.category(text[0])[0] in "LN"
        and all(_kept(c) for c in text)
    )


def name_hash(text: str) -> str:
    """6 hex digits of the SHA-1 of ``text`` (UTF-8)."""
    return hashlib.sha1(str(text).encode("utf-8")).hexdigest()[:6]


def unique_ids(names: Iterable[str]) -> dict[str, str]:
    """Unique id of each distinct name: :func:`safe_id`, with ``-<hash>`` for names that collide.

    Deterministic for a given set of names. Raises ``ValueError`` listing the names in the (very
    unlikely) case that two suffixed ids still collide.
    """
    names = list(dict.fromkeys(names))
    groups: dict[str, list[str]] = defaultdict(list)
    for n in names:
        groups[safe_id(n).casefold()].append(n)
    out: dict[str, str] = {}
    for members in groups.values():
        for n in members:
            out[n] = safe_id(n) if len(members) == 1 else f"{safe_id(n)}-{name_hash(n)}"
    seen: dict[str, str] = {}
    for n, i in out.items():
        if i.casefold() in seen:
            raise ValueError(f"names {seen[i.casefold()]!r} and {n!r} give the same id {i!r}")
        seen[i.casefold()] = n
    return out
