"""The one run-filter grammar: the run table (experiments.run_table), GET /api/runs
and the MLflow adapter's runs/search read a filter with it, and it never turns a parsed filter
back into text.

A filter is clauses joined by AND (any case), each `<key> <op> <value>`, after MLflow's
search syntax (mlflow.utils.search_utils.SearchUtils):

    key    metrics.<key>, params.<name>, tags.<name>, attributes.<name> (also metric., param.,
           parameter(s)., tag., attribute., attr., run.); a name with spaces or other
           characters in backquotes or quotes: metrics.`my key`, `metrics`.`my key`,
           params."my name". A bare name is an attribute: queued_at, started_at,
           finished_at, status.
    op     = != < <= > >=, LIKE, ILIKE (% any text, _ one character), IN (...), NOT IN (...),
           IS NULL, IS NOT NULL
    value  a number, a quoted string ('...' or "...", the quote doubled inside: 'it''s'),
           true or false, or bare text up to the next AND (`tags.stage = final`); IN takes a
           parenthesised list of them: params.optim IN ('adamw', 'sgd')

A filter is at most MAX_LENGTH characters, checked before anything else reads it, and
reading one takes time linear in its length (one pass of the tokenizer, whose patterns never
backtrack across what they already matched). Numbers are bounded as every client number is
(finetune_hub.bounds): an integer past int64 or a number that is not finite is an error
naming the clause, not a value for the database.

`parse` reads the syntax into Clauses whose values are Literals (the text and whether it was
quoted); `checked` gives each the run table's meaning (which operators a kind takes, a
metric's number, a date, a status) with Python values; `quote` is the quoting rule."""

import re
from dataclasses import dataclass, replace
from typing import Any

from finetune_hub.bounds import INTEGER, NUMBER, as_datetime, as_float, as_int
from finetune_hub.errors import invalid

MAX_LENGTH = 4000  # characters of a filter
MAX_CLAUSES = 20
MAX_LIST = 100  # values in one IN list

KINDS = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "parameter": "params",
    "parameters": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attributes",
    "attributes": "attributes",
    "attr": "attributes",
    "run": "attributes",
}
COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")
TEXT_OPS = ("LIKE", "ILIKE")
LIST_OPS = ("IN", "NOT IN")
NULL_OPS = ("IS NULL", "IS NOT NULL")
OPERATORS = (*COMPARISONS, *TEXT_OPS, *LIST_OPS, *NULL_OPS)
# Which operators each kind takes in the run table.
KIND_OPS = {
    "metrics": (*COMPARISONS, *NULL_OPS),
    "params": OPERATORS,
    "tags": OPERATORS,
}
DATES = ("queued_at", "started_at", "finished_at")
STATUS = "status"
# A key names what a run logs: letters, digits, _ . - / : and spaces (experiments.tracked).
KEY = re.compile(r"[A-Za-z0-9_.\-/: ]{1,250}")

TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
    |(?P<backquoted>`(?:[^`]|``)*`)
    |(?P<op><=|>=|!=|=|<|>)
    |(?P<punct>[(),])
    |(?P<word>(?:[^\s'"`(),=<>!]|!(?!=))+)
    """,
    re.X,
)
FORMS = (
    "expected metrics.<key> <op> <value>, params.<name> <op> <value>, tags.<name> <op> <text> "
    "(op one of = != < <= > >=, LIKE, ILIKE, IN (...), NOT IN (...), IS NULL, IS NOT NULL) "
    "or queued_at|started_at|finished_at <op> <date> (op one of < <= > >=)"
)


@dataclass(frozen=True)
class Token:
    kind: str  # string, backquoted, op, punct, word
    text: str  # as written
    start: int
    end: int

    @property
    def value(self) -> str:
        """A quoted token's content (a doubled quote is one), else the text."""
        if self.kind in ("string", "backquoted"):
            q = self.text[0]
            return self.text[1:-1].replace(q * 2, q)
        return self.text


@dataclass(frozen=True)
class Literal:
    """A value as written: its text, and whether it was quoted (a quoted value is text)."""

    text: str
    quoted: bool = False

    def coerced(self):
        """The value: quoted, the text; bare, true/false, an int, a float or else the text."""
        return self.text if self.quoted else literal(self.text)


@dataclass(frozen=True)
class Clause:
    kind: str  # metrics | params | tags | attributes
    key: str
    op: str  # one of OPERATORS
    # parse: a Literal, a tuple of them (IN, NOT IN) or None (IS NULL, IS NOT NULL);
    # checked: the Python value (a number, text, a date-time, a tuple of them)
    value: Any
    number: int = 1  # the clause's place in the filter, from 1
    text: str = ""  # the clause as written, for messages


def literal(text: str):
    """A bare value: true/false, an int (ASCII digits), a float (it has . e or E), else the
    text. ValueError for a number out of range (past int64, or not finite)."""
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if INTEGER.fullmatch(text):
        return as_int(text)
    if NUMBER.fullmatch(text):
        return as_float(text)
    return text


def quote(text: str) -> str:
    """`text` as a quoted filter value that parses back to exactly `text`."""
    return "'" + text.replace("'", "''") + "'"


def quote_key(text: str) -> str:
    """`text` as a backquoted key."""
    return "`" + text.replace("`", "``") + "`"


def _error(number: int, text: str, problem: str):
    where = f"filter clause {number}" + (f" ({text[:60]!r})" if text else "")
    return invalid(f"{where}: {problem}", field="filter", status=422)


def tokenize(text: str) -> list[Token]:
    """The filter's tokens (spaces dropped); a quote left open is an error naming where."""
    out, at = [], 0
    while at < len(text):
        match = TOKEN.match(text, at)
        if match is None:  # only an open quote matches nothing
            # the clause it is in: count the ANDs read so far (a regex over text[:at] for
            # them was quadratic in a run of spaces)
            number = 1 + sum(t.kind == "word" and t.text.lower() == "and" for t in out)
            raise _error(number, "", f"the {text[at]} at character {at + 1} is never closed")
        if match.lastgroup != "space":
            out.append(Token(match.lastgroup, match.group(), match.start(), match.end()))
        at = match.end()
    return out


def _clauses(tokens: list[Token]) -> list[list[Token]]:
    out: list[list[Token]] = [[]]
    for token in tokens:
        if token.kind == "word" and token.text.lower() == "and":
            out.append([])
        else:
            out[-1].append(token)
    return out


def parse(text: str) -> list[Clause]:
    """The clauses of a filter (none for an empty one), values as Literals."""
    text = text or ""
    if len(text) > MAX_LENGTH:
        raise invalid(
            f"filter: at most {MAX_LENGTH:,} characters (this one has {len(text):,})",
            field="filter",
            status=422,
        )
    if not text.strip():
        return []
    groups = _clauses(tokenize(text))
    if len(groups) > MAX_CLAUSES:
        raise invalid(f"filter: at most {MAX_CLAUSES} clauses", field="filter", status=422)
    return [_clause(text, tokens, n) for n, tokens in enumerate(groups, start=1)]


def _clause(source: str, tokens: list[Token], number: int) -> Clause:
    if not tokens:
        raise _error(number, "", "an empty clause (AND with nothing on one side)")
    text = source[tokens[0].start : tokens[-1].end]

    def fail(problem: str):
        return _error(number, text, problem)

    kind, key, at = _key(tokens, fail)
    op, at = _operator(tokens, at, fail)
    rest = tokens[at:]
    if op in NULL_OPS:
        if rest:
            raise fail(f"nothing follows {op}")
        value = None
    elif op in LIST_OPS:
        value = _list(rest, op, fail)
    elif not rest:
        raise fail(f"a value is missing after {op}")
    elif len(rest) == 1 and rest[0].kind == "string":
        value = Literal(rest[0].value, quoted=True)
    elif rest[0].kind in ("op", "punct") or any(t.kind == "backquoted" for t in rest):
        raise fail(f"{source[rest[0].start : rest[-1].end][:40]!r} is not a value")
    else:  # bare text, as written, up to the next AND
        value = Literal(source[rest[0].start : rest[-1].end])
    return Clause(kind, key, op, value, number, text)


def _key(tokens: list[Token], fail) -> tuple[str, str, int]:
    """(kind, key, tokens used) of the identifier the clause starts with: its pieces touch
    (no space between them)."""
    pieces = [tokens[0]]
    while (
        len(pieces) < len(tokens)
        and tokens[len(pieces)].start == pieces[-1].end
        and tokens[len(pieces)].kind in ("word", "string", "backquoted")
    ):
        pieces.append(tokens[len(pieces)])
    shape = [p.kind for p in pieces]
    written = "".join(p.text for p in pieces)
    if shape == ["word"]:
        prefix, dot, name = pieces[0].text.partition(".")
        prefix, name = (prefix, name) if dot else (None, prefix)
    elif shape == ["backquoted"]:
        prefix, name = None, pieces[0].value
    elif shape in (["word", "string"], ["word", "backquoted"]) and pieces[0].text.endswith("."):
        prefix, name = pieces[0].text[:-1], pieces[1].value
    elif shape == ["backquoted", "word"] and pieces[1].text.startswith("."):
        prefix, name = pieces[0].value, pieces[1].text[1:]
    elif (
        shape in (["backquoted", "word", "backquoted"], ["backquoted", "word", "string"])
        and pieces[1].text == "."
    ):
        prefix, name = pieces[0].value, pieces[2].value
    else:
        raise fail(f"{written[:60]!r} is not a key: {FORMS}")
    if prefix is None:
        kind = "attributes"
    elif prefix in KINDS:
        kind = KINDS[prefix]
    else:
        raise fail(
            f"{prefix[:40]!r} is not a kind of key (metrics, params, tags or attributes): {FORMS}"
        )
    if not KEY.fullmatch(name):
        raise fail(
            f"{name[:60]!r} is not a key name (1 to 250 letters, digits, _ . - / : or spaces)"
        )
    return kind, name, len(pieces)


def _operator(tokens: list[Token], at: int, fail) -> tuple[str, int]:
    words = [t.text.upper() if t.kind == "word" else None for t in tokens[at : at + 3]]
    if at < len(tokens) and tokens[at].kind == "op":
        return tokens[at].text, at + 1
    for op in ("IS NOT NULL", "IS NULL", "NOT IN", "LIKE", "ILIKE", "IN"):
        parts = op.split()
        if words[: len(parts)] == parts:
            return op, at + len(parts)
    found = f"found {tokens[at].text[:40]!r}" if at < len(tokens) else "found nothing"
    raise fail(f"expected an operator ({' '.join(OPERATORS)}) after the key, {found}")


def _list(tokens: list[Token], op: str, fail) -> tuple[Literal, ...]:
    """( value, value, ... ): each a quoted string or one bare word."""
    if len(tokens) < 3 or tokens[0].text != "(" or tokens[-1].text != ")":
        raise fail(f"{op} takes a list in parentheses: {op} ('a', 'b')")
    items, inner = [], tokens[1:-1]
    for i, token in enumerate(inner):
        if i % 2:
            if token.text != ",":
                raise fail(f"{op} (...): values are separated by commas")
        elif token.kind == "string":
            items.append(Literal(token.value, quoted=True))
        elif token.kind == "word":
            items.append(Literal(token.text))
        else:
            raise fail(f"{op} (...): {token.text[:40]!r} is not a value")
    if len(inner) % 2 == 0:
        raise fail(f"{op} (...): a value is missing after the last comma")
    if len(items) > MAX_LIST:
        raise fail(f"{op} (...): at most {MAX_LIST} values")
    return tuple(items)


# ---------------------------------------------------------------------- the run table's meaning


def when(text: str, number: int):
    """A filter's date or date-time (ISO 8601; UTC when it names no zone), as UTC."""
    try:
        return as_datetime(text)
    except ValueError:
        raise invalid(
            f"filter clause {number}: {text[:40]!r} is not a date in years 1 to 9999, in UTC "
            "or a zone (2026-11-29 or 2026-11-29T08:00)",
            field="filter",
            status=422,
        ) from None


def checked(clauses: list[Clause], statuses=()) -> list[Clause]:
    """The clauses with the run table's meaning, values as Python values: a metric compares
    to a number; a parameter to its value (a bare one coerced: 0.01 is a number, true a
    boolean), a tag to text; queued_at, started_at and finished_at to a date with < <= > >=;
    status (one of `statuses`) with = != IN NOT IN. A bad one is a 422 naming it."""
    if len(clauses) > MAX_CLAUSES:
        raise invalid(f"filter: at most {MAX_CLAUSES} clauses", field="filter", status=422)
    return [_checked(c, statuses) for c in clauses]


def _checked(c: Clause, statuses) -> Clause:
    def fail(problem: str):
        return _error(c.number, c.text, problem)

    items = c.value if isinstance(c.value, tuple) else (c.value,)
    if c.kind == "attributes":
        if c.key in DATES:
            if c.op not in ("<", "<=", ">", ">="):
                raise fail(f"{c.key} compares to a date with < <= > >=")
            return replace(c, value=when(c.value.text.strip(), c.number))
        if c.key == STATUS:
            if c.op not in ("=", "!=", *LIST_OPS):
                raise fail("status compares with = != IN NOT IN")
            texts = tuple(i.text.strip() for i in items)
            if bad := [t for t in texts if t not in statuses]:
                raise fail(f"{bad[0][:40]!r} is not a status (one of {', '.join(statuses)})")
            return replace(c, value=texts if c.op in LIST_OPS else texts[0])
        raise fail(
            f"{c.key[:40]!r} is not an attribute (queued_at, started_at, finished_at or status): "
            f"{FORMS}"
        )
    if c.op not in KIND_OPS[c.kind]:
        raise fail(f"{c.kind} compare with {' '.join(KIND_OPS[c.kind])}, not {c.op}")
    if c.value is None:
        return c
    if c.op in TEXT_OPS:
        return replace(c, value=c.value.text)
    if c.kind == "tags":  # tags are text: compared as text
        values = tuple(i.text for i in items)
    else:
        try:
            values = tuple(i.coerced() for i in items)
        except ValueError as exc:
            raise fail(f"a number out of range: {exc}") from None
    if c.kind == "metrics" and not all(isinstance(v, int | float) for v in values):
        raise fail("a metric compares to a number")
    return replace(c, value=values if c.op in LIST_OPS else values[0])


def like_regex(pattern: str) -> str:
    """A LIKE pattern (% any text, _ one character) as a regular expression both SQLite's
    and PostgreSQL's regex lookups read alike."""
    out = []
    for ch in pattern:
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        elif ch in r"\.^$*+?{}[]|()":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "^" + "".join(out) + "$"
