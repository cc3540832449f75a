from __future__ import annotations

import pytest

from annotate.models import AppendOnlyError, Item, Review

pytestmark = pytest.mark.django_db


def test_a_review_cannot_be_changed_once_written(admin_user):
    review = Review.objects.create(
        item=Item.objects.create(external_id="a"), curator=admin_user, action="accept"
    )
    review.comment = "rewritten history"
    with pytest.raises(AppendOnlyError):
        review.save()


def test_a_review_cannot_be_deleted(admin_user):
    review = Review.objects.create(
        item=Item.objects.create(external_id="a"), curator=admin_user, action="skip"
    )
    with pytest.raises(AppendOnlyError):
        review.delete()
    assert Review.objects.count() == 1
