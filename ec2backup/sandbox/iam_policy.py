"""IAM's evaluation of identity-based policies, as AWS documents it ("Policy evaluation logic",
"IAM JSON policy elements: Condition operators"), for one (action, resource ARN, request
context) at a time. Pure: no moto, no I/O; ``iam_requests.py`` says which pairs a call needs
and with which context keys.

* An explicit ``Deny`` in any statement that matches wins; else an ``Allow`` that matches
  allows; else the request is implicitly denied.
* ``Action``/``NotAction`` match case-insensitively, ``Resource``/``NotResource``
  case-sensitively, both with ``*`` and ``?`` wildcards; policy variables (``${aws:username}``,
  ``${*}``...) are replaced from the context first.
* Conditions: every operator block and every key in it must hold (AND); the values listed for
  one key are alternatives (OR). A key missing from the context makes the condition false,
  except for ``...IfExists`` operators (true), the negated operators (``StringNotEquals``,
  ``ArnNotLike``, ``NotIpAddress``... true), ``Null`` (true when it asks ``"true"``) and
  ``ForAllValues:`` (true: nothing to check). ``ForAnyValue:`` needs one context value to
  match, ``ForAllValues:`` all of them. Condition key names are case-insensitive.

Why not principalmapper's local simulation: it is AGPL (this project is MIT), unmaintained
since 2022, and answers ``StringNotLike`` on a missing key with false where AWS says true.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

# A context value: one string, or several (aws:TagKeys).
ContextValue = str | Sequence[str]


class Decision(Enum):
    ALLOWED = "allowed"
    IMPLICIT_DENY = "implicit-deny"  # no statement allows
    EXPLICIT_DENY = "explicit-deny"  # a Deny statement matched


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _wildcard(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    parts = ("." if ch == "?" else ".*" if ch == "*" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def matches(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM's wildcard match: ``*`` any run of characters (``:`` and ``/`` included), ``?`` one."""
    return _wildcard(pattern, ignore_case=ignore_case).fullmatch(value) is not None


_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def substitute(text: str, context: Mapping[str, ContextValue]) -> str:
    """``${aws:username}`` and the like from the context; ``${*}``, ``${?}``, ``${$}`` as the
    literal characters. A variable the context lacks leaves the text unmatchable."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in ("*", "?", "$"):
            return name
        key, _, default = name.partition(",")
        value = _lookup(context, key.strip())
        if value is None:
            default = default.strip().strip("'")
            return default if default else "\0no such variable\0"
        return value if isinstance(value, str) else ",".join(value)

    return _VARIABLE.sub(one, text)


def _lookup(context: Mapping[str, ContextValue], key: str) -> ContextValue | None:
    wanted = key.lower()
    for name, value in context.items():
        if name.lower() == wanted:
            return value
    return None


# --- condition operators ---------------------------------------------------------------------


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _as_date(text: str) -> datetime | None:
    try:
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return datetime.fromtimestamp(float(text), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _compare(kind: str, test: str, context: str, policy: str) -> bool:
    """One context value against one policy value, for the positive form of the operator."""
    if kind == "String":
        if test == "Equals":
            return context == policy
        if test == "EqualsIgnoreCase":
            return context.lower() == policy.lower()
        if test == "Like":
            return matches(policy, context)
    elif kind in ("Numeric", "Date"):
        convert = _as_number if kind == "Numeric" else _as_date
        a, b = convert(context), convert(policy)
        if a is None or b is None:
            return False
        return {
            "Equals": a == b,
            "LessThan": a < b,  # type: ignore[operator]
            "LessThanEquals": a <= b,  # type: ignore[operator]
            "GreaterThan": a > b,  # type: ignore[operator]
            "GreaterThanEquals": a >= b,  # type: ignore[operator]
        }.get(test, False)
    elif kind == "Bool":
        return context.lower() == policy.lower()
    elif kind == "Binary":
        return context == policy
    elif kind == "IpAddress":
        try:
            return ipaddress.ip_address(context) in ipaddress.ip_network(policy, strict=False)
        except ValueError:
            return False
    elif kind == "Arn":
        # ArnEquals and ArnLike behave alike: wildcards over the whole ARN.
        return context.count(":") >= 5 and matches(policy, context)
    return False


_OPERATOR = re.compile(
    r"^(?:(?P<set>ForAllValues|ForAnyValue):)?"
    r"(?P<kind>String|Numeric|Date|Bool|Binary|Arn|IpAddress|NotIpAddress|Null)"
    r"(?P<not>Not)?(?P<test>EqualsIgnoreCase|Equals|Like|LessThanEquals|LessThan|"
    r"GreaterThanEquals|GreaterThan)?(?P<ifexists>IfExists)?$"
)


class PolicyError(ValueError):
    """A policy this evaluator cannot read (AWS would have refused to store it)."""


def condition_holds(
    operator: str, key: str, policy_values: Any, context: Mapping[str, ContextValue]
) -> bool:
    parsed = _OPERATOR.match(operator)
    if parsed is None:
        raise PolicyError(f"unknown condition operator {operator!r}")
    kind = parsed["kind"]
    negated = bool(parsed["not"]) or kind == "NotIpAddress"
    if kind == "NotIpAddress":
        kind = "IpAddress"
    test = parsed["test"] or ""
    wanted = [substitute(str(v), context) for v in _listed(policy_values)]
    found = _lookup(context, key)
    if kind == "Null":
        present = found is not None and (isinstance(found, str) or len(found) > 0)
        return any((w.lower() == "true") != present for w in wanted)
    values = [] if found is None else [found] if isinstance(found, str) else list(found)
    if not values:
        if parsed["set"] == "ForAllValues":
            return True
        if parsed["set"] == "ForAnyValue":
            return False
        return bool(parsed["ifexists"]) or negated

    def one_matches(value: str) -> bool:
        return any(_compare(kind, test, value, w) for w in wanted)

    if parsed["set"] == "ForAllValues":
        return all(one_matches(v) != negated for v in values)
    if parsed["set"] == "ForAnyValue":
        return any(one_matches(v) != negated for v in values)
    if negated:
        return not any(one_matches(v) for v in values)
    return any(one_matches(v) for v in values)


def conditions_hold(
    condition: Mapping[str, Mapping[str, Any]], context: Mapping[str, ContextValue]
) -> bool:
    return all(
        condition_holds(operator, key, values, context)
        for operator, keys in condition.items()
        for key, values in keys.items()
    )


# --- statements and policies -----------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One authorization AWS makes for a call: an action on one resource, with the context
    keys that exist for it."""

    action: str  # "ec2:RunInstances"
    resource: str  # an ARN, or "*" for actions without resource types
    context: Mapping[str, ContextValue]


def _statement_applies(statement: Mapping[str, Any], request: Request) -> bool:
    def action_in(names: Any) -> bool:
        return any(matches(a, request.action, ignore_case=True) for a in _listed(names))

    if "Action" in statement:
        if not action_in(statement["Action"]):
            return False
    elif "NotAction" in statement:
        if action_in(statement["NotAction"]):
            return False
    else:
        return False
    if "Resource" in statement:
        patterns = [substitute(str(r), request.context) for r in _listed(statement["Resource"])]
        if not any(matches(p, request.resource) for p in patterns):
            return False
    elif "NotResource" in statement:
        patterns = [substitute(str(r), request.context) for r in _listed(statement["NotResource"])]
        if any(matches(p, request.resource) for p in patterns):
            return False
    else:
        return False
    return conditions_hold(statement.get("Condition") or {}, request.context)


def decide(policies: Iterable[Mapping[str, Any]], request: Request) -> Decision:
    """The decision for ``request`` under the identity's ``policies`` (parsed JSON documents)."""
    allowed = False
    for policy in policies:
        for statement in _listed(policy.get("Statement")):
            if not _statement_applies(statement, request):
                continue
            if statement.get("Effect") == "Deny":
                return Decision.EXPLICIT_DENY
            if statement.get("Effect") == "Allow":
                allowed = True
    return Decision.ALLOWED if allowed else Decision.IMPLICIT_DENY
