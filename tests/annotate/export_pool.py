"""The export tests' pool (four labelled items: crowd confident, crowd uncertain, curator edited,
rejected; and one unvoted), a label builder and a JSON Lines reader, for the crowd side's export
tests and the model side's proposal tests alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annotate.models import AggregatedLabel, Item
from annotate.services.media import image_store
from tests.images import png_bytes


def label(item: Item, concept, posterior: float, votes_for: int = 3, votes_against: int = 1):
    return AggregatedLabel.objects.create(
        item=item,
        concept=concept,
        posterior=posterior,
        votes_for=votes_for,
        votes_against=votes_against,
        method="dawid_skene",
    )


@pytest.fixture
def pool(concepts, admin_user):
    """Four labelled items: crowd confident, crowd uncertain, curator edited, rejected; and one
    with no votes at all. The first has a stored image and a formula-looking title."""
    painting, photograph, map_ = concepts["painting"], concepts["photograph"], concepts["map"]
    stored = image_store(data=png_bytes())
    a = Item.objects.create(
        external_id="/2021672/resource_a",
        title='=HYPERLINK("http://evil.example","click")',
        image_file=stored.image_file,
        image_state="ok",
        n_classifications=5,
    )
    label(a, painting, 0.98)
    label(a, photograph, 0.01)
    b = Item.objects.create(
        external_id="local-b",
        image_url="https://images.example.org/b.jpg",
        metadata={"item_uri": "https://collection.example.org/b"},
        n_classifications=3,
    )
    label(b, painting, 0.6)
    label(b, map_, 0.3)
    c = Item.objects.create(
        external_id="local-c",
        title="-1+1",
        review_state=Item.ReviewState.EDITED,
        curated_concepts=["map"],
        n_classifications=4,
    )
    label(c, painting, 0.55)
    d = Item.objects.create(external_id="local-d", review_state=Item.ReviewState.REJECTED)
    label(d, painting, 0.99)
    Item.objects.create(external_id="local-unvoted")
    return {"a": a, "b": b, "c": c, "d": d}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
