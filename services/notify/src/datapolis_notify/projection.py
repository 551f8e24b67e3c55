"""What of a record is chosen and what of it leaves the platform, the same
for every channel: the subscription's filter (:func:`matches`), the data
subject a record is about (:func:`subject_id`), and the field projection.

An agreement grants fields by path, as consent records them from the
dataset's schema: ``kwh`` (a whole field, nested objects included) or
``address.city`` (one member of an object). A subscription may ask for
fewer, by the same kind of paths. A record keeps a value only where every
rule allows it, the agreement's and the subscription's alike; whatever no
rule names is dropped, and a path into something that is not an object
selects nothing. Every channel (webhook, server-sent events, Kafka) projects
through :func:`project`, so the same record never leaves in two shapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# A rule: for each field name, either True (the whole value) or the rule for
# its members.
Rule = dict[str, "Rule | bool"]


def rule_of(paths: Iterable[str]) -> Rule:
    """The rule of a set of dotted paths; a path covers its descendants, so
    ``address`` wins over ``address.city`` whatever their order."""
    root: Rule = {}
    for path in paths:
        node = root
        *parents, last = path.split(".")
        for name in parents:
            child = node.get(name)
            if child is True:
                break
            if not isinstance(child, dict):
                child = {}
                node[name] = child
            node = child
        else:
            node[last] = True
    return root


def project(value: Any, *allowed: frozenset[str] | None) -> Any:
    """``value`` keeping only what every set of paths in ``allowed`` allows
    (``None``: that side allows everything). With nothing to narrow, the
    value is returned as it is; otherwise a value that is not an object
    yields ``{}``."""
    rules = [rule_of(paths) for paths in allowed if paths is not None]
    if not rules:
        return value
    return _apply(value, rules)


def _apply(value: Any, rules: list[Rule]) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {}
    kept: dict[str, Any] = {}
    for name, member in value.items():
        narrower: list[Rule] = []
        for rule in rules:
            allows = rule.get(name)
            if allows is None:
                break
            if isinstance(allows, dict):
                narrower.append(allows)
        else:
            if not narrower:
                kept[name] = member
            elif isinstance(member, dict):
                kept[name] = _apply(member, narrower)
    return kept


def matches(value: Any, filter_: Mapping[str, Any]) -> bool:
    """The subscription's equality filter on top-level fields; an empty
    filter takes every record, a record that is not an object none but
    those of an empty filter."""
    if not filter_:
        return True
    if not isinstance(value, dict):
        return False
    return all(field in value and value[field] == wanted for field, wanted in filter_.items())


def subject_id(value: Any, field: str | None) -> str | None:
    """The data subject a record is about: its subject field's string or
    integer value. Anything else (absent, null, a boolean, an object) is no
    subject, and a personal record without one is never delivered."""
    if field is None or not isinstance(value, dict):
        return None
    subject = value.get(field)
    if isinstance(subject, bool) or not isinstance(subject, str | int):
        return None
    return str(subject)
