"""The chat format's role rule, checked on conversations of every length against a model of
it in one line: an optional system message, then user and assistant turns in alternation,
at least one pair, ending with the assistant.

The hand-written cases (tests/test_dataset_upload.py, tests/test_validation_errors.py) have
two or three messages, so a check of the first two turns only accepted [user, assistant,
assistant] and they did not notice (issue 27)."""

import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from datasets_app import formats

ROLES = st.sampled_from([*formats.ROLES, "tool"])  # "tool": a role the format does not know
RULE = re.compile(r"(system )?(user assistant )+")


def follows_the_rule(roles: list[str]) -> bool:
    return RULE.fullmatch("".join(f"{role} " for role in roles)) is not None


@st.composite
def conversations(draw) -> list[str]:
    """0 to 12 turns after an optional system message: random roles; or the alternation,
    right, or with one turn's speaker swapped anywhere in it. Random roles alternate
    correctly too rarely to try the long conversations that are right, or those that one
    turn makes wrong. (sampled_from, not integers: hypothesis's integers favour the ends of
    their range, and a swap at either end is what a check of the first turns sees too.)"""
    turns = draw(st.sampled_from(range(13)))
    kind = draw(st.sampled_from(["random", "alternating", "one swapped"]))
    if kind == "random":
        roles = draw(st.lists(ROLES, min_size=turns, max_size=turns))
    else:
        roles = [("user", "assistant")[i % 2] for i in range(turns)]
    if kind == "one swapped" and turns:
        i = draw(st.sampled_from(range(turns)))
        roles[i] = {"user": "assistant", "assistant": "user"}[roles[i]]
    return ["system"] * draw(st.booleans()) + roles


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(conversations())
@example(["user", "assistant", "assistant"])
@example(["system", "user", "assistant", "user", "assistant", "assistant"])
@example(["user", "assistant", "user", "user", "assistant"])
@example(["system", "user", "assistant", "system", "user", "assistant"])
@example(["system"])
@example([])
def test_a_conversation_is_accepted_exactly_when_its_roles_follow_the_rule(roles):
    messages = [{"role": role, "content": f"turn {i}"} for i, role in enumerate(roles)]
    errors = formats.check("chat", {"messages": messages}, 7, [])
    assert (errors == []) == follows_the_rule(roles), roles
    # A refused conversation is one error, on the messages field of its line.
    assert [(e.line, e.field) for e in errors] in ([], [(7, "messages")])
