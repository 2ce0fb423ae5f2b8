"""bortify's one number formatter (`fmt`): reported values as text for cards, reports and summaries, with the
parameter-count and ratio phrases built on it.

A low floor: imports nothing from bortify but bortify.utils.
"""

from __future__ import annotations

from typing import Any

from bortify.utils import json_text

NOT_MEASURED = "not measured"
NOT_APPLICABLE = "n/a"  # a figure the thing measured does not have (e.g. a BERT-shape figure of a non-BERT config)


def fmt(value: Any, digits: int | str = 4, *, missing: str = NOT_MEASURED) -> str:
    """A reported value as text; a missing value as `missing`.

    `digits` as a number: a float gets that many significant digits, an int thousands separators, a bool is
    lower-case, a dict or list is JSON, and None, "" and {} are missing. `digits` as a format spec (Python's
    mini-language, e.g. ".4f", ".1%"): the value is formatted by it, and only None is missing.
    """
    if isinstance(digits, str):
        return missing if value is None else format(value, digits)
    if value is None or value == "" or value == {}:
        return missing
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (dict, list)):
        return json_text(value)
    return str(value)


def fmt_params(n: int | None) -> str:
    """A parameter count: '22.71M' from 100,000 up, else '17,088'."""
    if not n:
        return NOT_MEASURED
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


def ratio(a, b) -> str:
    """a / b as a percentage ('25.0%'), or not measured."""
    return f"{a / b:.1%}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else NOT_MEASURED
