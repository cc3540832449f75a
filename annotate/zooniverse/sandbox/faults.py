"""Fault injection: rules that match requests and the actions they take (reliability.md F8-F13)."""

from __future__ import annotations

import copy
import re
import threading
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeGuard, get_args

FaultKind = Literal[
    "ok",  # pass the request through untouched (a placeholder inside a sequence)
    "status",  # answer `status` (errors body; Retry-After when `retry_after`) without handling
    "after",  # handle the request (it commits), then answer `status` instead of the real response
    "hang",  # wait `seconds`, then answer normally: longer than the client's read timeout
    "reset",  # close the connection without any response
    "empty_page",  # a list route answers an empty page with next_href null
    "repeat_id",  # a list route's page also carries the previous page's last resource again
    "cut",  # send the full Content-Length, then `fraction` of the body, then close
    "export_stuck",  # on an export POST: the export stays "creating" for good
    "export_stale",  # on an export POST: nothing is regenerated; the older export stays "ready"
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)


def is_fault_kind(value: object) -> TypeGuard[FaultKind]:
    return value in FAULT_KINDS


@dataclass
class FaultAction:
    kind: FaultKind
    status: int = 500
    retry_after: int | None = None
    seconds: float = 0.0
    fraction: float = 0.6
    message: str | None = None


@dataclass
class FaultRule:
    path: str  # regex, searched in the request path
    actions: list[FaultAction]
    method: str = "*"
    params: dict[str, str] = field(default_factory=dict)  # query parameters that must match
    skip: int = 0  # matching requests let through before the first action
    id: int = 0
    hits: int = 0

    def matches(self, method: str, path: str, query: dict[str, str]) -> bool:
        if self.method not in ("*", method.upper()):
            return False
        if not re.search(self.path, path):
            return False
        return all(query.get(k) == str(v) for k, v in self.params.items())


def fault_action(spec: FaultAction | int | str | dict[str, Any]) -> FaultAction:
    if isinstance(spec, FaultAction):
        return spec
    if isinstance(spec, int):
        return FaultAction("status", status=spec)
    if isinstance(spec, str):
        if not is_fault_kind(spec):
            raise ValueError(f"unknown fault kind {spec!r}; use one of {FAULT_KINDS}")
        return FaultAction(spec)
    if spec.get("kind") not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {spec.get('kind')!r}; use one of {FAULT_KINDS}")
    allowed = {f.name for f in fields(FaultAction)}
    return FaultAction(**{k: v for k, v in spec.items() if k in allowed})


class FaultPlan:
    """Thread-safe list of fault rules; ``match`` consumes one action per matching request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._next_id = 1

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            rule.id = self._next_id
            self._next_id += 1
            rule.actions = [fault_action(a) for a in rule.actions]
            self._rules.append(rule)
        return rule

    def rule(
        self,
        path: str,
        *actions: FaultAction | int | str,
        method: str = "*",
        skip: int = 0,
        params: dict[str, str] | None = None,
    ) -> FaultRule:
        return self.add(
            FaultRule(
                path=path,
                actions=[fault_action(a) for a in actions],
                method=method.upper(),
                skip=skip,
                params=dict(params or {}),
            )
        )

    # Shorthands for the fault matrix (reliability.md F8-F13).

    def fail(self, path: str, *statuses: int, skip: int = 0, method: str = "*") -> FaultRule:
        """Answer each status in turn (e.g. 500, 500), then pass requests through."""
        return self.rule(path, *statuses, method=method, skip=skip)

    def throttle(
        self, path: str, retry_after: int = 7, *, times: int = 1, skip: int = 0, method: str = "*"
    ) -> FaultRule:
        action = FaultAction("status", status=429, retry_after=retry_after)
        return self.rule(path, *([action] * times), method=method, skip=skip)

    def hang(
        self, path: str, seconds: float, *, times: int = 1, skip: int = 0, method: str = "*"
    ) -> FaultRule:
        return self.rule(
            path, *([FaultAction("hang", seconds=seconds)] * times), method=method, skip=skip
        )

    def reset(self, path: str, *, times: int = 1, skip: int = 0, method: str = "*") -> FaultRule:
        return self.rule(path, *(["reset"] * times), method=method, skip=skip)

    def fail_after_commit(
        self, path: str, status: int = 502, *, times: int = 1, skip: int = 0, method: str = "POST"
    ) -> FaultRule:
        action = FaultAction("after", status=status)
        return self.rule(path, *([action] * times), method=method, skip=skip)

    def empty_page(self, path: str, *, skip: int = 0, method: str = "GET") -> FaultRule:
        return self.rule(path, "empty_page", method=method, skip=skip)

    def repeat_id(self, path: str, *, skip: int = 0, method: str = "GET") -> FaultRule:
        return self.rule(path, "repeat_id", method=method, skip=skip)

    def export_stuck(self, export_type: str = "classifications") -> FaultRule:
        return self.rule(rf"/{export_type}_export$", "export_stuck", method="POST")

    def export_stale(self, export_type: str = "classifications") -> FaultRule:
        return self.rule(rf"/{export_type}_export$", "export_stale", method="POST")

    def cut_download(
        self,
        fraction: float = 0.6,
        *,
        path: str = r"^/media/exports/",
        times: int = 1,
        skip: int = 0,
    ) -> FaultRule:
        action = FaultAction("cut", fraction=fraction)
        return self.rule(path, *([action] * times), method="GET", skip=skip)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [copy.deepcopy(r) for r in self._rules]

    def match(self, method: str, path: str, query: dict[str, str]) -> FaultAction | None:
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, path, query):
                    continue
                rule.hits += 1
                if rule.skip > 0:
                    rule.skip -= 1
                    return None
                action = rule.actions.pop(0)
                if not rule.actions:
                    self._rules.remove(rule)
                return None if action.kind == "ok" else action
        return None
