"""Multilingual tasks from babel's CLDR data: country names and calendar words across languages.

Month and day names are read in the ``format`` context: babel 2.18 resolves the ``stand-alone``
aliases by writing them into dictionaries shared between locales, so after one locale has been read,
another's stand-alone names can come back in the first one's language (``format`` is not affected).
"""

from __future__ import annotations

import random
from functools import cache

from lora_recycle.minihub.tasks.registry import TaskDraft, is_latin, register_task
from lora_recycle.tasks.format import Example

FAMILY, DOMAIN = "cldr_translation", "multilingual"
LANGUAGES = {"fr": "French", "de": "German", "es": "Spanish"}


@cache
def locale(code: str):
    from babel import Locale

    return Locale.parse(code)


def country_codes() -> list[str]:
    """ISO 3166 alpha-2 codes of every country pycountry knows, sorted."""
    import pycountry

    return sorted(country.alpha_2 for country in pycountry.countries)


def _country_name_builder(lang: str):
    language = LANGUAGES[lang]

    def build(rng: random.Random) -> TaskDraft:
        english, foreign = locale("en").territories, locale(lang).territories
        examples = [Example(english[code], foreign[code], id=code) for code in country_codes()
                    if code in english and code in foreign]
        return TaskDraft("generation", f"Translate the country name into {language}: {{input}}",
                         f"English country name to its {language} name (Unicode CLDR via babel).", examples,
                         max_new_tokens=24)

    build.__doc__ = f"Country names from English to {language}."
    return build


for _lang in LANGUAGES:
    register_task(f"country_name_{_lang}", family=FAMILY, domain=DOMAIN)(_country_name_builder(_lang))


def calendar_words(code: str) -> list[str]:
    """The twelve month names then the seven day names (Monday first) of a locale, format context, wide."""
    data = locale(code)
    months = data.months["format"]["wide"]
    days = data.days["format"]["wide"]
    return [months[m] for m in range(1, 13)] + [days[d] for d in range(7)]


def official_languages() -> set[str]:
    """Languages official (de jure or de facto) in at least one country, per CLDR."""
    from babel.languages import get_official_languages

    return {lang for code in country_codes() for lang in get_official_languages(code, de_facto=True)}


def calendar_languages() -> list[str]:
    """Two-letter codes of official languages with an English name and Latin-script, alphabetic calendar words."""
    from babel import localedata

    names = locale("en").languages
    official = official_languages()
    codes = []
    for code in sorted(localedata.locale_identifiers()):
        if len(code) != 2 or code == "en" or code not in names or code not in official:
            continue
        words = calendar_words(code)
        if all(is_latin(w) and w.replace(" ", "").replace("-", "").isalpha() for w in words):
            codes.append(code)
    return codes


@register_task("calendar_names", family=FAMILY, domain=DOMAIN)
def calendar_names(rng: random.Random) -> TaskDraft:
    """Month and day names in ~50 Latin-script official languages: "How do you say March in Polish?"."""
    english = calendar_words("en")
    names = locale("en").languages
    examples = []
    for code in calendar_languages():
        for index, (word, foreign) in enumerate(zip(english, calendar_words(code), strict=True)):
            examples.append(Example(f"{word} in {names[code]}", foreign, id=f"{code}-{index}"))
    return TaskDraft("generation", "How do you say {input}? Answer with the word only.",
                     "Month and weekday names in dozens of languages (Unicode CLDR via babel).", examples,
                     max_new_tokens=12)
