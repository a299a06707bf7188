"""Who may do what: roles, the actions routes are tagged with, and the caller as a value.

Pure rules, no I/O: `app.auth.dependencies` finds the caller and asks these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from app.models import Role


class Action(enum.StrEnum):
    """What a route does, as far as access goes. Every route is tagged with exactly one."""

    public = "public"  # no key: health, the review page's shell and scripts, signing in
    read = "read"  # see a dataset and its rows
    review = "review"  # the queue, review actions, human completions and rankings
    export = "export"  # freeze and download exports
    admin = "admin"  # keys, dataset settings and deletion, imports, runs (they spend money)


ALLOWED: dict[Role, frozenset[Action]] = {
    Role.admin: frozenset(Action),
    Role.annotator: frozenset({Action.public, Action.read, Action.review}),
    Role.viewer: frozenset({Action.public, Action.read, Action.export}),
}


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    actor: str  # recorded in the audit trail
    role: Role
    datasets: frozenset[int] | None  # the datasets granted; None: every dataset (admins)
    key_id: int | None = None  # None: a FORGE_API_KEYS key, or no keys at all
    via: str = "key"  # key | session | open (no keys configured: the local single-user mode)

    def may(self, action: Action) -> bool:
        return action in ALLOWED[self.role]

    def sees(self, dataset_id: int) -> bool:
        return self.datasets is None or dataset_id in self.datasets
