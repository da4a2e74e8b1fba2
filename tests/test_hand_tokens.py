"""Offline CLIP tokenizers and the hand-word columns of prompts."""
from __future__ import annotations

import pytest

from handrecon.errors import UserError
from synth.attention import hand_token_mask
from synth.hand_tokens import HandWordFinder, columns_of_spans, hand_tokens
from synth.tokenizers import TINY_WORDS, load_clip_tokenizer


@pytest.fixture(scope="module")
def sd15():
    return load_clip_tokenizer("sd15")


@pytest.fixture(scope="module")
def tiny():
    return load_clip_tokenizer("tiny")


@pytest.fixture(scope="module")
def finder():
    return HandWordFinder("auto")


def test_sd15_vocabulary_gives_stable_diffusion_ids(sd15):
    assert len(sd15) == 49408
    assert sd15("a photo of a hand")["input_ids"] == [49406, 320, 1125, 539, 320, 2463, 49407]
    # the padded 77-column layout the text encoder reads
    ids = sd15("hands", padding="max_length", max_length=77, truncation=True)["input_ids"]
    assert len(ids) == 77 and ids[0] == 49406 and ids[2] == 49407


def test_tiny_tokenizer_knows_its_words_and_splits_the_rest(tiny, tmp_path):
    assert len(tiny) < 1000
    for word in TINY_WORDS:
        assert len(tiny(word, add_special_tokens=False)["input_ids"]) == 1, word
    assert len(tiny("clapping", add_special_tokens=False)["input_ids"]) > 1
    assert tiny.decode(tiny("two hands clapping!", add_special_tokens=False)["input_ids"]).replace(" ", "") == "twohandsclapping!"
    tiny.save_pretrained(tmp_path / "tok")
    again = load_clip_tokenizer(str(tmp_path / "tok"))
    assert again("a hand pinching a cup")["input_ids"] == tiny("a hand pinching a cup")["input_ids"]


def test_unknown_tokenizers_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="unknown tokenizer 'sd21'"):
        load_clip_tokenizer("sd21")
    with pytest.raises(UserError, match="does not exist"):
        load_clip_tokenizer(str(tmp_path / "missing"))


def _decoded(tokenizer, text, columns):
    ids = tokenizer(text, truncation=True, max_length=77)["input_ids"]
    return tokenizer.decode([ids[c] for c in columns]).replace(" ", "")


@pytest.mark.parametrize("name", ["sd15", "tiny"])
@pytest.mark.parametrize(
    "text",
    [
        "A woman clapping her hands, fingertips touching.",
        "close-up of a thumb,index finger and palm!",
        "He held the cup; his fist clenched (tightly).",
    ],
)
def test_each_hand_word_maps_to_exactly_its_tokens(name, text, finder, request):
    tokenizer = request.getfixturevalue(name)
    found = hand_tokens(text, tokenizer, finder)
    assert found.words
    for word, columns in zip(found.words, found.word_columns):
        assert columns == tuple(range(columns[0], columns[0] + len(columns)))  # contiguous
        assert _decoded(tokenizer, text, columns) == word.text.lower()


def test_multi_token_words_get_all_their_columns(sd15, tiny, finder):
    text = "two hands clapping"
    for tokenizer in (sd15, tiny):
        found = hand_tokens(text, tokenizer, finder)
        by_word = dict(zip([w.text for w in found.words], found.word_columns))
        n = len(tokenizer("clapping", add_special_tokens=False)["input_ids"])
        assert len(by_word["clapping"]) == n
    assert len(hand_tokens(text, tiny, finder).word_columns[1]) > 1  # the tiny vocabulary splits it


def test_truncation_drops_columns_past_the_last_one(sd15, finder):
    filler = "a photo of a room " * 20  # 100 tokens before the hand words
    text = "a hand, " + filler + "a pointing finger"
    found = hand_tokens(text, sd15, finder)
    assert [w.text for w in found.words] == ["hand", "pointing", "finger"]
    assert found.word_columns[0] == (2,)
    assert found.word_columns[1] == () and found.word_columns[2] == ()  # cut by the 77-token limit
    assert all(0 < c < 76 for c in found.columns)
    # a word straddling the limit keeps only the columns that survive
    prefix = "a " * 74  # start token + 74 tokens: the next word starts at column 75
    cut = hand_tokens(prefix + "fingertips", sd15, finder)
    assert cut.word_columns[0] == (75,)


def test_no_hand_words_and_noun_senses(sd15, finder):
    assert hand_tokens("a sunset over the sea", sd15, finder).columns == []
    assert [w.text for w in finder.find("a point of view over the waves")] == []
    assert [w.text for w in finder.find("she waved at him while pointing")] == ["waved", "pointing"]
    assert [w.text for w in finder.find("a thumbs-up and waving hands")] == ["thumbs-up", "waving", "hands"]


def test_without_a_tagger_the_lexicon_path_still_finds_hand_words(sd15):
    lexicon = HandWordFinder("none")
    assert lexicon.path == "lexicon"
    assert [w.text for w in lexicon.find("a point of view; her palm, clapping hands")] == ["palm", "clapping", "hands"]


def test_tokenizers_without_offsets_give_the_same_columns(sd15, finder):
    class NoOffsets:
        is_fast = False
        model_max_length = 77

        def __call__(self, text, **kwargs):
            kwargs.pop("return_offsets_mapping", None)
            return sd15(text, **kwargs)

    for text in ["A woman clapping her hands, fingertips touching.", "close-up of a thumb,index finger and palm!"]:
        spans = [(w.start, w.end) for w in finder.find(text)]
        assert columns_of_spans(text, spans, NoOffsets()) == columns_of_spans(text, spans, sd15)


def test_mask_marks_the_hand_columns_per_prompt(sd15, finder):
    # the mask the cross-attention bias reads, from each prompt's hand columns
    mask = hand_token_mask([hand_tokens(t, sd15, finder).columns for t in ["a hand", "no such words", "fist and palm"]])
    assert mask.shape == (3, 77)
    assert mask[0].nonzero()[:, 0].tolist() == [2] and not mask[1].any() and mask[2].nonzero()[:, 0].tolist() == [1, 3]
