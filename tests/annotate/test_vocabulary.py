from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.models import Concept
from annotate.services.vocabulary import vocabulary_load

pytestmark = pytest.mark.django_db


def test_the_default_vocabulary_is_the_europeana_pilots_twenty_concepts():
    result = vocabulary_load()
    assert result.created == 20
    concepts = {c.key: c for c in Concept.objects.all()}
    assert concepts["photograph"].uri == "http://data.europeana.eu/concept/base/48"
    assert concepts["archaeological_site"].uri == "http://vocab.getty.edu/aat/300266151"
    assert concepts["archaeological_site"].label == "archaeological site"
    assert list(Concept.objects.values_list("key", flat=True))[:3] == [
        "building",
        "ceramics",
        "drawing",
    ]


def test_loading_a_vocabulary_twice_changes_nothing(capsys):
    call_command("load_vocabulary")
    call_command("load_vocabulary")
    assert (
        capsys.readouterr().out.splitlines()[-1] == "vocabulary: 0 created, 0 updated, 20 unchanged"
    )


def test_a_csv_vocabulary_updates_labels_by_key(tmp_path):
    vocabulary_load()
    path = tmp_path / "v.csv"
    path.write_text("key,label,uri\nmap,Maps and plans,http://data.europeana.eu/concept/base/43\n")
    result = vocabulary_load(path=path)
    assert (result.created, result.updated) == (0, 1)
    assert Concept.objects.get(key="map").label == "Maps and plans"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("key,label,uri\nmap,Map,ftp://x\n", "line 2: 'uri' must be an http"),
        ("key,label,uri\nmap,Map,\nmap,Again,\n", "line 3: duplicate key 'map'"),
        ("key,label,uri\n,,\n", "line 2: 'key' (or 'label') is required"),
    ],
)
def test_a_bad_vocabulary_is_refused_naming_the_line(tmp_path, content, message):
    path = tmp_path / "v.csv"
    path.write_text(content)
    with pytest.raises(CommandError) as exc:
        call_command("load_vocabulary", str(path))
    assert message in str(exc.value)
    assert not Concept.objects.exists()
