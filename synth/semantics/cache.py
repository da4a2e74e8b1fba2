"""The prompt cache: one JSON line per sample, keyed by sample id, in a file named by a hash of
the back-end config, so another back-end or model writes another file.

The file is append-only: each batch of records is written as whole lines, flushed and fsynced.
An interrupted run leaves at most one torn last line; reopening drops it with a warning
(truncating the file to the last complete line) and the run goes on with the samples not yet in
the file, so no record is redone or duplicated. Every complete line is checked when the file is
loaded (`RECORD_FIELDS`): a line that is not such a record is an error naming file, line and field.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from handrecon.config import config_to_dict
from handrecon.data.readers.common import DataFormatError, field_value
from handrecon.errors import UserError

from . import resources
from .chain import CHAIN_VERSION, SemanticsConfig

# settings that change how fast records come, not what they say
_RUNTIME = {"transformers": ("device", "batch_size"), "openai": ("timeout_s", "retries", "backoff_s", "concurrency", "api_key_env")}
# the fields of a record as the chain writes it, with their types: these must be present (the
# generator and the cache job read them); the others are checked where present
RECORD_FIELDS = {"sample_id": str, "source": str, "caption": str, "components": dict, "prompt": str, "hand_words": list,
                 "hand_columns": list, "paths": dict}  # fmt: skip
REQUIRED = ("sample_id", "caption", "prompt")


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
            record = self._record(line, number)
            self.records[record["sample_id"]] = record
        if end < len(raw):
            torn = len(raw) - end
            warnings.warn(f"{self.path}: dropped an incomplete last line ({torn} bytes) left by an interrupted write", stacklevel=3)
            with open(self.path, "r+b") as fh:
                fh.truncate(end)

    def _record(self, line: bytes, number: int) -> dict:
        """A complete line as a record, checked against RECORD_FIELDS."""
        where, hint = f"line {number}", "remove that line and rerun tools/semantics.py to make the record again"
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise UserError(f"{self.path}: {where}: not JSON ({exc}); {hint}") from None
        try:
            for key, kind in RECORD_FIELDS.items():
                if key in REQUIRED or (isinstance(record, dict) and key in record):
                    field_value(record, key, str(self.path), where, kind)
        except DataFormatError as exc:
            raise UserError(f"{exc}; {hint}") from None
        return record

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
