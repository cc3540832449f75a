"""The plots page and its PNGs: real images, with data and without, never cached."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image

from annotate import plots, selectors
from annotate.models import AggregatedLabel, Item, Volunteer, VolunteerSkill

pytestmark = pytest.mark.django_db

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def populate(concepts) -> None:
    rng = np.random.default_rng(0)
    keys = list(concepts)[:6]
    for i in range(30):
        item = Item.objects.create(external_id=f"i{i}", n_classifications=int(rng.integers(0, 8)))
        AggregatedLabel.objects.bulk_create(
            AggregatedLabel(
                item=item, concept=concepts[key], posterior=float(rng.random()), method="test"
            )
            for key in keys
        )
    AggregatedLabel.objects.filter(pk=AggregatedLabel.objects.first().pk).update(posterior=1.0)
    for v in range(12):
        volunteer = Volunteer.objects.create(key=f"v{v}")
        VolunteerSkill.objects.bulk_create(
            VolunteerSkill(
                volunteer=volunteer,
                concept=concepts[key],
                sensitivity=float(rng.uniform(0.4, 1)),
                specificity=float(rng.uniform(0.4, 1)),
                n_votes=int(rng.integers(0, 50)) if v else 0,
            )
            for key in keys
        )


def decoded(png: bytes) -> Image.Image:
    assert png.startswith(PNG_MAGIC)
    image = Image.open(io.BytesIO(png), formats=["PNG"])
    image.load()
    return image


@pytest.mark.parametrize("name", plots.PLOTS)
def test_each_plot_is_a_png_even_with_no_data_at_all(name):
    image = decoded(plots.plot_png(name))
    assert image.width > 200 and image.height > 200


@pytest.mark.parametrize("name", plots.PLOTS)
def test_each_plot_is_a_png_with_data(concepts, name):
    populate(concepts)
    decoded(plots.plot_png(name))


def test_an_unknown_plot_is_a_value_error():
    with pytest.raises(ValueError, match="unknown plot"):
        plots.plot_png("../../etc/passwd")


def test_posterior_histograms_count_every_label_once_with_one_in_the_last_bin(concepts):
    populate(concepts)
    histograms = selectors.posterior_histograms(bins=10)
    assert len(histograms) == 20
    assert sum(int(h.counts.sum()) for h in histograms) == AggregatedLabel.objects.count()
    assert all(h.counts.shape == (10,) for h in histograms)


def test_skill_points_weight_by_votes_and_fall_back_to_the_mean(concepts):
    populate(concepts)
    points = selectors.volunteer_skill_points()
    assert points.votes.shape == (12,)
    assert np.all((points.sensitivity >= 0.4) & (points.sensitivity <= 1))
    assert np.all((points.specificity >= 0.4) & (points.specificity <= 1))


def test_the_plot_endpoints_serve_uncached_pngs_to_curators(curator_client, concepts):
    populate(concepts)
    page = curator_client.get(reverse("review:plots"))
    assert page.status_code == 200
    for name in plots.PLOTS:
        url = reverse("review:plot", args=[name])
        assert url.encode() in page.content
        response = curator_client.get(url)
        assert response.status_code == 200
        assert response["Content-Type"] == "image/png"
        assert response["Cache-Control"] == "no-store"
        assert response["X-Content-Type-Options"] == "nosniff"
        decoded(response.content)


def test_the_plot_endpoints_work_on_an_empty_database(curator_client):
    for name in plots.PLOTS:
        response = curator_client.get(reverse("review:plot", args=[name]))
        assert response.status_code == 200
        decoded(response.content)


def test_an_unknown_plot_endpoint_is_not_found(curator_client):
    assert curator_client.get("/review/plots/nothing.png").status_code == 404
