"""Random JSON objects for the ledger's canonical-form tests, rich in what
tells JSON serialisers apart: escapes, characters beyond the BMP and from
U+E000 (which sort differently by code point and by UTF-16 code unit), and
numbers at the edges of their written forms."""

from __future__ import annotations

import random
from typing import Any

# Strings and numbers where Python's JSON and RFC 8785 part ways, if anywhere.
CHARACTERS = [
    "a",
    "Z",
    "0",
    " ",
    '"',
    "\\",
    "\n",
    "\t",
    "\x00",
    "\x1f",
    "\x7f",
    "é",
    "\u2028",
    "\ud7ff",
    "\ue000",
    "\ufb01",
    "\uffff",
    "\U0001f600",
    "\U0010ffff",
]
NUMBERS: list[int | float] = [
    0,
    1,
    -1,
    2**53 - 1,
    -(2**53 - 1),
    0.1,
    12.5,
    -0.0,
    3.0,
    1e20,
    1e21,
    1e22,
    1.5e-7,
    1e-7,
    1e-6,
    123456789.125,
    1e16,
    1e15,
    5e-324,
    1.7976931348623157e308,
    0.000123,
    1 / 3,
]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(6 if depth < 3 else 4)
    if choice == 0:
        return "".join(rng.choices(CHARACTERS, k=rng.randrange(4)))
    if choice == 1:
        return rng.choice(
            [*NUMBERS, rng.uniform(-1e6, 1e6), rng.random() * 10 ** rng.randint(-30, 30)]
        )
    if choice == 2:
        return rng.choice([True, False, None])
    if choice == 3:
        return rng.randrange(-(10**6), 10**6)
    if choice == 4:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return random_object(rng, depth + 1)


def random_object(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    return {
        "".join(rng.choices(CHARACTERS, k=rng.randrange(1, 3))): random_value(rng, depth)
        for _ in range(rng.randrange(5))
    }
