"""Hand words of a prompt and the CLIP text-encoder columns they occupy.

The generator adds a bias to the cross-attention logits of the columns that carry hand
structure or hand actions. This module finds those words with NLTK and maps them to columns:

1. Words: NLTK's Treebank-style word tokenizer (needs no data files) gives character spans.
   Hand-structure nouns (hand, finger, palm, thumb, fist, ...) are always hand words; hand-action
   verbs (hold, grasp, pinch, point, clap, wave, ...) only where the POS tagger reads them as
   verbs or participles ("pointing her finger", not "a point of view" or "waves on the sea").
   Words are matched through the Porter stem, so inflections need no lists.
2. Tagger: NLTK's averaged perceptron with the model from NLTK's data folder if present, else
   the same kind of model that ships inside the ``textblob-aptagger`` wheel. Nothing is
   downloaded; with neither, the lexicon path tags nothing and accepts a hand-action verb
   unless the form is also a common noun (point, wave, ...), never an error.
3. Columns: the tokenizer's character offsets (column 0 is the start token), so a word split
   into several BPE tokens gives all its columns and a word cut by the 77-token truncation gives
   only the columns that survive. Tokenizers without offsets are handled by counting the tokens
   of the text before and through each word.
"""
from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Hand structure: always hand words, whatever their tag ("hand me the cup" still names the hand).
HAND_NOUNS = (
    "hand", "finger", "fingertip", "palm", "thumb", "fist", "knuckle", "wrist", "nail", "fingernail",
    "forefinger", "handshake", "grip", "grasp", "gesture",
)  # fmt: skip
# Hand actions: hand words when used as verbs or participles.
HAND_VERBS = (
    "hold", "grasp", "grip", "grab", "pinch", "point", "clap", "wave", "clasp", "clench", "squeeze", "touch",
    "press", "tap", "type", "catch", "throw", "shake", "stretch", "spread", "curl", "fold", "rub", "scratch",
    "pick", "carry", "lift", "pull", "push", "reach", "raise", "snap", "pat", "stroke", "knead", "write", "draw",
    "sign", "count", "hug", "interlock", "cup", "flex", "bend", "make",
)  # fmt: skip
# Irregular verb forms the Porter stemmer does not bring back to their base form.
IRREGULAR = {"held": "hold", "caught": "catch", "threw": "throw", "thrown": "throw", "shook": "shake", "shaken": "shake",
             "wrote": "write", "written": "write", "drew": "draw", "drawn": "draw", "spread": "spread", "made": "make",
             "hands": "hand", "handed": "hand"}  # fmt: skip
# Verb forms that are far more often nouns; the lexicon path (no tagger) skips them.
NOUN_LIKE = ("point", "points", "wave", "waves", "type", "types", "sign", "signs", "cup", "cups", "draw", "count", "press",
             "make", "makes", "made", "pick", "spread", "stroke", "nail", "tap")  # fmt: skip
# Verbs too generic to be hand actions by themselves ("make a fist" is caught by "fist").
WEAK_VERBS = ("make",)

TAGGER_PICKLE = "trontagger-0.1.0.pickle"


@dataclass(frozen=True)
class Word:
    """One word of a prompt: its text, character span [start, end) and POS tag (None: untagged)."""

    text: str
    start: int
    end: int
    tag: str | None = None


# --------------------------------------------------------------------------------- the tagger
def _tagger_from_weights(weights: dict, tagdict: dict, classes: Any):
    from nltk.tag.perceptron import PerceptronTagger

    tagger = PerceptronTagger(load=False)
    tagger.model.weights = weights
    tagger.tagdict = tagdict
    tagger.classes = set(classes)
    tagger.model.classes = tagger.classes
    return tagger


def _nltk_data_tagger():
    """NLTK's own English tagger, only if its data package is already on disk (never downloads)."""
    import nltk

    try:
        nltk.data.find("taggers/averaged_perceptron_tagger_eng/")
    except LookupError:
        return None
    from nltk.tag.perceptron import PerceptronTagger

    try:
        return PerceptronTagger(lang="eng")
    except (LookupError, OSError, ValueError):
        return None


def _wheel_tagger_path() -> Path | None:
    spec = importlib.util.find_spec("textblob_aptagger")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / TAGGER_PICKLE
    return path if path.is_file() else None


def load_tagger(source: str = "auto"):
    """An NLTK POS tagger that needs no download, or None when none is installed.

    `source`: ``auto`` (NLTK data if present, else the textblob-aptagger model), ``nltk``,
    ``wheel``, or ``none`` (the lexicon path).
    """
    if source not in ("auto", "nltk", "wheel", "none"):
        raise ValueError(f"unknown tagger source {source!r}; use auto, nltk, wheel or none")
    if source in ("auto", "nltk"):
        tagger = _nltk_data_tagger()
        if tagger is not None or source == "nltk":
            return tagger
    if source in ("auto", "wheel"):
        path = _wheel_tagger_path()
        if path is None:
            return None
        with open(path, "rb") as fh:
            weights, tagdict, classes = pickle.load(fh, encoding="latin1")  # written under Python 2
        return _tagger_from_weights(weights, tagdict, classes)
    return None


# ----------------------------------------------------------------------------------- finding words
class HandWordFinder:
    """Finds hand words in text. Holds the tagger and stemmer (build once, reuse)."""

    def __init__(self, tagger: Any = "auto", nouns: Sequence[str] = HAND_NOUNS, verbs: Sequence[str] = HAND_VERBS):
        from nltk.stem import PorterStemmer
        from nltk.tokenize import NLTKWordTokenizer

        self.tagger = load_tagger(tagger) if isinstance(tagger, str) else tagger
        self._tokenizer = NLTKWordTokenizer()
        self._stem = PorterStemmer().stem
        self._nouns = {self._stem(w) for w in nouns}
        self._verbs = {self._stem(w) for w in verbs if w not in WEAK_VERBS}
        self._noun_like = set(NOUN_LIKE)

    @property
    def path(self) -> str:
        """``tagger`` when a POS tagger is used, ``lexicon`` otherwise."""
        return "lexicon" if self.tagger is None else "tagger"

    def words(self, text: str) -> list[Word]:
        """All words of `text` with spans and (when a tagger is present) POS tags."""
        spans = list(self._tokenizer.span_tokenize(text))
        tokens = [text[a:b] for a, b in spans]
        tags = [t for _, t in self.tagger.tag(tokens)] if self.tagger is not None and tokens else [None] * len(tokens)
        return [Word(tok, a, b, tag) for tok, (a, b), tag in zip(tokens, spans, tags)]

    def base(self, word: str) -> str:
        """The stem used for lexicon look-ups (irregular forms first)."""
        lower = word.lower()
        return self._stem(IRREGULAR.get(lower, lower))

    def is_hand_word(self, word: Word) -> bool:
        lower = word.text.lower()
        if not any(c.isalpha() for c in lower):
            return False
        if self.is_hand_noun(word.text):
            return True
        stem = self.base(lower)
        if stem not in self._verbs:
            return False
        if word.tag is None:  # lexicon path
            return lower not in self._noun_like
        return word.tag.startswith("VB") or (word.tag == "JJ" and lower.endswith(("ed", "ing")))

    def is_hand_noun(self, text: str) -> bool:
        """A hand-structure word, or a hyphenated word with one ("thumbs-up", "hand-made")."""
        return any(self.base(part) in self._nouns for part in text.lower().split("-"))

    def find(self, text: str) -> list[Word]:
        """The hand words of `text`, in order. A hand verb read as a noun or adjective still counts
        right before a hand noun ("a pointing finger", "waving hands")."""
        words = self.words(text)
        found = []
        for k, word in enumerate(words):
            before_hand = k + 1 < len(words) and self.is_hand_noun(words[k + 1].text) and self.base(word.text) in self._verbs
            if self.is_hand_word(word) or before_hand:
                found.append(word)
        return found


# ------------------------------------------------------------------------------- words -> columns
def _offsets(tokenizer, text: str, max_length: int) -> list[tuple[int, int]] | None:
    """(start, end) character span of each column (special tokens: (0, 0)), or None without offsets."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True, return_special_tokens_mask=True)
    return [(0, 0) if special else (a, b) for (a, b), special in zip(enc["offset_mapping"], enc["special_tokens_mask"])]


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text.strip() else 0


def columns_of_spans(text: str, spans: Sequence[tuple[int, int]], tokenizer, max_length: int | None = None) -> list[list[int]]:
    """Text-encoder columns covered by each character span of `text` (start token = column 0).

    Columns past the truncation (the last column holds the end token) are dropped, so a word may
    get fewer columns than tokens, or none.
    """
    max_length = max_length or tokenizer.model_max_length
    last = max_length - 1  # column of the end token after truncation
    offsets = _offsets(tokenizer, text, max_length)
    out = []
    for a, b in spans:
        if offsets is not None:
            cols = [i for i, (s, e) in enumerate(offsets) if e > s and s < b and e > a]
        else:  # no offsets: count tokens before and through the span (exact at word boundaries)
            first = 1 + _count(tokenizer, text[:a])
            cols = list(range(first, 1 + _count(tokenizer, text[:b])))
        out.append([c for c in cols if 0 < c < last])
    return out


@dataclass(frozen=True)
class HandTokens:
    """Hand words of one prompt and their columns (sorted, unique) in the text encoder's input."""

    words: tuple[Word, ...]
    word_columns: tuple[tuple[int, ...], ...]

    @property
    def columns(self) -> list[int]:
        return sorted({c for cols in self.word_columns for c in cols})


def hand_tokens(text: str, tokenizer, finder: HandWordFinder, max_length: int | None = None) -> HandTokens:
    """Hand words of `text` and the columns each one occupies for `tokenizer`."""
    words = finder.find(text)
    cols = columns_of_spans(text, [(w.start, w.end) for w in words], tokenizer, max_length)
    return HandTokens(tuple(words), tuple(tuple(c) for c in cols))


__all__ = [
    "HAND_NOUNS",
    "HAND_VERBS",
    "HandTokens",
    "HandWordFinder",
    "Word",
    "columns_of_spans",
    "hand_tokens",
    "load_tagger",
]
