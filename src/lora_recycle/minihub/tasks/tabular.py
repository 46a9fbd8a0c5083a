"""Tabular facts from scikit-learn's bundled datasets: iris, wine, breast cancer, digits (as ASCII art)."""

from __future__ import annotations

import random
from functools import cache

import numpy as np

from lora_recycle.minihub.tasks.registry import TaskDraft, register_task
from lora_recycle.tasks.format import Example

FAMILY, DOMAIN = "tabular", "science"


def format_measure(value: float) -> str:
    """At most three significant figures, never in exponent form, no trailing zeros.

    >>> format_measure(1065.0), format_measure(14.234), format_measure(6.1), format_measure(0.2654)
    ('1065', '14.2', '6.1', '0.265')
    """
    size = abs(value)
    decimals = 0 if size >= 100 else 1 if size >= 10 else 2 if size >= 1 else 3
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def feature_rows(data: np.ndarray, names: list[str], columns: list[str], labels: dict[str, str]) -> list[str]:
    """One ``"label value, label value"`` line per row, for the chosen columns."""
    index = [names.index(column) for column in columns]
    return [", ".join(f"{labels.get(names[i], names[i])} {format_measure(float(row[i]))}" for i in index)
            for row in data]


@cache
def _dataset(name: str):
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")()


def _classification(name: str, columns: list[str], labels: dict[str, str], classes: tuple[str, ...]) -> list[Example]:
    bunch = _dataset(name)
    names = [str(n) for n in bunch.feature_names]
    texts = feature_rows(bunch.data, names, columns, labels)
    targets = [classes[int(y)] for y in bunch.target]
    rows = enumerate(zip(texts, targets, strict=True))
    return [Example(text, target, classes, id=f"{name}-{i}") for i, (text, target) in rows]


@register_task("iris_species", family=FAMILY, domain=DOMAIN)
def iris_species(rng: random.Random) -> TaskDraft:
    """Fisher's iris flowers (150 rows): species from four measurements."""
    labels = {"sepal length (cm)": "sepal length", "sepal width (cm)": "sepal width",
              "petal length (cm)": "petal length", "petal width (cm)": "petal width"}
    examples = _classification("iris", list(labels), labels, ("setosa", "versicolor", "virginica"))
    return TaskDraft("multiple_choice", "Iris flower measured in cm: {input}.\n"
                     "Which species is it: setosa, versicolor or virginica?",
                     "Iris species from sepal and petal measurements (scikit-learn iris).", examples)


@register_task("wine_cultivar", family=FAMILY, domain=DOMAIN)
def wine_cultivar(rng: random.Random) -> TaskDraft:
    """UCI wine recognition (178 rows): which of three cultivars from five chemical measurements."""
    labels = {"color_intensity": "colour intensity"}
    columns = ["alcohol", "flavanoids", "color_intensity", "hue", "proline"]
    examples = _classification("wine", columns, labels, ("A", "B", "C"))
    return TaskDraft("multiple_choice", "Chemical analysis of an Italian wine: {input}.\n"
                     "Which of three cultivars (A, B or C) grew its grapes?",
                     "Wine cultivar from five chemical measurements (scikit-learn wine).", examples)


@register_task("breast_cancer_diagnosis", family=FAMILY, domain=DOMAIN)
def breast_cancer_diagnosis(rng: random.Random) -> TaskDraft:
    """Wisconsin diagnostic breast cancer (569 rows): malignant or benign from three nucleus features.

    Three of the most telling features keep prompts short: digits tokenise one by one, and six features made
    this task's training steps 3x a short task's (``bench/adapter_cost.py``).
    """
    columns = ["worst area", "worst concave points", "mean texture"]
    examples = _classification("breast_cancer", columns, {}, ("malignant", "benign"))
    return TaskDraft("multiple_choice", "Cell nuclei measured in a breast mass biopsy: {input}.\n"
                     "Is the tumour malignant or benign?",
                     "Breast tumour diagnosis from nucleus measurements (scikit-learn breast_cancer).", examples)


def digit_art(pixels: np.ndarray) -> str:
    """An 8x8 digit image (values 0-16) as eight lines of ``.``, ``+`` and ``#``."""
    shades = np.where(pixels >= 11, "#", np.where(pixels >= 5, "+", "."))
    return "\n".join("".join(row) for row in shades.reshape(8, 8))


@register_task("digits_ascii", family=FAMILY, domain=DOMAIN)
def digits_ascii(rng: random.Random) -> TaskDraft:
    """UCI handwritten digits (1797 8x8 images) drawn as ASCII art: which digit."""
    bunch = _dataset("digits")
    examples = [Example(digit_art(row), str(int(y)), id=f"digits-{i}")
                for i, (row, y) in enumerate(zip(bunch.data, bunch.target, strict=True))]
    return TaskDraft("generation", "An 8x8 picture of a handwritten digit ('#' dark, '+' grey, '.' blank):\n"
                     "{input}\nWhich digit is it? Answer with the digit only.",
                     "Handwritten digit recognition from 8x8 ASCII art (scikit-learn digits).", examples,
                     max_new_tokens=3)
