"""Small, distinct example files in each format."""

import csv
import io
import json
import random

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "maple",
    "ember",
    "quartz",
    "willow",
    "falcon",
    "harbor",
    "lantern",
    "meadow",
    "copper",
    "violet",
    "summit",
    "canyon",
]


def phrase(i: int) -> str:
    # Distinct word sequences, so near-duplicate detection stays quiet unless asked.
    return " ".join(random.Random(i).sample(WORDS, 8)) + f" case {i}"


def record(fmt: str, i: int) -> dict:
    text = phrase(i)
    return {
        "instruction": {
            "instruction": f"Summarise: {text}",
            "input": "",
            "output": f"S{i}: {text[:12]}",
        },
        "chat": {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"What is {text}?"},
                {"role": "assistant", "content": f"It is item {i}."},
            ]
        },
        "completion": {"prompt": f"Continue: {text}", "completion": f" and then {i}"},
        "classification": {"text": text, "label": ["pos", "neg"][i % 2]},
        "preference": {
            "prompt": f"Describe {text}",
            "chosen": f"A clear answer {i}",
            "rejected": f"meh {i}",
        },
    }[fmt]


def jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def examples(fmt: str, n: int = 120) -> list[dict]:
    return [record(fmt, i) for i in range(n)]


def as_csv(records) -> str:
    out = io.StringIO()
    columns = list(dict.fromkeys(k for r in records for k in r))
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for r in records:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    return out.getvalue()
