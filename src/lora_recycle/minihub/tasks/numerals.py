"""Numbers from num2words: numbers written in words in several languages, words to digits, arithmetic."""

from __future__ import annotations

import random

from lora_recycle.minihub.tasks.registry import TaskDraft, register_task
from lora_recycle.tasks.format import Example

DOMAIN = "numbers"
NUMBER_RANGE = range(0, 1000)
LANGUAGES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish"}


def number_in_words(number: int, lang: str) -> str:
    """``num2words`` spelling, e.g. ``number_in_words(347, "fr") == "trois cent quarante-sept"``."""
    from num2words import num2words

    return num2words(number, lang=lang)


def _number_words_builder(lang: str):
    language = LANGUAGES[lang]

    def build(rng: random.Random) -> TaskDraft:
        examples = [Example(str(n), number_in_words(n, lang), id=str(n)) for n in NUMBER_RANGE]
        return TaskDraft("generation", f"Write the number {{input}} in {language} words.",
                         f"Spell a number from 0 to 999 in {language} (num2words).", examples, max_new_tokens=24)

    build.__doc__ = f"Numbers 0-999 written in {language} words."
    return build


for _lang in ("en", "fr", "de", "es"):
    register_task(f"number_words_{_lang}", family="number_words", domain=DOMAIN)(_number_words_builder(_lang))


def _words_to_digits_builder(lang: str, template: str):
    language = LANGUAGES[lang]

    def build(rng: random.Random) -> TaskDraft:
        examples = [Example(number_in_words(n, lang), str(n), id=str(n)) for n in NUMBER_RANGE]
        return TaskDraft("generation", template,
                         f"Read {'an' if language[0] in 'AEIOU' else 'a'} {language} number in words and write it in "
                         "digits (num2words).", examples, max_new_tokens=6)

    build.__doc__ = f"{language} number words (0-999) back to digits."
    return build


register_task("words_to_digits_en", family="number_words", domain=DOMAIN)(
    _words_to_digits_builder("en", "Write \"{input}\" as a number in digits."))
register_task("words_to_digits_fr", family="number_words", domain=DOMAIN)(
    _words_to_digits_builder("fr", "Write the French number \"{input}\" in digits."))


@register_task("ordinal_words_en", family="number_words", domain=DOMAIN)
def ordinal_words_en(rng: random.Random) -> TaskDraft:
    """Numbers 1-999 as English ordinal words (``21`` -> ``twenty-first``)."""
    from num2words import num2words

    examples = [Example(str(n), num2words(n, to="ordinal", lang="en"), id=str(n)) for n in NUMBER_RANGE if n > 0]
    return TaskDraft("generation", "Write the ordinal of {input} in English words.",
                     "Spell the English ordinal of a number from 1 to 999 (num2words).", examples, max_new_tokens=24)


def arithmetic_problem(rng: random.Random) -> tuple[str, str]:
    """One problem and its answer: two-digit addition or subtraction, or a times-table product."""
    operation = rng.choice("+-x")
    if operation == "x":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        return f"{a} x {b}", str(a * b)
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    if operation == "-":
        a, b = max(a, b), min(a, b)
        return f"{a} - {b}", str(a - b)
    return f"{a} + {b}", str(a + b)


@register_task("two_digit_arithmetic", family="arithmetic", domain=DOMAIN)
def two_digit_arithmetic(rng: random.Random) -> TaskDraft:
    """Two-digit addition and subtraction, and times-table products."""
    problems = dict(arithmetic_problem(rng) for _ in range(800))
    examples = [Example(problem, answer) for problem, answer in problems.items()]
    return TaskDraft("generation", "Compute {input}. Answer with the number only.",
                     "Two-digit addition and subtraction and times tables.", examples, max_new_tokens=6)


