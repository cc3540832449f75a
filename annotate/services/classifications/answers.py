"""Answers: what the answers ticked in a vote mean, through its workflow version's answer map."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from annotate.models import WorkflowVersion
from annotate.zooniverse.records import ClassificationColumns

if TYPE_CHECKING:
    from annotate.services.classifications.read import IngestContext


#: The version name of the answer map used for export labels when a record's version is unknown.
WILDCARD_VERSION = "*"

#: Task types whose answers are concept choices; everything else is reported, not guessed at.
SUPPORTED_TASK_TYPES = frozenset({"single", "multiple", "shortcut"})


def _normalise(label: str) -> str:
    return " ".join(label.split()).casefold()


@dataclass(slots=True)
class AnswerMap:
    """One workflow version's answers, resolved to concept ids, for both lookup directions."""

    version: str
    task_type: str
    by_index: list[int | None]
    # Normalised label (or concept key/label) -> concept id; None marks a known but unmapped answer.
    by_label: dict[str, int | None]
    # Labels as written -> concept id: exports repeat a few labels a million times.
    seen: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def build(cls, version: WorkflowVersion, concepts: dict[str, tuple[int, str]]) -> AnswerMap:
        by_index: list[int | None] = []
        by_label: dict[str, int | None] = {}
        for answer in version.answers or []:
            key = (answer.get("concept") or "").strip()
            concept = concepts.get(key.casefold()) if key else None
            concept_id = concept[0] if concept else None
            by_index.append(concept_id)
            label = str(answer.get("label") or "")
            if label:
                # An earlier answer with the same label wins, as the index order is the truth.
                by_label.setdefault(_normalise(label), concept_id)
            if concept:
                by_label.setdefault(_normalise(key), concept_id)
                by_label.setdefault(_normalise(concept[1]), concept_id)
        return cls(version.version, version.task_type, by_index, by_label)

    def resolve(self, answers: list[int] | list[str]) -> tuple[list[int], list[int | str]]:
        """Concept ids ticked (sorted, unique) and the answers that map to none."""
        ids: set[int] = set()
        invalid: list[int | str] = []
        for answer in answers:
            if isinstance(answer, bool):  # bool is an int subclass; never a valid answer
                invalid.append(str(answer))
                continue
            if isinstance(answer, int):
                concept_id = self.by_index[answer] if 0 <= answer < len(self.by_index) else None
            elif answer in self.seen:
                concept_id = self.seen[answer]
            else:
                concept_id = self.by_label.get(_normalise(str(answer)))
                if len(self.seen) < 10_000:  # free text must not grow it without bound
                    self.seen[answer] = concept_id
            if concept_id is None:
                invalid.append(answer)
            else:
                ids.add(concept_id)
        return sorted(ids), invalid


@dataclass(slots=True)
class Answers:
    """What one (version, answer list) pair of a batch resolves to; ``refusal`` when refused."""

    refusal: tuple[str, str] | None = None
    concept_ids: list[int] = field(default_factory=list)
    invalid: list[int | str] = field(default_factory=list)


def answers_resolve(
    columns: ClassificationColumns, context: IngestContext, rows: np.ndarray
) -> tuple[np.ndarray, list[Answers]]:
    """Per row, a code into the resolutions of the batch's distinct (version, answers) pairs."""
    width = len(columns.answer_lists) + 1
    pair = columns.version_code[rows].astype(np.int64) * width + columns.answer_code[rows]
    pair = pair * 2 + (columns.source[rows] == "export")
    distinct, code = np.unique(pair, return_inverse=True)
    resolved: list[Answers] = []
    for value in distinct.tolist():
        version = columns.versions[value // 2 // width]
        answers = columns.answer_lists[value // 2 % width]
        labels = value % 2 == 1 and all(isinstance(a, str) for a in answers)
        answer_map = context.answer_map(version, labels=labels)
        if answer_map is None:
            resolved.append(Answers(("workflow_version", "unknown_workflow_version")))
        elif answer_map.task_type not in SUPPORTED_TASK_TYPES:
            reason = f"unsupported_task_type:{answer_map.task_type}"
            resolved.append(Answers(("annotations", reason)))
        elif not all(isinstance(a, int | str) for a in answers):
            resolved.append(Answers(("annotations", "invalid_answer_type")))
        else:
            resolved.append(Answers(None, *answer_map.resolve(answers)))
    return code, resolved
