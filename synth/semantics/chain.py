"""Captioner -> Extractor -> Composer: a sample's human-behaviour prompt, every stage kept.

Each stage runs on the back-end its config names: ``rules`` (offline, `rules.py`),
``transformers`` (local model folders) or ``openai`` (an OpenAI-compatible server). A model
extractor gets the system prompt and few-shot examples of ``data/``; its reply is parsed and
repaired (`schema.py`); a reply that still fails is sent back once with the error
(``data/extractor_retry.txt``); a second failure falls back to the rules extractor. A model
composer's reply must be one non-empty line of at most `max_prompt_words` words, else the
template composes. Each record says which path produced each stage.

A record (one JSON line of the prompt cache)::

    {"sample_id", "source", "caption", "components": {pose, action, hand_action, environment},
     "prompt", "hand_words": [...], "hand_columns": [...], "paths": {captioner, extractor, composer}}

`hand_columns` are the CLIP text-encoder columns of the hand words for the configured tokenizer
(`synth.hand_tokens`), which the generator's cross-attention bias reads.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from handrecon.config import check_fields
from handrecon.errors import UserError
from handrecon.hand_model.mano import HandModel

from . import resources
from .backends import Backend, BackendError, OpenAIBackend, OpenAIConfig, TransformersBackend, TransformersConfig
from .rules import RulesCaptioner, RulesExtractor, TemplateComposer
from .schema import COMPONENTS, ReplyError, parse_components

STAGE_BACKENDS = ("rules", "transformers", "openai")
CHAIN_VERSION = 1  # part of every cache key: raise it when the rules or the record layout change


@dataclass
class SemanticsConfig:
    captioner: str = field(default="rules", metadata={"choices": STAGE_BACKENDS})  # rules: from the labels
    extractor: str = field(default="rules", metadata={"choices": STAGE_BACKENDS})
    composer: str = field(default="rules", metadata={"choices": STAGE_BACKENDS})  # rules: the template
    fewshot: int = 3  # examples of data/fewshot.json shown to a model extractor; >= 0
    max_prompt_words: int = 60  # a longer model composition falls back to the template; >= 1
    tokenizer: str = "sd15"  # CLIP tokenizer of the hand columns: sd15 | tiny | a tokenizer folder
    tagger: str = field(default="auto", metadata={"choices": ("auto", "nltk", "wheel", "none")})  # POS tagger for hand words
    transformers: TransformersConfig = field(default_factory=TransformersConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)

    def __post_init__(self) -> None:
        check_fields(self, ">= 0", "fewshot")
        check_fields(self, ">= 1", "max_prompt_words")


BACKENDS: dict[str, Callable[[SemanticsConfig], Backend]] = {
    "transformers": lambda cfg: TransformersBackend(cfg.transformers),
    "openai": lambda cfg: OpenAIBackend(cfg.openai),
}


def _json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


class Extractor:
    """Captions -> (components, path); path: rules | model | model_repaired | model_retry | rules_fallback."""

    def __init__(self, backend: Backend | None, fewshot: int = 3):
        self.backend = backend
        self.rules = RulesExtractor()
        self.system = resources.text("extractor_system.txt")
        self.retry = resources.text("extractor_retry.txt")
        self.examples = resources.load_json("fewshot.json")[:fewshot]

    def conversation(self, caption: str) -> list[dict]:
        messages = [{"role": "system", "content": self.system}]
        for ex in self.examples:
            messages += [{"role": "user", "content": ex["caption"]}, {"role": "assistant", "content": _json(ex["components"])}]
        return messages + [{"role": "user", "content": caption}]

    def __call__(self, captions: list[str]) -> list[tuple[dict[str, str], str]]:
        if self.backend is None:
            return [(self.rules(c), "rules") for c in captions]
        out: list[tuple[dict[str, str], str] | None] = [None] * len(captions)
        convs = [self.conversation(c) for c in captions]
        failed = {}
        for i, reply in enumerate(self.backend.chat(convs)):
            try:
                parsed = parse_components(reply)
                out[i] = (parsed.components, "model_repaired" if parsed.repaired else "model")
            except ReplyError as err:
                failed[i] = convs[i] + [{"role": "assistant", "content": reply}, {"role": "user", "content": self.retry.format(error=err)}]
        if failed:
            for i, reply in zip(failed, self.backend.chat(list(failed.values()))):
                try:
                    out[i] = (parse_components(reply).components, "model_retry")
                except ReplyError:
                    out[i] = (self.rules(captions[i]), "rules_fallback")
        return out  # type: ignore[return-value]


class Composer:
    """Components -> (prompt, path); path: template | model | template_fallback."""

    def __init__(self, backend: Backend | None, max_words: int = 60):
        self.backend, self.max_words = backend, max_words
        self.template = TemplateComposer()
        self.system = resources.text("composer_system.txt")
        self.user = resources.text("composer_user.txt")

    def _usable(self, reply: str) -> str | None:
        lines = [line.strip().strip('"').strip() for line in reply.strip().splitlines() if line.strip()]
        if len(lines) != 1 or not 0 < len(lines[0].split()) <= self.max_words:
            return None
        return lines[0]

    def __call__(self, components: list[dict[str, str]]) -> list[tuple[str, str]]:
        if self.backend is None:
            return [(self.template(c), "template") for c in components]
        convs = [[{"role": "system", "content": self.system}, {"role": "user", "content": self.user.format(**c)}] for c in components]
        out = []
        for c, reply in zip(components, self.backend.chat(convs)):
            prompt = self._usable(reply)
            out.append((prompt, "model") if prompt is not None else (self.template(c), "template_fallback"))
        return out


class Captioner:
    """Samples -> (caption, path); rules describes the labels, a model the image."""

    def __init__(self, backend: Backend | None, hand_model: HandModel):
        self.backend = backend
        self.rules = RulesCaptioner(hand_model) if backend is None else None
        self.instruction = resources.text("captioner.txt")

    def __call__(self, samples: list[dict]) -> list[tuple[str, str]]:
        if self.backend is None:
            return [(self.rules(s), "rules") for s in samples]
        missing = [s["sample_id"] for s in samples if "image" not in s]
        if missing:
            raise UserError(f"a model captioner needs images; samples {missing[:3]} were read without them")
        return [(c.strip(), "model") for c in self.backend.describe([s["image"] for s in samples], self.instruction)]


class SemanticsChain:
    """The three stages and the hand-token lookup, built once from a config."""

    def __init__(self, cfg: SemanticsConfig, hand_model: HandModel):
        from synth.hand_tokens import HandWordFinder, hand_tokens
        from synth.tokenizers import load_clip_tokenizer

        self.cfg = cfg
        backends: dict[str, Backend] = {}

        def backend(name: str) -> Backend | None:
            if name == "rules":
                return None
            if name not in backends:
                backends[name] = BACKENDS[name](cfg)
            return backends[name]

        self.captioner = Captioner(backend(cfg.captioner), hand_model)
        self.extractor = Extractor(backend(cfg.extractor), cfg.fewshot)
        self.composer = Composer(backend(cfg.composer), cfg.max_prompt_words)
        self.backends = backends
        self.tokenizer = load_clip_tokenizer(cfg.tokenizer)
        self.finder = HandWordFinder(cfg.tagger)
        self._hand_tokens = hand_tokens

    @property
    def needs_images(self) -> bool:
        return self.cfg.captioner != "rules"

    def __call__(self, samples: list[dict]) -> list[dict]:
        """One record per sample (see the module docstring)."""
        try:
            captions = self.captioner(samples)
            components = self.extractor([c for c, _ in captions])
            prompts = self.composer([c for c, _ in components])
        except BackendError as exc:
            raise UserError(str(exc)) from None
        records = []
        for sample, (caption, p_cap), (comps, p_ext), (prompt, p_com) in zip(samples, captions, components, prompts):
            tokens = self._hand_tokens(prompt, self.tokenizer, self.finder)
            records.append(
                {
                    "sample_id": str(sample["sample_id"]),
                    "source": sample.get("source", ""),
                    "caption": caption,
                    "components": {k: comps[k] for k in COMPONENTS},
                    "prompt": prompt,
                    "hand_words": [w.text for w in tokens.words],
                    "hand_columns": tokens.columns,
                    "paths": {"captioner": p_cap, "extractor": p_ext, "composer": p_com},
                }
            )
        return records
