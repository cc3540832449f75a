"""The active-learning simulation runs through the product's services and reports its curves."""

from __future__ import annotations

import csv
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from annotate.models import Classification, Item, Round
from training.models import ModelVersion
from training.services.simulation import SimulationConfig, simulation_run

TINY = [
    "--strategies", "random,bald", "--seeds", "0", "--rounds", "1", "--items-per-round", "8",
    "--votes", "2", "--seed-round", "24", "--pool", "48", "--test-items", "20", "--epochs", "1",
]


def test_a_tiny_simulation_prints_the_table_and_writes_the_curves_and_the_csv(db, tmp_path):
    out, err = StringIO(), StringIO()
    call_command("simulate_active_learning", *TINY, "--out", str(tmp_path), stdout=out, stderr=err)
    text = out.getvalue()
    assert "full-data mAP" in text and "random" in text and "bald" in text
    assert "simulate_active_learning: 1 seeds x 2 strategies" in text
    assert "bald seed 0 round 1: 64 classifications" in err.getvalue()  # (24 + 8) x 2 votes
    assert (tmp_path / "active_learning.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((tmp_path / "active_learning.csv").open()))
    assert [r["strategy"] for r in rows] == ["random", "bald"]
    # Every campaign is rolled back: nothing is left in the database.
    assert not Item.objects.exists() and not Classification.objects.exists()
    assert not Round.objects.exists() and not ModelVersion.objects.exists()


def test_each_campaign_spends_the_votes_it_asked_for_and_is_measured_after_every_round(
    db, tmp_path
):
    config = SimulationConfig(
        strategies=("random", "entropy"), seeds=(3,), rounds=2, items_per_round=6, votes=2,
        seed_round=24, pool=48, test_items=20, epochs=1,
    )
    lines: list[str] = []
    result = simulation_run(config=config, workdir=tmp_path, step=lines.append)
    assert len(lines) == config.steps == 1 + 2 * 3
    for curves in result.curves.values():
        (curve,) = curves
        assert curve.classifications == [48, 60, 72]
        assert all(0.0 <= m <= 1.0 for m in curve.test_map)
    assert 0.0 < result.ceiling <= 1.0
    assert [row.strategy for row in result.table()] == ["random", "entropy"]


def test_it_refuses_a_database_that_already_holds_items(db, tmp_path):
    Item.objects.create(external_id="real-item")
    with pytest.raises(CommandError, match="empty"):
        call_command("simulate_active_learning", *TINY, "--out", str(tmp_path), stdout=StringIO(),
                     stderr=StringIO())
    assert Item.objects.filter(external_id="real-item").exists()


def test_an_unknown_strategy_is_refused_before_anything_runs(db, tmp_path):
    with pytest.raises(CommandError, match="unknown strategy"):
        call_command("simulate_active_learning", "--strategy", "clairvoyant", stdout=StringIO())
