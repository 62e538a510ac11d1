"""Word-level differences between two texts, marked for a page: the A/B side-by-side view
and the dataset version diff use it."""

import difflib

from django.utils.html import escape
from django.utils.safestring import mark_safe


def word_diff(a: str, b: str) -> tuple[str, str]:
    """Both texts with the words the other lacks marked (<del> in a, <ins> in b), escaped."""
    left, right = a.split(), b.split()
    out_a, out_b = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=left, b=right).get_opcodes():
        chunk_a, chunk_b = escape(" ".join(left[i1:i2])), escape(" ".join(right[j1:j2]))
        if op == "equal":
            out_a.append(chunk_a)
            out_b.append(chunk_b)
            continue
        if chunk_a:
            out_a.append(f"<del>{chunk_a}</del>")
        if chunk_b:
            out_b.append(f"<ins>{chunk_b}</ins>")
    return mark_safe(" ".join(out_a)), mark_safe(" ".join(out_b))  # noqa: S308 - escaped above
