"""Name folding for the directory search: accent-, case- and umlaut-spelling-insensitive prefixes.

"Müller", "Mueller", "muller" and "MULLER" all fold to "muller": accents are
dropped and the German spellings ae/oe/ue are folded too, on both the stored
names and the query, so a prefix of either spelling finds the physician.
"""

from __future__ import annotations

import re
import unicodedata


def fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    plain = plain.replace("ß", "ss").replace("ae", "a").replace("oe", "o").replace("ue", "u")
    return re.sub(r"[^a-z0-9]+", " ", plain).strip()


def search_key(given_name: str, family_name: str) -> str:
    """What the directory matches a name query against: each word of the name can start a match."""
    return f" {fold(family_name)} {fold(given_name)} ".replace("  ", " ")
