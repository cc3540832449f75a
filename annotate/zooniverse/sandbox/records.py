"""The stored shapes of the sandbox's Panoptes objects and their ids.

Every field is JSON-native so the whole store round-trips through a JSON file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

DEFAULT_RETIREMENT_COUNT = 15  # Panoptes' default when a workflow's retirement is blank.


# Distinct id bases per resource type, so a subject id passed where a set-member-subject id is
# expected (an easy mistake with Panoptes) finds nothing instead of the wrong row.
ID_BASES = {
    "projects": 1,
    "workflows": 1,
    "workflow_versions": 1,
    "subject_sets": 11,
    "subjects": 100001,
    "set_member_subjects": 500001,
    "subject_workflow_statuses": 700001,
    "users": 5001,
    "classifications": 9000001,
    "media": 300001,
}


@dataclass
class ProjectRecord:
    id: int
    display_name: str
    slug: str
    created_at: str
    updated_at: str
    workflow_ids: list[int] = field(default_factory=list)
    subject_set_ids: list[int] = field(default_factory=list)


@dataclass
class WorkflowRecord:
    id: int
    project_id: int
    display_name: str
    tasks: dict[str, Any]
    strings: dict[str, str]
    retirement: dict[str, Any]
    created_at: str
    updated_at: str
    first_task: str = "T0"
    prioritized: bool = True
    grouped: bool = False
    pairwise: bool = False
    active: bool = True
    primary_language: str = "en"
    version: int = 1  # major: bumped when tasks change
    minor_version: int = 1  # bumped when strings change
    subject_set_ids: list[int] = field(default_factory=list)
    classifications_count: int = 0
    lock_version: int = 0

    @property
    def version_string(self) -> str:
        return f"{self.version}.{self.minor_version}"

    @property
    def retirement_count(self) -> int | None:
        if self.retirement.get("criteria", "classification_count") != "classification_count":
            return None
        return int(self.retirement.get("options", {}).get("count", DEFAULT_RETIREMENT_COUNT))


@dataclass
class WorkflowVersionRecord:
    id: int
    workflow_id: int
    major_number: int
    minor_number: int
    tasks: dict[str, Any]
    strings: dict[str, str]
    first_task: str
    created_at: str


@dataclass
class SubjectSetRecord:
    id: int
    project_id: int
    display_name: str
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    lock_version: int = 0


@dataclass
class SubjectRecord:
    id: int
    project_id: int
    locations: list[dict[str, str]]
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    lock_version: int = 0


@dataclass
class SetMemberSubjectRecord:
    id: int
    subject_set_id: int
    subject_id: int
    priority: float | None
    created_at: str
    updated_at: str
    lock_version: int = 0


@dataclass
class StatusRecord:
    """A SubjectWorkflowStatus: per (subject, workflow) count and retirement."""

    id: int
    subject_id: int
    workflow_id: int
    classifications_count: int
    retired_at: str | None
    retirement_reason: str | None
    created_at: str
    updated_at: str


@dataclass
class UserRecord:
    id: int
    login: str
    display_name: str


@dataclass
class VolunteerRecord:
    """A simulated volunteer. ``user_id`` is None for a logged-out volunteer."""

    name: str  # login, or not-logged-in-<ip hash>
    profile: str
    user_id: int | None
    ip_hash: str
    session: str

    @property
    def anonymous(self) -> bool:
        return self.user_id is None


@dataclass
class ClassificationRecord:
    id: int
    project_id: int
    workflow_id: int
    workflow_version: str
    user_id: int | None
    user_name: str
    user_ip: str
    created_at: str
    annotations: list[dict[str, Any]]  # API form: answer indices
    subject_ids: list[int]
    metadata: dict[str, Any]
    gold_standard: bool = False
    expert: bool = False
    profile: str = ""  # the simulated volunteer's hidden profile; never on the wire


@dataclass
class ExportRecord:
    """One export medium per (owner, export type), updated in place as Panoptes does."""

    id: int
    owner_type: str  # "projects" | "workflows"
    owner_id: int
    export_type: str
    state: str  # "creating" | "ready"
    created_at: str
    updated_at: str
    requested_at: str | None = None
    ready_after: str | None = None
    stuck: bool = False
    content: str | None = None  # the CSV last generated; served at src even while "creating"


@dataclass
class StoreState:
    counters: dict[str, int] = field(default_factory=dict)
    projects: dict[int, ProjectRecord] = field(default_factory=dict)
    workflows: dict[int, WorkflowRecord] = field(default_factory=dict)
    workflow_versions: dict[int, WorkflowVersionRecord] = field(default_factory=dict)
    subject_sets: dict[int, SubjectSetRecord] = field(default_factory=dict)
    subjects: dict[int, SubjectRecord] = field(default_factory=dict)
    set_member_subjects: dict[int, SetMemberSubjectRecord] = field(default_factory=dict)
    statuses: dict[int, StatusRecord] = field(default_factory=dict)
    users: dict[int, UserRecord] = field(default_factory=dict)
    volunteers: dict[str, VolunteerRecord] = field(default_factory=dict)
    classifications: dict[int, ClassificationRecord] = field(default_factory=dict)
    exports: dict[int, ExportRecord] = field(default_factory=dict)
    answer_keys: list[str] = field(default_factory=list)

    _TABLES = {
        "projects": ProjectRecord,
        "workflows": WorkflowRecord,
        "workflow_versions": WorkflowVersionRecord,
        "subject_sets": SubjectSetRecord,
        "subjects": SubjectRecord,
        "set_member_subjects": SetMemberSubjectRecord,
        "statuses": StatusRecord,
        "users": UserRecord,
        "classifications": ClassificationRecord,
        "exports": ExportRecord,
    }

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"counters": self.counters, "answer_keys": self.answer_keys}
        for name in self._TABLES:
            out[name] = [asdict(r) for r in getattr(self, name).values()]
        out["volunteers"] = [asdict(v) for v in self.volunteers.values()]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoreState:
        state = cls(counters=dict(data.get("counters", {})))
        state.answer_keys = list(data.get("answer_keys", []))
        for name, record_cls in cls._TABLES.items():
            known = {f.name for f in fields(record_cls)}
            table = getattr(state, name)
            for row in data.get(name, []):
                record = record_cls(**{k: v for k, v in row.items() if k in known})
                table[record.id] = record
        for row in data.get("volunteers", []):
            state.volunteers[row["name"]] = VolunteerRecord(**row)
        return state


def by_id(record: Any) -> int:
    return record.id
