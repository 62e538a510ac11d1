"""Warnings about a dataset that is valid but may train badly. They are stored with the
version and shown; they never block an upload."""

import re
from collections import Counter, defaultdict

from datasketch import MinHash, MinHashLSH

MIN_EXAMPLES = 100
NEAR_DUPLICATE_JACCARD = 0.85
IMBALANCE_RATIO = 5.0
MAX_LINES_LISTED = 20


def warning(code: str, message: str, lines: list[int] | None = None) -> dict:
    out = {"code": code, "message": message}
    if lines:
        out["lines"] = lines[:MAX_LINES_LISTED]
    return out


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", text.lower())).strip()


def _shingles(text: str) -> set[str]:
    words = text.split()
    return {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}


def too_few(n: int) -> list[dict]:
    if n >= MIN_EXAMPLES:
        return []
    return [
        warning(
            "few_examples", f"Only {n} examples; fine-tuning usually wants at least {MIN_EXAMPLES}"
        )
    ]


def duplicates(items: list[tuple[int, str, str]]) -> list[dict]:
    """items: (line, content hash, full text). Exact duplicates share a content hash; near
    duplicates match after normalisation or by MinHash Jaccard similarity of word 3-grams."""
    warnings = []
    by_hash = defaultdict(list)
    for line, digest, _ in items:
        by_hash[digest].append(line)
    exact = [lines for lines in by_hash.values() if len(lines) > 1]
    if exact:
        extra = sum(len(lines) - 1 for lines in exact)
        warnings.append(
            warning(
                "exact_duplicates",
                f"{extra} examples repeat an earlier one exactly",
                [line for lines in exact for line in lines[1:]],
            )
        )
    near = _near_duplicates(
        [(line, text) for line, digest, text in items if by_hash[digest][0] == line]
    )
    if near:
        warnings.append(
            warning(
                "near_duplicates",
                f"{len(near)} examples are near duplicates of an earlier one "
                f"(lines {', '.join(f'{a}~{b}' for a, b in near[:5])}"
                f"{'…' if len(near) > 5 else ''})",
                [b for _, b in near],
            )
        )
    return warnings


def _near_duplicates(items: list[tuple[int, str]]) -> list[tuple[int, int]]:
    lsh = MinHashLSH(threshold=NEAR_DUPLICATE_JACCARD, num_perm=64)
    first_by_text, pairs = {}, []
    for line, text in items:
        norm = _normalised(text)
        if norm in first_by_text:
            pairs.append((first_by_text[norm], line))
            continue
        first_by_text[norm] = line
        shingles = _shingles(norm)
        if len(shingles) < 3:  # too short for set similarity to mean anything
            continue
        minhash = MinHash(num_perm=64, seed=1)
        minhash.update_batch([s.encode() for s in shingles])
        if match := lsh.query(minhash):
            pairs.append((min(match), line))
        else:
            lsh.insert(line, minhash)
    return pairs


def split_overlap(items: list[tuple[int, str, str]]) -> list[dict]:
    """items: (line, split, prompt). A prompt in train and in eval/test inflates scores."""
    train = {_normalised(p) for _, split, p in items if split == "train"}
    leaked = [line for line, split, p in items if split != "train" and _normalised(p) in train]
    if not leaked:
        return []
    return [
        warning(
            "train_eval_overlap", f"{len(leaked)} eval/test prompts also appear in train", leaked
        )
    ]


def label_imbalance(labels: list[str]) -> list[dict]:
    counts = Counter(labels)
    if len(counts) < 2:
        return []
    (top, most), (bottom, least) = counts.most_common()[0], counts.most_common()[-1]
    if most / least < IMBALANCE_RATIO:
        return []
    return [
        warning(
            "label_imbalance",
            f"Labels are imbalanced: {top!r} has {most} examples, "
            f"{bottom!r} only {least} ({most / least:.1f}x)",
        )
    ]
