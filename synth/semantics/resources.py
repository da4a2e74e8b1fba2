"""The chain's data files (prompt templates, few-shot examples, lexicons, the JSON schema).

They live in ``synth/semantics/data/`` so wording changes need no code change; their joint hash
is part of every cache key, so editing one never mixes old and new prompts in a cache.
"""
from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources
from typing import Any

PACKAGE = "synth.semantics"


def _data():
    return resources.files(PACKAGE) / "data"


@cache
def text(name: str) -> str:
    """A text data file, stripped of surrounding whitespace (read once; files are read-only)."""
    return (_data() / name).read_text(encoding="utf-8").strip()


@cache
def _json_text(name: str) -> str:
    return (_data() / name).read_text(encoding="utf-8")


def load_json(name: str) -> Any:
    """A JSON data file, parsed afresh (callers may change what they get)."""
    return json.loads(_json_text(name))


@cache
def fingerprint() -> str:
    """sha256 (16 hex) over the names and bytes of every data file."""
    digest = hashlib.sha256()
    for entry in sorted(_data().iterdir(), key=lambda p: p.name):
        if entry.is_file():
            digest.update(entry.name.encode() + b"\0" + entry.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
