"""Writes general.jsonl, the general-capability set shipped with the project: short questions
with one canonical answer each (the forgetting check scores them by chrF), in three
categories (common knowledge written by hand, arithmetic and instruction following generated
from a fixed seed). Run it to write the file again; the same file comes out every time:

    .venv/bin/python -m evaluation.general.generate
"""

import json
import random
from pathlib import Path

FILE = Path(__file__).resolve().parent / "general.jsonl"
SPLIT = "eval"  # the split every evaluation path reads by default
SEED = 15
ONE_WORD = "Reply with only the answer."
NUMBER = "Reply with only the number."
LOWER = "Reply with one word in lowercase."
UNIT = "Reply with the unit's name in lowercase."

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Australia": "Canberra",
    "Russia": "Moscow",
    "China": "Beijing",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Poland": "Warsaw",
    "Kenya": "Nairobi",
    "Argentina": "Buenos Aires",
    "Peru": "Lima",
    "Thailand": "Bangkok",
    "Cuba": "Havana",
    "Denmark": "Copenhagen",
    "Hungary": "Budapest",
}
SYMBOLS = {
    "gold": "Au",
    "silver": "Ag",
    "iron": "Fe",
    "sodium": "Na",
    "potassium": "K",
    "oxygen": "O",
    "hydrogen": "H",
    "carbon": "C",
    "nitrogen": "N",
    "helium": "He",
    "copper": "Cu",
    "lead": "Pb",
    "mercury": "Hg",
    "tin": "Sn",
    "calcium": "Ca",
    "neon": "Ne",
    "chlorine": "Cl",
    "sulfur": "S",
    "zinc": "Zn",
    "uranium": "U",
}
# (question, answer): facts that do not change.
FACTS = [
    ("Which planet is closest to the Sun?", "Mercury"),
    ("Which planet is the largest in the Solar System?", "Jupiter"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("Which planet is the third from the Sun?", "Earth"),
    ("Which planet is the second from the Sun?", "Venus"),
    ("Which planet is the farthest from the Sun?", "Neptune"),
    ("Which planet is the hottest in the Solar System?", "Venus"),
    ("How many planets are in the Solar System? " + NUMBER, "8"),
    ("How many legs does a spider have? " + NUMBER, "8"),
    ("How many legs does an insect have? " + NUMBER, "6"),
    ("How many days are in a week? " + NUMBER, "7"),
    ("How many hours are in a day? " + NUMBER, "24"),
    ("How many minutes are in an hour? " + NUMBER, "60"),
    ("How many months are in a year? " + NUMBER, "12"),
    ("How many days are in a leap year? " + NUMBER, "366"),
    ("How many centimetres are in a metre? " + NUMBER, "100"),
    ("How many metres are in a kilometre? " + NUMBER, "1000"),
    ("How many grams are in a kilogram? " + NUMBER, "1000"),
    ("How many millilitres are in a litre? " + NUMBER, "1000"),
    ("How many bits are in a byte? " + NUMBER, "8"),
    ("At how many degrees Celsius does pure water freeze at sea level? " + NUMBER, "0"),
    ("At how many degrees Celsius does pure water boil at sea level? " + NUMBER, "100"),
    ("At how many degrees Fahrenheit does pure water freeze at sea level? " + NUMBER, "32"),
    ("How many degrees are in a right angle? " + NUMBER, "90"),
    ("How many degrees are in a full circle? " + NUMBER, "360"),
    ("What do the angles of a triangle add up to, in degrees? " + NUMBER, "180"),
    ("How many sides does a hexagon have? " + NUMBER, "6"),
    ("How many sides does an octagon have? " + NUMBER, "8"),
    ("How many sides does a pentagon have? " + NUMBER, "5"),
    ("How many letters are in the English alphabet? " + NUMBER, "26"),
    ("How many bones are in the adult human body? " + NUMBER, "206"),
    ("How many chromosomes does a typical human cell have? " + NUMBER, "46"),
    ("How many strings does a standard violin have? " + NUMBER, "4"),
    ("How many players does a football (soccer) team have on the field? " + NUMBER, "11"),
    ("What is the atomic number of hydrogen? " + NUMBER, "1"),
    ("What is the atomic number of helium? " + NUMBER, "2"),
    ("What is the atomic number of carbon? " + NUMBER, "6"),
    ("What is the atomic number of oxygen? " + NUMBER, "8"),
    ("What is the chemical formula of water? " + ONE_WORD, "H2O"),
    ("What is the chemical formula of carbon dioxide? " + ONE_WORD, "CO2"),
    ("What is the SI unit of force? " + UNIT, "newton"),
    ("What is the SI unit of energy? " + UNIT, "joule"),
    ("What is the SI unit of power? " + UNIT, "watt"),
    ("What is the SI unit of frequency? " + UNIT, "hertz"),
    ("What is the SI unit of pressure? " + UNIT, "pascal"),
    ("What is the SI unit of electric current? " + UNIT, "ampere"),
    ("What is the SI unit of electrical resistance? " + UNIT, "ohm"),
    ("What is the SI base unit of temperature? " + UNIT, "kelvin"),
    ("Which is the largest ocean on Earth? Reply with one word.", "Pacific"),
    ("Which is the largest hot desert on Earth? Reply with one word.", "Sahara"),
    ("What is the hardest natural material? " + LOWER, "diamond"),
    ("Which language is mainly spoken in Brazil? " + ONE_WORD, "Portuguese"),
    ("Which language is mainly spoken in Mexico? " + ONE_WORD, "Spanish"),
    ("On which continent is Egypt? " + ONE_WORD, "Africa"),
    ("On which continent is Japan? " + ONE_WORD, "Asia"),
    ("What is the surname of the author of the play Hamlet? " + ONE_WORD, "Shakespeare"),
    ("What is the surname of the physicist who developed general relativity?", "Einstein"),
    ("What colour do you get by mixing blue and yellow paint? " + LOWER, "green"),
    ("What is the opposite of the word hot? " + LOWER, "cold"),
    ("What is the opposite of the word up? " + LOWER, "down"),
    ("What is the plural of the word mouse? " + LOWER, "mice"),
    ("What is the plural of the word child? " + LOWER, "children"),
    ("What is the plural of the word tooth? " + LOWER, "teeth"),
    ("What is the plural of the word goose? " + LOWER, "geese"),
    ("What is the past tense of the verb go? " + LOWER, "went"),
    ("What is the past tense of the verb eat? " + LOWER, "ate"),
    ("What is the past tense of the verb write? " + LOWER, "wrote"),
    ("What is the past tense of the verb see? " + LOWER, "saw"),
]
WORDS = [
    "apple", "river", "garden", "window", "silver", "planet", "orange", "bridge", "forest",
    "candle", "pencil", "rabbit", "castle", "market", "button", "winter", "yellow", "school",
    "doctor", "mirror", "basket", "dragon", "island", "jacket", "kitten", "ladder", "monkey",
    "number", "pepper", "rocket", "summer", "ticket", "violin", "wallet", "zebra", "cloud",
    "bread", "chair", "grape", "horse", "lemon", "music", "ocean", "piano", "stone", "tiger",
]  # fmt: skip
INSTRUCTIONS = [
    ("Reply with only the word {w} in capital letters.", str.upper),
    ("Write the word {w} backwards. Reply with only the result.", lambda w: w[::-1]),
    ("What is the first letter of the word {w}? Reply with only that letter.", lambda w: w[0]),
    ("How many letters are in the word {w}? " + NUMBER, lambda w: str(len(w))),
    (
        "Repeat the word {w} three times, separated by single spaces. Reply with nothing else.",
        lambda w: " ".join([w] * 3),
    ),
]
PER_KIND = 20  # instruction-following questions of each kind


def knowledge() -> list[tuple[str, str]]:
    return [
        *((f"What is the capital of {c}? {ONE_WORD}", a) for c, a in CAPITALS.items()),
        *((f"What is the chemical symbol of {e}? {ONE_WORD}", s) for e, s in SYMBOLS.items()),
        *((q if "Reply" in q else f"{q} {ONE_WORD}", a) for q, a in FACTS),
    ]


def arithmetic(rng: random.Random, n: int = 100) -> list[tuple[str, str]]:
    """Small sums, differences (never negative) and products, each asked once."""
    out: dict[str, str] = {}
    while len(out) < n:
        op = ("+", "-", "*")[len(out) % 3]
        if op == "*":
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            question, answer = f"What is {a} times {b}?", a * b
        else:
            a, b = rng.randint(10, 99), rng.randint(2, 99)
            if op == "-":
                a, b = max(a, b), min(a, b)
            answer = a + b if op == "+" else a - b
            question = f"What is {a} {'plus' if op == '+' else 'minus'} {b}?"
        out.setdefault(f"{question} {NUMBER}", str(answer))
    return list(out.items())


def instruction_following(rng: random.Random) -> list[tuple[str, str]]:
    return [
        (template.format(w=word), answer(word))
        for template, answer in INSTRUCTIONS
        for word in rng.sample(WORDS, PER_KIND)
    ]


def records() -> list[dict]:
    rng = random.Random(SEED)
    categories = {
        "knowledge": knowledge(),
        "arithmetic": arithmetic(rng),
        "instruction_following": instruction_following(rng),
    }
    return [
        {"instruction": q, "output": a, "split": SPLIT, "category": category}
        for category, pairs in categories.items()
        for q, a in pairs
    ]


def write(path: Path = FILE) -> int:
    rows = records()
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return len(rows)


if __name__ == "__main__":
    print(f"{write()} questions written to {FILE}")
