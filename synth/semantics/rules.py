"""The offline back-end of the chain: captions from labels, lexicon extraction, a template composer.

* `RulesCaptioner` describes a sample from its labels (`poses.hand_facts`: each hand's pose
  class and view, the two hands' arrangement) with the phrases of ``data/captioner_rules.json``.
* `RulesExtractor` reads any caption, its own or a model's: sentences are cut into clauses at
  commas and conjunctions (NLTK's data-free tokenizers), a place phrase (preposition ... place
  noun) becomes the environment, and the rest of each clause is sorted by the words it holds
  (``data/lexicon.json``): an activity word makes an action, or a hand action when a hand word
  comes first ("the right hand is pointing ..."); a posture word makes the pose; a hand word
  alone makes a hand action; a clause with none of them (clothes, objects, weather) is dropped.
* `TemplateComposer` fills ``data/composer_template.txt`` and tidies the punctuation.
"""
from __future__ import annotations

import itertools
import re

from handrecon.hand_model.mano import HandModel

from . import resources
from .poses import PoseClassifier, hand_facts
from .schema import COMPONENTS, validate

_SENTENCE = re.compile(r"(?<=[.!?;])\s+")
# clause boundaries: commas, and conjunctions that start a new clause
_CLAUSE = re.compile(r",\s*|\s+(?=(?:while|whereas|but)\s)", re.I)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


class RulesCaptioner:
    """Caption a sample dict from its labels; needs no image."""

    def __init__(self, hand_model: HandModel):
        self.classifier = PoseClassifier(hand_model)
        self.rules = resources.load_json("captioner_rules.json")

    def environment(self, source: str) -> str:
        envs = self.rules["environments"]
        return envs.get(source, envs["default"])

    def __call__(self, sample: dict) -> str:
        r = self.rules
        facts = hand_facts(sample, self.classifier)
        present = [i for i in (0, 1) if facts.poses[i] is not None]
        if not present:
            return f"No hands are visible. The scene is {self.environment(sample.get('source', ''))}."
        poses = [facts.poses[i] for i in present]
        if facts.arrangement == "clasped":
            action = r["actions"]["clasped"]
        else:
            action = r["actions"][min(poses, key=r["action_priority"].index)]
        env = self.environment(sample.get("source", ""))
        if len(present) == 1:
            i = present[0]
            return r["single_template"].format(
                arrangement=r["arrangements"]["single"].format(side=("right", "left")[i]),
                view=r["views"][facts.views[i]],
                pose=r["pose_phrases"][facts.poses[i]],
                action=action,
                environment=env,
            )
        return r["two_template"].format(
            arrangement=r["arrangements"][facts.arrangement],
            view_right=r["views"][facts.views[0]],
            view_left=r["views"][facts.views[1]],
            pose_right=r["pose_phrases"][facts.poses[0]],
            pose_left=r["pose_phrases"][facts.poses[1]],
            action=action,
            environment=env,
        )


class RulesExtractor:
    """Free text -> the four components, by clause classification (see the module docstring)."""

    def __init__(self):
        lex = resources.load_json("lexicon.json")
        self.pose_markers = [m for m in lex["pose_markers"] if " " in m or "-" in m]  # phrases
        self.pose_words = {m for m in lex["pose_markers"] if " " not in m and "-" not in m}
        self.activities = set(lex["activity_words"])
        self.places = set(lex["environment_nouns"])
        self.preps = set(lex["environment_preps"])
        self.leading = set(lex["leading_words"]) | set(lex["auxiliaries"])
        self.not_gerunds = set(lex["not_gerunds"])
        self.persons = set(lex["person_nouns"])
        self.hand_counts = set(lex["hand_counts"])
        from synth.hand_tokens import HandWordFinder

        self._is_hand = HandWordFinder(tagger="none").is_hand_noun

    # -- word classes ----------------------------------------------------------------------
    def _is_activity(self, word: str) -> bool:
        w = word.lower()
        if w in self.activities:
            return True
        generic = w.endswith("ing") and len(w) > 5 and w not in self.not_gerunds
        return generic and w not in self.pose_words and not self._is_hand(w)

    # -- clauses ---------------------------------------------------------------------------
    def clauses(self, text: str) -> list[str]:
        out = []
        for sentence in _SENTENCE.split(text.strip()):
            out += [c.strip(" .!?;:") for c in _CLAUSE.split(sentence) if c.strip(" .!?;:")]
        return out

    def _split_place(self, clause: str) -> tuple[str, str]:
        """(clause without its place phrase, the place phrase or '')."""
        words = list(_WORD.finditer(clause))
        for k, m in enumerate(words):
            if m.group().lower() in self.places:
                while k + 1 < len(words) and words[k + 1].group().lower() in self.places:  # "park bench"
                    k, m = k + 1, words[k + 1]
                # the nearest preposition before the place noun opens the phrase
                for j in range(k - 1, max(k - 7, -1), -1):
                    if words[j].group().lower() in self.preps:
                        start = words[j].start()
                        # "in front of ..." / "on top of ...": the phrase starts at the first preposition
                        if j >= 2 and words[j].group().lower() == "of" and words[j - 2].group().lower() in self.preps:
                            start = words[j - 2].start()
                        return (clause[:start] + clause[m.end() :]).strip(), clause[start : m.end()]
        return clause, ""

    def _trim(self, phrase: str) -> str:
        """Drop leading conjunctions, auxiliaries and articles ('The person is pointing' keeps 'pointing')."""
        words = phrase.split()
        while words and words[0].lower() in self.leading:
            words = words[1:]
        return " ".join(words)

    def _sort(self, clause: str) -> tuple[str, str] | None:
        words = [m.group() for m in _WORD.finditer(clause)]
        lower = clause.lower()
        if any(m in lower for m in self.pose_markers):  # arrangement phrases: "side by side", "each other"
            return "pose", self._trim(clause)
        for k, w in enumerate(words):
            if self._is_activity(w):
                if any(self._is_hand(x) for x in words[:k]):
                    return "hand_action", self._trim(clause)
                return "action", clause[clause.index(w) :]
        has_hand = any(self._is_hand(w) for w in words)
        if has_hand and all(self._is_hand(w) or w.lower() in self.hand_counts for w in words):
            return "pose", self._trim(clause)  # "Two hands", "A single right hand"
        posture = [k for k, w in enumerate(words) if w.lower() in self.pose_words]
        if posture:
            person = next((w for w in words if w.lower() in self.persons), None)
            if person is not None and posture and person.lower() not in self.leading:
                tail = list(itertools.takewhile(lambda w: w.lower() not in self.preps, words[posture[0] + 1 : posture[0] + 4]))
                return "pose", " ".join(["a", person, words[posture[0]], *tail])  # "a man standing"
            if person is not None or has_hand or posture[0] <= 1:
                return "pose", self._trim(clause)
            return None  # a posture of something else ("a bicycle leans against a tree")
        if has_hand:
            return "hand_action", self._trim(clause)
        return None

    def __call__(self, caption: str) -> dict[str, str]:
        parts: dict[str, list[str]] = {k: [] for k in COMPONENTS}
        for clause in self.clauses(caption):
            rest, place = self._split_place(clause)
            if place:
                parts["environment"].append(place)
            sorted_ = self._sort(rest) if rest else None
            if sorted_ is not None and sorted_[1]:
                parts[sorted_[0]].append(sorted_[1])
        limits = {"pose": 160, "action": 160, "hand_action": 200, "environment": 160}
        out = {k: _clip(", ".join(dict.fromkeys(v)), limits[k]) for k, v in parts.items()}
        return validate(out)


def _clip(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",")


class TemplateComposer:
    """Components -> one prompt through ``data/composer_template.txt``; empty components vanish."""

    def __init__(self):
        self.template = resources.text("composer_template.txt")

    def __call__(self, components: dict[str, str]) -> str:
        text = self.template.format(**{k: components.get(k, "") for k in COMPONENTS})
        text = re.sub(r"(\s*,\s*)+", ", ", text)  # empty fields leave runs of commas
        text = text.strip(" ,")
        return text[:1].upper() + text[1:]
