"""The sandbox workflow's task T0: its types, survey choice codes, answer lookup and API values."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: The task types the sandbox workflow's task T0 can have.
TASK_TYPES = frozenset({"single", "multiple", "survey"})


@dataclass
class AnswerIndex:
    labels: list[str]
    lookup: dict[str, int]


def choice_codes(labels: Sequence[str]) -> list[str]:
    """Survey choice codes for labels, as the Project Builder makes them: the letters in upper
    case (``"Zebra"`` -> ``"ZEBRA"``), numbered when two would clash."""
    codes: list[str] = []
    for i, label in enumerate(labels):
        code = re.sub(r"[^A-Z0-9]", "", label.upper()) or f"CHOICE{i}"
        while code in codes:
            code += str(i)
        codes.append(code)
    return codes


def task_type_of(tasks: dict[str, Any]) -> str:
    """The type of the sandbox workflow's task T0."""
    return str(tasks.get("T0", {}).get("type", "multiple"))


def api_value(tasks: dict[str, Any], ticked: list[int]) -> Any:
    """The API's ``value`` for answer indices ticked: an index or null (single), the sorted
    indices (multiple), or a survey's list of ``{"choice", "answers", "filters"}``."""
    task_type = task_type_of(tasks)
    if task_type == "single":
        return ticked[0] if ticked else None
    if task_type == "survey":
        codes = tasks["T0"]["choicesOrder"]
        return [{"choice": codes[i], "answers": {}, "filters": {}} for i in sorted(ticked)]
    return sorted(ticked)


def task_definition(labels: Sequence[str], task_type: str = "multiple") -> dict[str, Any]:
    """Task T0 as the Project Builder writes it: a question (``single``, ``multiple``)
    whose answers are ``T0.answers.i.label``, or a ``survey`` whose choices, one per label,
    are coded as ``choice_codes`` makes them, with no questions about each choice."""
    if task_type == "survey":
        codes = choice_codes(labels)
        return {
            "T0": {
                "type": "survey",
                "choices": {
                    code: {
                        "label": f"T0.choices.{code}.label",
                        "images": [],
                        "characteristics": {},
                        "confusionsOrder": [],
                        "noQuestions": True,
                    }
                    for code in codes
                },
                "choicesOrder": codes,
                "questions": {},
                "questionsOrder": [],
                "characteristics": {},
                "characteristicsOrder": [],
                "images": {},
            }
        }
    return {
        "T0": {
            "type": task_type,
            "question": "T0.question",
            "help": "T0.help",
            "required": False,
            "answers": [{"label": f"T0.answers.{i}.label"} for i in range(len(labels))],
        }
    }


def task_strings(
    labels: Sequence[str], question: str, task_type: str = "multiple"
) -> dict[str, str]:
    strings = {"T0.question": question, "T0.help": ""}
    if task_type == "survey":
        for code, label in zip(choice_codes(labels), labels, strict=True):
            strings[f"T0.choices.{code}.label"] = label
        return strings
    for i, label in enumerate(labels):
        strings[f"T0.answers.{i}.label"] = label
    return strings
