"""The workbench in a real headless Chromium: the model beside the crowd, the evidence map toggled
by a key, bulk accept's confirmation and its undo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from PIL import Image

from annotate.models import Classification, Item, Review, Subject, Volunteer
from tests.browser import BROWSER_MARKS, PASSWORD
from tests.factories import (
    WorkflowFactory,
    item_with_labels,
    model_version_checkpoint,
    predictions_store,
)

pytestmark = BROWSER_MARKS

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def login(browser, live_server, user, path: str) -> None:
    browser.get(f"{live_server.url}{path}")
    WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, "id_username")))
    browser.find_element(By.ID, "id_username").send_keys(user.username)
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    WebDriverWait(browser, 15).until(lambda d: "/login/" not in d.current_url)


def image_item(concepts, name: str, posteriors: dict[str, float], **fields) -> Item:
    root = Path(settings.MEDIA_ROOT) / "items"
    root.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(name)).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / f"{name}.png")
    return item_with_labels(
        concepts,
        name,
        posteriors,
        image_file=f"items/{name}.png",
        image_state=Item.ImageState.OK,
        **fields,
    )


def test_the_item_page_shows_the_model_its_conflict_flag_and_the_evidence_map_on_g(
    live_server, browser, concepts, curator, served_media, screenshots
):
    item = image_item(
        concepts,
        "conflict",
        {"painting": 0.01, "map": 0.99},
        conflicts_model=True,
        consensus="confident",
    )
    workflow = WorkflowFactory(zooniverse_id=5, version=None)
    subject = Subject.objects.create(zooniverse_id=50, item=item)
    Classification.objects.create(
        zooniverse_id=1,
        workflow=workflow,
        workflow_version="1.1",
        subject=subject,
        item=item,
        volunteer=Volunteer.objects.create(key="ann", user_name="ann"),
        created_at="2026-01-01T00:00:00Z",
        concept_ids=[concepts["map"].pk],
    )
    version = model_version_checkpoint(concepts=["painting", "map"], val_map=0.61)
    predictions_store(version, {item.pk: {"painting": 0.96, "map": 0.9}})

    login(browser, live_server, curator, "/review/?flag=model")
    links = browser.find_elements(By.CSS_SELECTOR, "a.cl-item-link")
    assert [link.text for link in links] == ["conflict"]
    assert "⚑ model" in browser.find_element(By.ID, "queue-table").text
    links[0].click()
    WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, "review-model-flag")))

    painting = browser.find_element(By.CSS_SELECTOR, 'tr[data-concept="painting"] td.cl-model')
    assert "0.96" in painting.text and "⚑ model" in painting.text
    assert "validation mAP 0.610" in browser.find_element(By.CSS_SELECTOR, ".cl-meta").text

    options = browser.find_elements(By.CSS_SELECTOR, "#review-evidence-concept option")
    first, second = [o.get_attribute("value") for o in options[1:]]  # in the vocabulary's order
    assert {first, second} == {"painting", "map"}
    layer = browser.find_element(By.ID, "review-evidence")
    assert layer.get_attribute("hidden") is not None
    browser.find_element(By.TAG_NAME, "body").send_keys("g")
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script(
            "const l = arguments[0]; return !l.hidden && l.complete && l.naturalWidth > 0", layer
        )
    )
    assert f"/explain/{first}.map.png?size=" in layer.get_attribute("src")
    assert f"evidence map: {first}" in browser.find_element(By.ID, "review-evidence-status").text
    browser.save_screenshot(str(screenshots / "workbench_evidence.png"))
    # g again moves to the next concept, and past the last one hides the map.
    browser.find_element(By.TAG_NAME, "body").send_keys("g")
    WebDriverWait(browser, 20).until(
        lambda d: f"/explain/{second}.map.png" in layer.get_attribute("src")
    )
    browser.find_element(By.TAG_NAME, "body").send_keys("g")
    WebDriverWait(browser, 10).until(lambda d: layer.get_attribute("hidden") is not None)

    # v opens every concept's votes, fetched once: who voted what, with their skill.
    browser.find_element(By.TAG_NAME, "body").send_keys("v")
    WebDriverWait(browser, 15).until(
        lambda d: (
            d.find_element(By.ID, "review-concepts").get_attribute("data-votes-loaded") is not None
        )
    )
    painting_votes = browser.find_element(By.CSS_SELECTOR, 'ul.cl-voters[data-concept="painting"]')
    map_votes = browser.find_element(By.CSS_SELECTOR, 'ul.cl-voters[data-concept="map"]')
    assert "✗ ann" in painting_votes.text and "✓ ann" in map_votes.text
    assert "skill not estimated yet" in map_votes.text

    # z zooms the image to twice its shown width.
    image = browser.find_element(By.ID, "review-image")
    width = image.size["width"]
    browser.find_element(By.TAG_NAME, "body").send_keys("z")
    WebDriverWait(browser, 5).until(lambda d: image.size["width"] >= 1.9 * width)


def test_bulk_accept_asks_with_the_count_and_the_whole_batch_can_be_undone(
    live_server, browser, concepts, curator, screenshots
):
    for i in range(3):
        item_with_labels(concepts, f"settled-{i}", {"painting": 0.99}, consensus="confident")
    item_with_labels(concepts, "unsure", {"painting": 0.6})

    login(browser, live_server, curator, "/review/")
    browser.find_element(By.ID, "bulk-accept-button").click()
    WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, "bulk-confirm")))
    assert browser.find_element(By.ID, "bulk-count").text == "3"
    assert not Review.objects.exists()
    browser.save_screenshot(str(screenshots / "workbench_bulk_confirm.png"))
    browser.find_element(By.ID, "bulk-confirm-button").click()
    WebDriverWait(browser, 15).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, ".messagelist"))
    )
    assert (
        "Accepted the crowd's label on 3 settled items"
        in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    )
    assert Item.objects.filter(review_state="accepted").count() == 3

    browser.find_element(By.LINK_TEXT, "Undo this bulk accept").click()
    WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, "undo-batch")))
    browser.find_element(By.ID, "undo-batch").click()
    WebDriverWait(browser, 15).until(
        lambda d: "Undid 3 decisions" in d.find_element(By.CSS_SELECTOR, ".messagelist").text
    )
    assert Item.objects.filter(review_state="accepted").count() == 0
    assert Review.objects.filter(action="undo").count() == 3
    assert Review.objects.count() == 6
