"""Answers: what the answers ticked in a vote mean, through its workflow version's answer map."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from annotate.models import WorkflowVersion
from annotate.services.vocabulary import label_normalise
from annotate.zooniverse.classification_records import ClassificationColumns

if TYPE_CHECKING:
    from collections.abc import Callable


#: The version name of the answer map used for export labels when a record's version is unknown.
WILDCARD_VERSION = "*"

#: A label that is none of the version's answers (``AnswerMap.seen`` remembers it too).
_UNKNOWN: Any = object()

#: Task types whose answers are concept choices; everything else is reported, not guessed at.
#: A survey's answers are its choices (the species marked); the questions asked about each
#: choice (how many, what behaviour) are not read.
SUPPORTED_TASK_TYPES = frozenset({"single", "multiple", "shortcut", "survey"})

#: Task types whose classification carries exactly one answer. Panoptes writes ``null`` when the
#: volunteer went on without answering (a question that is not required): that is no answer,
#: so no vote, not a "no" to every answer, as an empty multiple-answer list is.
SINGLE_ANSWER_TYPES = frozenset({"single"})


@dataclass(slots=True)
class AnswerMap:
    """One workflow version's answers, resolved to concept ids, for both lookup directions.

    What a vote says: the concepts of the answers ticked are yes, every other concept is no.
    That holds for a single-answer question (the one answer chosen excludes the others), a
    multiple-answer question (what was not ticked was judged absent) and a survey, where the
    volunteer marks each species they saw, so a species left unmarked was not seen. An answer
    that maps to no concept ("None of these", a survey's ``NOTHINGHERE``) is reported as
    unmapped and says yes to nothing: the vote is a no to every concept, never a vote for a
    concept of its own. A single-answer classification without an answer (``null``: skipped)
    gives no vote at all (``resolve`` calls it not known).

    Survey answers are choice codes (``"ZBR"``); the version's answers carry each choice's code
    (``"choice"``) beside its label, and both are looked up.
    """

    version: str
    task_type: str
    by_index: list[int | None]
    # Normalised label (or concept key/label) -> concept id; None marks a known but unmapped answer.
    by_label: dict[str, int | None]
    # Labels as written -> concept id (or _UNKNOWN): exports repeat a few labels a million times.
    seen: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, version: WorkflowVersion, concepts: dict[str, tuple[int, str]]) -> AnswerMap:
        by_index: list[int | None] = []
        by_label: dict[str, int | None] = {}
        for answer in version.answers or []:
            key = (answer.get("concept") or "").strip()
            concept = concepts.get(key.casefold()) if key else None
            concept_id = concept[0] if concept else None
            by_index.append(concept_id)
            choice = str(answer.get("choice") or "")
            if choice:  # a survey choice code: the text both the export and the API give
                by_label.setdefault(label_normalise(choice), concept_id)
            label = str(answer.get("label") or "")
            if label:
                # An earlier answer with the same label wins, as the index order is the truth.
                by_label.setdefault(label_normalise(label), concept_id)
            if concept:
                by_label.setdefault(label_normalise(key), concept_id)
                by_label.setdefault(label_normalise(concept[1]), concept_id)
        return cls(version.version, version.task_type, by_index, by_label)

    def resolve(self, answers: list[int] | list[str]) -> tuple[list[int], list[int | str], bool]:
        """Concept ids ticked (sorted, unique), the answers that map to none, and whether every
        answer is one the version offers (an answer offered but mapped to no concept, such as
        "None of these", is known: the volunteer said no to the others).

        A single-answer task answered with nothing (skipped) is not known: no vote.
        """
        if not answers and self.task_type in SINGLE_ANSWER_TYPES:
            return [], [], False
        ids: set[int] = set()
        invalid: list[int | str] = []
        known = True
        for answer in answers:
            if isinstance(answer, bool):  # bool is an int subclass; never a valid answer
                invalid.append(str(answer))
                known = False
                continue
            if isinstance(answer, int):
                offered = 0 <= answer < len(self.by_index)
                concept_id = self.by_index[answer] if offered else None
            else:
                if answer in self.seen:
                    concept_id = self.seen[answer]
                else:
                    concept_id = self.by_label.get(label_normalise(answer), _UNKNOWN)
                    if len(self.seen) < 10_000:  # free text must not grow it without bound
                        self.seen[answer] = concept_id
                offered = concept_id is not _UNKNOWN
                concept_id = concept_id if offered else None
            known = known and offered
            if concept_id is None:
                invalid.append(answer)
            else:
                ids.add(concept_id)
        return sorted(ids), invalid, known


@dataclass(slots=True)
class Answers:
    """What one (version, answer list) pair of a batch resolves to; ``refusal`` when refused.

    ``known`` is False when an answer is none of the version's answers: the row is kept and
    reported, and gives no vote (what it meant is unknown, so it is no "no" to anything).
    ``skipped`` marks a single-answer task left unanswered (``null``): also no vote (``known``
    False), counted apart.
    """

    refusal: tuple[str, str] | None = None
    concept_ids: list[int] = field(default_factory=list)
    invalid: list[int | str] = field(default_factory=list)
    known: bool = True
    skipped: bool = False


def answers_resolve(
    columns: ClassificationColumns,
    map_of: Callable[..., AnswerMap | None],
    rows: np.ndarray,
) -> tuple[np.ndarray, list[Answers]]:
    """Per row, a code into the resolutions of the batch's distinct (version, answers) pairs.

    ``map_of(version, labels=...)`` finds a version's map (the ingest's cached lookup).

    Rows whose task was not shown resolve to nothing, whatever their version: there is no answer
    to read, so an unknown version or an unsupported task type is no reason to refuse them.
    """
    width = len(columns.answer_lists) + 1
    pair = columns.version_code[rows].astype(np.int64) * width + columns.answer_code[rows]
    pair = pair * 2 + (columns.source[rows] == "export")
    pair[~columns.task_shown[rows]] = -1
    distinct, code = np.unique(pair, return_inverse=True)
    resolved: list[Answers] = []
    for value in distinct.tolist():
        if value == -1:
            resolved.append(Answers(None))
            continue
        version = columns.versions[value // 2 // width]
        answers = columns.answer_lists[value // 2 % width]
        labels = value % 2 == 1 and all(isinstance(a, str) for a in answers)
        answer_map = map_of(version, labels=labels)
        if answer_map is None:
            resolved.append(Answers(("workflow_version", "unknown_workflow_version")))
        elif answer_map.task_type not in SUPPORTED_TASK_TYPES:
            reason = f"unsupported_task_type:{answer_map.task_type}"
            resolved.append(Answers(("annotations", reason)))
        elif not all(isinstance(a, int | str) for a in answers):
            resolved.append(Answers(("annotations", "invalid_answer_type")))
        else:
            concept_ids, invalid, known = answer_map.resolve(answers)
            skipped = not answers and not known
            resolved.append(Answers(None, concept_ids, invalid, known, skipped))
    return code, resolved
