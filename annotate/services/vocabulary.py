"""The vocabulary: which concepts volunteers can tick, and how answer labels are matched to them
(``label_normalise``, ``concept_index``)."""

from __future__ import annotations

import csv
import html
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction
from django.utils.text import slugify

from annotate.models import Concept

DEFAULT_VOCABULARY = Path(__file__).resolve().parent.parent / "data" / "europeana_vocabulary.json"


class VocabularyError(ValueError):
    """A vocabulary file that cannot be loaded; the message names the entry."""


@dataclass(frozen=True)
class VocabularyResult:
    created: int
    updated: int
    unchanged: int


def vocabulary_read(path: Path) -> list[dict[str, str]]:
    """Read a vocabulary file: a JSON list of objects or a CSV, each with key, label and uri."""
    if path.suffix.lower() == ".json":
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise VocabularyError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
        if not isinstance(entries, list):
            raise VocabularyError(f"{path}: expected a JSON list of concepts")
        where = [f"entry {i + 1}" for i in range(len(entries))]
    else:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            entries = list(reader)
        where = [f"line {i + 2}" for i in range(len(entries))]

    seen: set[str] = set()
    out: list[dict[str, str]] = []
    for entry, loc in zip(entries, where, strict=True):
        if not isinstance(entry, dict):
            raise VocabularyError(f"{path}: {loc}: expected an object with key, label and uri")
        label = str(entry.get("label") or "").strip()
        key = slugify(str(entry.get("key") or label).strip()).replace("-", "_")
        if not key:
            raise VocabularyError(f"{path}: {loc}: 'key' (or 'label') is required")
        if key in seen:
            raise VocabularyError(f"{path}: {loc}: duplicate key '{key}'")
        seen.add(key)
        uri = str(entry.get("uri") or "").strip()
        if uri and not uri.startswith(("http://", "https://")):
            raise VocabularyError(f"{path}: {loc}: 'uri' must be an http(s) URI, got {uri!r}")
        out.append(
            {
                "key": key,
                "label": label or key.replace("_", " "),
                "uri": uri,
                "description": str(entry.get("description") or "").strip(),
            }
        )
    if not out:
        raise VocabularyError(f"{path}: no concepts")
    return out


@transaction.atomic
def vocabulary_load(
    *, path: Path | None = None, entries: list[dict[str, str]] | None = None
) -> VocabularyResult:
    """Create or update concepts by key; re-loading the same vocabulary changes nothing.

    Concepts missing from the file are kept (votes may point at them) but left as they are.
    """
    if entries is None:
        entries = vocabulary_read(path or DEFAULT_VOCABULARY)
    existing = {c.key: c for c in Concept.objects.filter(key__in=[e["key"] for e in entries])}
    created, updated, unchanged = [], [], 0
    fields = ("label", "uri", "description", "position", "active")
    for position, entry in enumerate(entries):
        values = {
            "label": entry["label"],
            "uri": entry.get("uri", ""),
            "description": entry.get("description", ""),
            "position": position,
            "active": True,
        }
        concept = existing.get(entry["key"])
        if concept is None:
            created.append(Concept(key=entry["key"], **values))
        elif any(getattr(concept, f) != values[f] for f in fields):
            for f in fields:
                setattr(concept, f, values[f])
            updated.append(concept)
        else:
            unchanged += 1
    Concept.objects.bulk_create(created)
    Concept.objects.bulk_update(updated, fields)
    return VocabularyResult(created=len(created), updated=len(updated), unchanged=unchanged)


_MARKDOWN_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_HTML_TAG = re.compile(r"<[^>]*>")
_MARKDOWN_MARKS = re.compile(r"[*`~]+|^\s*#+\s|^\s*>\s")
_FILE_SUFFIX = re.compile(r"\.(png|jpe?g|gif|svg|webp)$", re.IGNORECASE)


def _decoration(char: str) -> bool:
    """Emoji and other pictographs, their modifiers and joiners: never part of a label's words."""
    category = unicodedata.category(char)
    return category in ("So", "Sk", "Cf", "Co", "Cs") or 0xFE00 <= ord(char) <= 0xFE0F


def _trimmed(text: str) -> str:
    """Without punctuation, symbols and spaces around it (``"Ring."``, ``"(Ring)"``)."""
    start, end = 0, len(text)
    while start < end and unicodedata.category(text[start])[0] in "PSZ":
        start += 1
    while end > start and unicodedata.category(text[end - 1])[0] in "PSZ":
        end -= 1
    return text[start:end]


def label_normalise(label: str) -> str:
    """An answer label reduced to its words, for matching; the raw text is kept elsewhere.

    Project Builder labels carry Markdown (``![ring.png](https://...) Ring``, ``**Ring**``,
    ``[Ring](url)``), sometimes HTML (``<b>Ring</b>``, ``&amp;``), emoji and punctuation around
    the words; exports repeat the label as displayed. Images go (a label that is only an image
    keeps its file name, without the suffix), links keep their text, tags, emphasis and emoji
    go, then whitespace is collapsed, case folded and punctuation around the words trimmed. The
    same function reads the workflow's labels and the export's, so they meet whatever the markup.
    """
    text = unicodedata.normalize("NFKC", str(label))
    images = _MARKDOWN_IMAGE.findall(text)
    text = _MARKDOWN_IMAGE.sub(" ", text)
    text = _MARKDOWN_LINK.sub(r"\1", text)
    text = html.unescape(_HTML_TAG.sub(" ", text))
    text = _MARKDOWN_MARKS.sub(" ", text)
    text = "".join(" " if _decoration(char) else char for char in text)
    text = _trimmed(" ".join(text.split()).casefold())
    if not text and images:  # only an image: its name is all the label says
        text = _trimmed(" ".join(_FILE_SUFFIX.sub("", images[0]).split()).casefold())
    if not text:  # only punctuation or symbols: matched as written
        text = " ".join(str(label).split()).casefold()
    return text


def concept_index() -> dict[str, str]:
    """Normalised key and label -> concept key. Keys win over labels on a clash.

    The one index answers are matched against, for workflow exports and the API's versions.
    """
    index: dict[str, str] = {}
    concepts = list(Concept.objects.values_list("key", "label"))
    for key, label in concepts:
        index.setdefault(label_normalise(label), key)
    for key, _ in concepts:
        index[key.casefold()] = key
    return index
