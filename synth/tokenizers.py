"""Offline CLIP tokenizers: a tiny one built in code and Stable Diffusion's full vocabulary.

Nothing is downloaded. Both are `transformers.CLIPTokenizer` objects (byte-level BPE with the
``</w>`` end-of-word suffix, start token first, 77 columns), so code written against them works
unchanged with real tokenizer files loaded by :func:`load_clip_tokenizer` from a folder.

* ``tiny``: every byte as a single token (so any text tokenizes, no unknowns), plus whole-word
  merges for a short list of common prompt words. Words outside that list split into several
  tokens, which is what hand-token tests need. Under 1000 ids: fits tiny CLIP text encoders.
* ``sd15``: the 49,408-token CLIP vocabulary built from the BPE merge file that ships inside the
  ``open-clip-torch`` wheel. Its ids are Stable Diffusion 1.x's ("a photo of a hand" ->
  49406 320 1125 539 320 2463 49407).
"""
from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable, Iterable
from pathlib import Path

from handrecon.errors import UserError

MAX_LENGTH = 77
START, END = "<|startoftext|>", "<|endoftext|>"

# Whole words the tiny tokenizer knows as one token. Hand words that are left out on purpose
# ("clapping", "grasping", "fingertips", ...) split into several tokens.
TINY_WORDS = (
    "a", "an", "the", "of", "and", "with", "in", "on", "at", "to", "his", "her", "their", "is", "are", "two", "one",
    "photo", "person", "man", "woman", "people", "hand", "hands", "finger", "fingers", "palm", "thumb", "fist",
    "holding", "hold", "pointing", "pinch", "open", "left", "right", "both", "standing", "sitting", "room", "table",
    "background", "front", "close", "up", "together", "camera", "studio", "dark", "light",
)  # fmt: skip

# Number of merge rules in open-clip's file that CLIP uses: 49152 - 256 - 2 (after the header).
_SD_MERGES = 49152 - 256 - 2


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins of bytes, in the order CLIP numbers them (ids 0..255)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges (lowest rank first) to one word's symbols."""
    while len(pieces) > 1:
        pairs = [(ranks.get(p, len(ranks)), i) for i, p in enumerate(zip(pieces, pieces[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2 :]
    return pieces


def _clip_tokenizer(vocab: list[str], merges: Iterable[tuple[str, str]], max_length: int):
    from transformers import CLIPTokenizer

    ids = {token: i for i, token in enumerate(vocab)}
    if len(ids) != len(vocab):
        raise ValueError("duplicate tokens in the vocabulary")
    # transformers 5 ignores vocab_file/merges_file keyword paths; vocab= and merges= are honoured
    return CLIPTokenizer(vocab=ids, merges=list(merges), model_max_length=max_length)


def tiny_clip_tokenizer(max_length: int = MAX_LENGTH, words: Iterable[str] = TINY_WORDS):
    """A small CLIP tokenizer built in code: bytes, bytes + ``</w>``, whole `words`, special tokens.

    Each word becomes one token: the merges already made reduce it to some pieces, and new merges,
    ranked after all earlier ones, join those pieces left to right. Lower-ranked merges win in
    BPE, so words added earlier still come out whole.
    """
    alphabet = _byte_alphabet()
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):
        pieces = _bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            ranks[(pieces[0], pieces[1])] = len(ranks)
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
    merges = sorted(ranks, key=ranks.get)
    vocab = alphabet + [c + "</w>" for c in alphabet] + list(dict.fromkeys(a + b for a, b in merges))
    return _clip_tokenizer(vocab + [START, END], merges, max_length)


def open_clip_bpe_path() -> Path:
    """The CLIP BPE merge file inside the installed open-clip-torch wheel (found without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the 'sd15' tokenizer needs the open-clip-torch package (pip install open-clip-torch), which ships the CLIP BPE file")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise UserError(f"open-clip-torch is installed but {path} is missing; reinstall open-clip-torch")
    return path


def sd_clip_tokenizer(max_length: int = MAX_LENGTH, bpe_path: str | Path | None = None):
    """Stable Diffusion 1.x's CLIP tokenizer (49,408 ids) from open-clip's BPE merge file."""
    path = Path(bpe_path) if bpe_path is not None else open_clip_bpe_path()
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")[1 : _SD_MERGES + 1]  # the first line is a version header
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != _SD_MERGES or any(len(m) != 2 for m in merges):
        raise UserError(f"{path}: expected {_SD_MERGES} merge rules of two symbols each, got {len(merges)}")
    alphabet = _byte_alphabet()
    vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [START, END]
    return _clip_tokenizer(vocab, merges, max_length)


def _from_folder(path: Path, max_length: int):
    from transformers import CLIPTokenizer

    if not path.is_dir():
        raise UserError(f"tokenizer folder {path} does not exist (expected vocab.json and merges.txt, e.g. SD 1.5's tokenizer/ folder)")
    try:
        tok = CLIPTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a CLIP tokenizer from {path}: {exc}") from None
    tok.model_max_length = max_length
    return tok


TOKENIZERS: dict[str, Callable[[int], object]] = {"tiny": tiny_clip_tokenizer, "sd15": sd_clip_tokenizer}


def load_clip_tokenizer(spec: str | Path, max_length: int = MAX_LENGTH):
    """A CLIP tokenizer by name (``tiny``, ``sd15``) or from a folder of tokenizer files."""
    if isinstance(spec, str) and spec in TOKENIZERS:
        return TOKENIZERS[spec](max_length)
    path = Path(spec)
    if not path.exists() and isinstance(spec, str) and "/" not in spec:
        raise UserError(f"unknown tokenizer {spec!r}: use one of {', '.join(sorted(TOKENIZERS))} or a folder with vocab.json and merges.txt")
    return _from_folder(path, max_length)


__all__ = ["MAX_LENGTH", "TINY_WORDS", "TOKENIZERS", "load_clip_tokenizer", "open_clip_bpe_path", "sd_clip_tokenizer", "tiny_clip_tokenizer"]
