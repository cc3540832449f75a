"""``simulate_active_learning --scenario hard``: the hard scenario through the same services."""

from __future__ import annotations

import csv
from io import StringIO

from django.core.management import call_command

from annotate.models import Classification, Item

TINY_HARD = [
    "--scenario", "hard", "--image-size", "32", "--strategies", "random,entropy", "--seeds", "0",
    "--rounds", "1", "--items-per-round", "10", "--seed-round", "30", "--pool", "60",
    "--test-items", "30", "--epochs", "1",
]  # fmt: skip


def test_the_hard_scenario_runs_through_the_services_with_one_to_three_votes_an_item(db, tmp_path):
    out, err = StringIO(), StringIO()
    call_command(
        "simulate_active_learning", *TINY_HARD, "--out", str(tmp_path), stdout=out, stderr=err
    )
    assert "scenario hard" in out.getvalue()
    # The hard crowd decides the votes (one to three an item), not --votes: 30 items, then 40.
    spent = {}
    for line in err.getvalue().splitlines():
        if " round " in line and "classifications" in line:
            head, rest = line.split(": ", 1)
            spent[head.strip()] = int(rest.split(" classifications")[0])
    assert set(spent) >= {"random seed 0 round 0", "entropy seed 0 round 1"}
    for name, count in spent.items():
        items = 30 if name.endswith("round 0") else 40
        assert items <= count < 3 * items  # --votes defaults to 3: all three would be 3 x items
    rows = list(csv.DictReader((tmp_path / "active_learning.csv").open()))
    assert [r["strategy"] for r in rows] == ["random", "entropy"]
    assert not Item.objects.exists() and not Classification.objects.exists()
