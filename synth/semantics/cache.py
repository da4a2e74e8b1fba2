"""The prompt cache: one JSON line per sample, keyed by sample id, in a file named by a hash of
the back-end config, so another back-end or model writes another file.

The file is append-only: each batch of records is written as whole lines, flushed and fsynced.
An interrupted run leaves at most one torn last line; reopening drops it (truncating the file to
the last complete line) and the run goes on with the samples not yet in the file, so no record
is redone or duplicated.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from handrecon.config import config_to_dict
from handrecon.errors import UserError

from . import resources
from .chain import CHAIN_VERSION, SemanticsConfig

# settings that change how fast records come, not what they say
_RUNTIME = {"transformers": ("device", "batch_size"), "openai": ("timeout_s", "retries", "backoff_s", "concurrency", "api_key_env")}


def cache_key(cfg: SemanticsConfig) -> str:
    """16 hex digits over what decides a record: stage back-ends, the models and settings they
    use, the tokenizer and tagger, and the bytes of every prompt/lexicon data file."""
    data = config_to_dict(cfg)
    used = {cfg.captioner, cfg.extractor, cfg.composer}
    for section, runtime in _RUNTIME.items():
        data[section] = {k: v for k, v in data[section].items() if k not in runtime} if section in used else None
    data["data_files"] = resources.fingerprint()
    data["chain_version"] = CHAIN_VERSION
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class PromptCache:
    """Records of one cache file; `append` adds a batch durably."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        end = raw.rfind(b"\n") + 1  # everything after the last newline is a torn write
        for number, line in enumerate(raw[:end].splitlines(), 1):
            try:
                record = json.loads(line)
                self.records[record["sample_id"]] = record
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{self.path}, line {number}: not a prompt record; delete the file to start over") from None
        if end < len(raw):
            with open(self.path, "r+b") as fh:
                fh.truncate(end)

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = [r for r in records if r["sample_id"] not in self.records]
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
            fh.flush()
            os.fsync(fh.fileno())
        self.records.update((r["sample_id"], r) for r in new)


def load_prompts(path: str | Path) -> dict[str, dict]:
    """sample id -> record of a cache file (what the generator and its training read)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no prompt cache at {path}; make one with tools/semantics.py")
    return PromptCache(path).records
