"""The settings reference of docs/operator.md, made from the settings model so that it cannot drift.

Every key, its default and its environment variable come from `Settings`;
what a key means comes from the comments above it in the annotated example
configuration (`config/myhug.example.toml`, which a test keeps complete).
`python -m myhug.config.reference --write docs/operator.md` rewrites the
block between the `settings:begin` and `settings:end` markers; a test
fails when the page and the model differ.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from myhug.config.settings import Settings

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"
_KEY = re.compile(r"^#?\s*([a-z_]+)\s*=")


def _comments(example: str) -> dict[tuple[str, str], str]:
    """(section, key) -> the comment lines just above the key (or its commented-out example) in the TOML."""
    found: dict[tuple[str, str], str] = {}
    section, pending = "", list[str]()
    for raw in example.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section, pending = line.strip("[]"), []
            continue
        key = _KEY.match(line)
        if key and (section, key.group(1)) not in found and not line.startswith("#   "):
            found[(section, key.group(1))] = " ".join(pending)
            pending = []
            continue
        if line.startswith("#") and not line.startswith("#   "):
            pending.append(line.lstrip("# ").strip())
        elif not line:
            pending = []
    return found


def _default(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "(secret, empty)" if not value.get_secret_value() else "(secret)"
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str | int | float | list):
        return f"`{json.dumps(value, ensure_ascii=False)}`"
    return f"`{value}`"


def settings_reference(example: str) -> str:
    """The Markdown tables of every setting, one per section, with the example's comments as meanings."""
    comments = _comments(example)
    out = [BEGIN, ""]
    for section, field in Settings.model_fields.items():
        default = field.default
        if not isinstance(default, BaseModel):
            continue
        out += [f"### `[{section}]`", "", "| key | default | environment | meaning |", "|---|---|---|---|"]
        for key, sub in type(default).model_fields.items():
            meaning = comments.get((section, key), "") or "(see the key above)"
            meaning = meaning.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
            env = f"`MYHUG_{section.upper()}__{key.upper()}`"
            out.append(f"| `{key}` | {_default(sub.default)} | {env} | {meaning} |")
        out.append("")
    out.append(END)
    return "\n".join(out)


def replace_block(page: str, block: str) -> str:
    """`page` with its settings block replaced by `block`."""
    start, end = page.index(BEGIN), page.index(END) + len(END)
    return page[:start] + block + page[end:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default="config/myhug.example.toml")
    parser.add_argument("--write", metavar="PAGE", help="rewrite the block in this page (else print it)")
    args = parser.parse_args()
    block = settings_reference(Path(args.example).read_text())
    if args.write:
        page = Path(args.write)
        page.write_text(replace_block(page.read_text(), block))
    else:
        sys.stdout.write(block + "\n")


if __name__ == "__main__":
    main()
