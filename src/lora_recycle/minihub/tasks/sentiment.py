"""Text classification from vaderSentiment: word polarity and intensity, phrase sentiment, emoji names."""

from __future__ import annotations

import random
from functools import lru_cache

from lora_recycle.minihub.tasks.registry import TaskDraft, options_text, register_task, with_options
from lora_recycle.tasks.format import Example

DOMAIN = "text_classification"
POLARITY = ("positive", "negative")
# the lexicon rates slurs and profanity too; a demo data set does not need to show them
UNSHOWN_STEMS = ("fuck", "shit", "bitch", "cunt", "nigg", "fag", "whore", "slut", "dick", "cock", "pussy",
                 "bastard", "asshole", "retard", "damn", "piss", "crap", "douche", "wtf", "hell")
NOUNS = ("movie", "food", "hotel", "service", "book", "game", "weather", "concert", "trip", "class")
MODIFIERS = ("", "very", "really", "extremely", "not", "not very", "not really", "never", "hardly", "somewhat",
             "slightly", "kind of", "barely", "so")
ADJECTIVE_ENDINGS = ("ful", "ous", "ive", "able", "ible", "al", "ic", "y", "less", "ed", "ing", "ent", "ant")


@lru_cache(maxsize=1)
def analyzer():
    """VADER's rule-based analyser, with its lexicon (word -> mean valence, -4..4) and emoji names."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def lexicon_words() -> list[tuple[str, float]]:
    """Sorted ``(word, valence)`` for plain lowercase words of the lexicon, minus profanity."""
    lexicon = analyzer().lexicon
    return sorted((w, v) for w, v in lexicon.items()
                  if w.isalpha() and w.isascii() and w.islower() and len(w) >= 3
                  and not any(stem in w for stem in UNSHOWN_STEMS))


def _balanced_pairs(rng: random.Random, first: list[str], second: list[str], labels: tuple[str, str],
                    per_label: int) -> list[tuple[str, str]]:
    """``per_label`` sampled items of each list, labelled, in a fixed order (the suite shuffles)."""
    return ([(w, labels[0]) for w in rng.sample(first, min(per_label, len(first)))]
            + [(w, labels[1]) for w in rng.sample(second, min(per_label, len(second)))])


@register_task("word_polarity", family="sentiment", domain=DOMAIN)
def word_polarity(rng: random.Random) -> TaskDraft:
    """Is a word positive or negative (VADER lexicon words with |valence| >= 1)."""
    words = lexicon_words()
    positive = [w for w, v in words if v >= 1.0]
    negative = [w for w, v in words if v <= -1.0]
    pairs = _balanced_pairs(rng, positive, negative, POLARITY, 250)
    examples = [Example(word, label, POLARITY, id=word) for word, label in pairs]
    return TaskDraft("multiple_choice", "Is the word \"{input}\" positive or negative?",
                     "Sentiment polarity of an English word (VADER lexicon).", examples)


@register_task("word_intensity", family="sentiment", domain=DOMAIN)
def word_intensity(rng: random.Random) -> TaskDraft:
    """Does a word express a strong (|valence| >= 2.5) or a mild (0.5-1.2) feeling."""
    words = lexicon_words()
    strong = [w for w, v in words if abs(v) >= 2.5]
    mild = [w for w, v in words if 0.5 <= abs(v) <= 1.2]
    pairs = _balanced_pairs(rng, strong, mild, ("strong", "mild"), 250)
    examples = [Example(word, label, ("strong", "mild"), id=word) for word, label in pairs]
    return TaskDraft("multiple_choice", "Does the word \"{input}\" express a strong or a mild feeling?",
                     "Sentiment intensity of an English word (VADER lexicon).", examples)


@register_task("phrase_sentiment", family="sentiment", domain=DOMAIN)
def phrase_sentiment(rng: random.Random) -> TaskDraft:
    """Short review sentences with negations and intensifiers, labelled by VADER's rules (|compound| >= 0.05)."""
    adjectives = [w for w, v in lexicon_words() if abs(v) >= 1.5 and w.endswith(ADJECTIVE_ENDINGS)]
    scored: dict[str, list[str]] = {"positive": [], "negative": []}
    for _ in range(3000):
        modifier = rng.choice(MODIFIERS)
        sentence = f"The {rng.choice(NOUNS)} was {modifier + ' ' if modifier else ''}{rng.choice(adjectives)}."
        compound = analyzer().polarity_scores(sentence)["compound"]
        if abs(compound) >= 0.05:
            scored[POLARITY[0] if compound > 0 else POLARITY[1]].append(sentence)
    unique = {label: sorted(set(sentences)) for label, sentences in scored.items()}
    pairs = _balanced_pairs(rng, unique["positive"], unique["negative"], POLARITY, 250)
    examples = [Example(sentence, label, POLARITY) for sentence, label in pairs]
    return TaskDraft("multiple_choice", "Review: {input}\nIs this review positive or negative?",
                     "Sentiment of a short review sentence with negations and intensifiers (VADER rules).",
                     examples)


@register_task("emoji_name", family="emoji", domain=DOMAIN)
def emoji_name(rng: random.Random) -> TaskDraft:
    """What a single-character emoji shows, among four CLDR short names (VADER's emoji table)."""
    table = sorted((e, name) for e, name in analyzer().emojis.items() if len(e) == 1 and "skin tone" not in name)
    names = [name for _, name in table]
    examples = []
    for emoji, name in rng.sample(table, min(600, len(table))):
        options = with_options(rng, name, rng.sample(names, 8))
        examples.append(Example(f"{emoji}\n{options_text(options)}", name, options, id=f"U+{ord(emoji):04X}"))
    return TaskDraft("multiple_choice", "What does this emoji show?\nEmoji: {input}",
                     "Name of an emoji among four (Unicode CLDR short names shipped with VADER).", examples)
