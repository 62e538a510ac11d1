"""Records shown as readable fields on dashboard pages, not as Python dicts."""

# What a run recorded of the base model it loaded (inference.base_models.describe and the
# training engine), in the order a reader wants it. The server path is left out of pages.
MODEL_INFO_LABELS = {
    "ref": "Base model",
    "source": "Source",
    "revision": "Hub revision",
    "gguf_sha256": "GGUF file SHA-256",
    "files_sha256": "Weight files SHA-256",
    "dtype": "Loaded as",
    "device": "Device",
}
HIDDEN = {"path"}


def model_info_rows(info: dict) -> list[tuple[str, str]]:
    """(label, text) for each recorded fact about a base model: a hash shortened to 16
    characters, a file list as "name sha256" lines, a key without a label under its name."""
    rows = []
    keys = [k for k in MODEL_INFO_LABELS if k in info] + sorted(
        k for k in info if k not in MODEL_INFO_LABELS and k not in HIDDEN
    )
    for key in keys:
        value = info[key]
        if isinstance(value, dict):
            text = "\n".join(f"{name} {_short(v)}" for name, v in sorted(value.items()))
        else:
            text = _short(value) if key.endswith("sha256") else str(value)
        rows.append((MODEL_INFO_LABELS.get(key, key.replace("_", " ")), text))
    return rows


def _short(value) -> str:
    text = str(value)
    is_hex = all(c in "0123456789abcdef" for c in text)
    return f"{text[:16]}…" if len(text) > 16 and is_hex else text


def in_field_order(values: dict, fields) -> list[tuple[str, object]]:
    """A stored settings dict as (name, value) pairs in its schema's field order, then any
    other keys by name: PostgreSQL's jsonb keeps keys in its own order (shortest first), so
    a page that showed the dict as stored would differ between the two databases."""
    known = [(name, values[name]) for name in fields if name in values]
    return known + sorted((k, v) for k, v in values.items() if k not in fields)
