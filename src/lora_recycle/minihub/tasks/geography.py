"""Geography from pycountry (ISO 3166, 639, 4217) and babel: codes, regions, currencies, languages, flags."""

from __future__ import annotations

import random
from datetime import date

from lora_recycle.minihub.tasks.registry import TaskDraft, is_latin, options_text, register_task, with_options
from lora_recycle.tasks.format import Example

DOMAIN = "geography"
CURRENCY_DATE = date(2025, 1, 1)  # a fixed day, so the task does not change when a country changes currency


def country_name(country) -> str:
    """The everyday name pycountry gives a country (``common_name`` when it has one)."""
    return getattr(country, "common_name", None) or country.name


def countries() -> list:
    import pycountry

    return sorted(pycountry.countries, key=lambda c: c.alpha_2)


def _code_task(attribute: str, standard: str, rng: random.Random) -> TaskDraft:
    examples = [Example(country_name(c), getattr(c, attribute), id=c.alpha_2) for c in countries()]
    return TaskDraft("generation", f"What is the ISO 3166 {standard} code of {{input}}? Answer with the code only.",
                     f"Country name to its ISO 3166-1 {standard} code (pycountry).", examples, max_new_tokens=4)


@register_task("country_alpha2", family="iso_codes", domain=DOMAIN)
def country_alpha2(rng: random.Random) -> TaskDraft:
    """Country name -> two-letter ISO code."""
    return _code_task("alpha_2", "alpha-2", rng)


@register_task("country_alpha3", family="iso_codes", domain=DOMAIN)
def country_alpha3(rng: random.Random) -> TaskDraft:
    """Country name -> three-letter ISO code."""
    return _code_task("alpha_3", "alpha-3", rng)


@register_task("language_code", family="iso_codes", domain=DOMAIN)
def language_code(rng: random.Random) -> TaskDraft:
    """Language name -> two-letter ISO 639-1 code."""
    import pycountry

    languages = sorted((lang for lang in pycountry.languages if hasattr(lang, "alpha_2")), key=lambda x: x.alpha_2)
    examples = [Example(lang.name, lang.alpha_2, id=lang.alpha_3) for lang in languages]
    return TaskDraft("generation", "What is the ISO 639-1 code of the language {input}? Answer with the code only.",
                     "Language name to its two-letter ISO 639-1 code (pycountry).", examples, max_new_tokens=4)


@register_task("subdivision_country", family="geography", domain=DOMAIN)
def subdivision_country(rng: random.Random) -> TaskDraft:
    """Which country a region (state, province, county...) belongs to, among four countries."""
    import pycountry

    names = {c.alpha_2: country_name(c) for c in countries()}
    owners: dict[str, set[str]] = {}
    for sub in pycountry.subdivisions:
        owners.setdefault(sub.name, set()).add(sub.country_code)
    # a name several countries use (Santa Cruz, Central) would have more than one right answer
    regions = sorted((name, next(iter(codes))) for name, codes in owners.items()
                     if len(codes) == 1 and is_latin(name) and len(name) <= 30 and name not in names.values())
    examples = []
    for region, code in rng.sample(regions, 700):
        options = with_options(rng, names[code], rng.sample(sorted(names.values()), 8))
        examples.append(Example(f"{region}\n{options_text(options)}", names[code], options))
    return TaskDraft("multiple_choice", "In which country is this region?\nRegion: {input}",
                     "Country of a first-level administrative region (ISO 3166-2 via pycountry).", examples)


@register_task("country_currency", family="geography", domain=DOMAIN)
def country_currency(rng: random.Random) -> TaskDraft:
    """The currency a country uses today, among four CLDR currency names."""
    from babel import Locale
    from babel.numbers import get_territory_currencies

    currency_names = Locale.parse("en").currencies
    pairs = []
    for country in countries():
        current = [c for c in get_territory_currencies(country.alpha_2, start_date=CURRENCY_DATE)
                   if c in currency_names]
        if current:
            pairs.append((country_name(country), currency_names[current[0]], country.alpha_2))
    pool = sorted({currency for _, currency, _ in pairs})
    examples = []
    for name, currency, code in pairs:
        options = with_options(rng, currency, rng.sample(pool, 8))
        examples.append(Example(f"{name}\n{options_text(options)}", currency, options, id=code))
    return TaskDraft("multiple_choice", "Which currency does this country use?\nCountry: {input}",
                     "Currency of a country (babel CLDR territory currencies, pycountry names).", examples)


@register_task("country_language", family="geography", domain=DOMAIN)
def country_language(rng: random.Random) -> TaskDraft:
    """The official language most of a country's people speak, among four CLDR language names; no distractor
    is a language the country's people speak at all (Canada's options never hold both English and French)."""
    from babel import Locale
    from babel.core import get_global

    language_names = Locale.parse("en").languages
    spoken = get_global("territory_languages")
    rows = []
    for country in countries():
        languages = spoken.get(country.alpha_2, {})
        official = [(info["population_percent"], code) for code, info in languages.items()
                    if (info.get("official_status") or "").endswith("official") and code in language_names]
        if official:
            known = {language_names[code] for code in languages if code in language_names}
            rows.append((country_name(country), language_names[max(official)[1]], country.alpha_2, known))
    pool = sorted({language for _, language, _, _ in rows})
    examples = []
    for name, language, code, known in rows:
        options = with_options(rng, language, [other for other in rng.sample(pool, 10) if other not in known])
        examples.append(Example(f"{name}\n{options_text(options)}", language, options, id=code))
    return TaskDraft("multiple_choice", "Which official language do most people in this country speak?\n"
                     "Country: {input}",
                     "Most widely spoken official language of a country (babel CLDR territory languages).", examples)


@register_task("flag_country", family="emoji", domain=DOMAIN)
def flag_country(rng: random.Random) -> TaskDraft:
    """Which country a flag emoji stands for, among four countries."""
    names = sorted(country_name(c) for c in countries())
    examples = []
    for country in countries():
        options = with_options(rng, country_name(country), rng.sample(names, 8))
        examples.append(Example(f"{country.flag}\n{options_text(options)}", country_name(country), options,
                                id=country.alpha_2))
    return TaskDraft("multiple_choice", "Which country has this flag?\nFlag: {input}",
                     "Country of a flag emoji (pycountry).", examples)
