"""A curator reviews items in a real headless Chromium: login, queue, shortcuts, edit, reject.

Screenshots of the item screen and the plots page go to $CROWDLOOP_SCREENSHOTS when set (else to
the test's temporary folder), so a person can look at them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotate.models import Item, PriorLabel, Review, Volunteer, VolunteerSkill
from tests.browser import BROWSER_MARKS  # noqa: E402
from tests.factories import item_with_labels

pytestmark = BROWSER_MARKS

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def image_file(media: Path, name: str, seed: int) -> str:
    """A PNG that looks like a scanned object, written under MEDIA_ROOT; its relative path."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:240, 0:320]
    base = np.stack([120 + 80 * np.sin(x / (20 + seed)), 100 + 60 * np.cos(y / 30), 90 + 0 * x], -1)
    pixels = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
    pixels[60:180, 100:220] = (170, 130, 60)  # a frame, so the picture has a subject
    pixels[75:165, 115:205] = (60, 90, 140)
    path = media / "items" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return f"items/{name}.png"


def crowd_item(concepts, external_id: str, posteriors: dict[str, float], **fields) -> Item:
    return item_with_labels(
        concepts, external_id, posteriors, votes=fields.pop("votes", 6), **fields
    )


def background(concepts) -> None:
    """Settled items and volunteers behind the three under review, so the plots have a shape."""
    rng = np.random.default_rng(3)
    keys = list(concepts)
    for i in range(60):
        # Confident posteriors only: these stay behind the three items under review in the queue.
        chosen = rng.choice(keys, size=4, replace=False)
        posteriors = {
            str(key): float(rng.choice([rng.uniform(0.0, 0.25), rng.uniform(0.75, 1.0)]))
            for key in chosen
        }
        crowd_item(concepts, f"settled-{i:03d}", posteriors, votes=int(rng.integers(1, 12)))
    for v in range(40):
        volunteer = Volunteer.objects.create(key=f"volunteer-{v}", user_name=f"volunteer {v}")
        VolunteerSkill.objects.bulk_create(
            VolunteerSkill(
                volunteer=volunteer,
                concept=concepts[key],
                sensitivity=float(np.clip(rng.normal(0.8, 0.12), 0, 1)),
                specificity=float(np.clip(rng.normal(0.9, 0.07), 0, 1)),
                n_votes=int(rng.integers(1, 200)),
            )
            for key in keys[:5]
        )


def wait_for_path(driver, path: str) -> None:
    WebDriverWait(driver, 15).until(lambda d: d.current_url.split("?")[0].endswith(path))


def csp_violations(driver) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]


def test_a_curator_reviews_three_items_in_the_browser(
    live_server, browser, concepts, curator, served_media, screenshots
):
    painting_prior = crowd_item(
        concepts,
        "europeana/01/painting",
        {"painting": 0.99, "drawing": 0.03, "map": 0.01},
        contradicts_prior=True,
        title='Portrait <img src=x onerror=alert(1)> "of a lady"',
        provider="Rijksmuseum",
        image_file=image_file(served_media, "one", 1),
    )
    PriorLabel.objects.create(item=painting_prior, concept=concepts["drawing"])
    unsure = crowd_item(
        concepts,
        "europeana/02/map",
        {"painting": 0.55, "map": 0.4, "drawing": 0.1},
        title="Map of the coast",
        image_file=image_file(served_media, "two", 2),
    )
    third = crowd_item(
        concepts,
        "europeana/03/blurred",
        {"photograph": 0.6, "postcard": 0.3},
        title="A blurred scan",
        image_file=image_file(served_media, "three", 3),
    )
    background(concepts)

    # Log in through the admin's own form, landing back on the queue.
    browser.get(f"{live_server.url}/review/")
    WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, "id_username")))
    browser.find_element(By.ID, "id_username").send_keys(curator.username)
    browser.find_element(By.ID, "id_password").send_keys("a-long-test-password")
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    wait_for_path(browser, "/review/")

    # The queue lists the three items first, most in need first.
    browser.save_screenshot(str(screenshots / "review_queue.png"))
    links = browser.find_elements(By.CSS_SELECTOR, "a.cl-item-link")
    assert [link.text for link in links[:3]] == [
        "europeana/01/painting",
        "europeana/02/map",
        "europeana/03/blurred",
    ]
    links[0].click()
    wait_for_path(browser, f"/review/item/{painting_prior.pk}/")
    assert (
        "<img src=x onerror=alert(1)>" in browser.find_element(By.CLASS_NAME, "cl-item-title").text
    )
    image = browser.find_element(By.CSS_SELECTOR, ".cl-image img")
    WebDriverWait(browser, 10).until(
        lambda d: d.execute_script("return arguments[0].complete", image)
    )
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 320
    browser.save_screenshot(str(screenshots / "review_item.png"))

    # 1. Accept with the keyboard shortcut.
    browser.find_element(By.TAG_NAME, "body").send_keys("a")
    wait_for_path(browser, f"/review/item/{unsure.pk}/")
    assert "accept recorded" in browser.find_element(By.CSS_SELECTOR, ".messagelist").text

    # 2. Edit: tick "map", untick "painting", comment, press the Save button.
    browser.find_element(By.CSS_SELECTOR, 'input[name="concepts"][value="map"]').click()
    browser.find_element(By.CSS_SELECTOR, 'input[name="concepts"][value="painting"]').click()
    browser.find_element(By.ID, "review-comment").send_keys("a map, not a painting")
    browser.find_element(By.ID, "review-edit").click()
    wait_for_path(browser, f"/review/item/{third.pk}/")

    # 3. Reject with the button.
    browser.find_element(By.ID, "review-comment").send_keys("too blurred to label")
    browser.find_element(By.ID, "review-reject").click()
    WebDriverWait(browser, 15).until(lambda d: f"/review/item/{third.pk}/" not in d.current_url)

    # The audit shows on the item screen.
    browser.get(f"{live_server.url}/review/item/{unsure.pk}/")
    history = browser.find_element(By.ID, "review-history").text
    assert "cora" in history and "edit" in history
    assert "painting → map" in history and "a map, not a painting" in history
    browser.get(f"{live_server.url}/review/item/{third.pk}/?state=all")
    history = browser.find_element(By.ID, "review-history").text
    assert "reject" in history and "too blurred to label" in history
    assert browser.find_element(By.ID, "review-state").text == "rejected"
    browser.get(f"{live_server.url}/review/item/{painting_prior.pk}/?state=all")
    assert "accept" in browser.find_element(By.ID, "review-history").text
    browser.save_screenshot(str(screenshots / "review_item_after.png"))

    audit = list(
        Review.objects.order_by("id").values_list(
            "item__external_id", "curator__username", "action", "before", "after", "comment"
        )
    )
    assert audit == [
        ("europeana/01/painting", "cora", "accept", ["painting"], ["painting"], ""),
        ("europeana/02/map", "cora", "edit", ["painting"], ["map"], "a map, not a painting"),
        ("europeana/03/blurred", "cora", "reject", ["photograph"], [], "too blurred to label"),
    ]
    states = {
        item.external_id: (item.review_state, item.curated_concepts)
        for item in Item.objects.filter(pk__in=[painting_prior.pk, unsure.pk, third.pk])
    }
    assert states == {
        "europeana/01/painting": ("accepted", ["painting"]),
        "europeana/02/map": ("edited", ["map"]),
        "europeana/03/blurred": ("rejected", []),
    }

    # The plots page draws its three PNGs.
    browser.set_window_size(1400, 2700)  # the three plots in one screenshot
    browser.get(f"{live_server.url}/review/plots/")
    images = browser.find_elements(By.CSS_SELECTOR, ".cl-plots img")
    assert len(images) == 3
    WebDriverWait(browser, 30).until(
        lambda d: all(d.execute_script("return arguments[0].complete", i) for i in images)
    )
    assert all(browser.execute_script("return arguments[0].naturalWidth", i) > 300 for i in images)
    browser.save_screenshot(str(screenshots / "review_plots.png"))
    browser.set_window_size(1400, 1100)

    # Nothing on these pages, nor in the admin, ran into the Content-Security-Policy.
    for path in (
        "/admin/",
        "/admin/annotate/item/",
        f"/admin/annotate/item/{unsure.pk}/change/",
        "/review/",
    ):
        browser.get(f"{live_server.url}{path}")
    assert csp_violations(browser) == []

    # And the policy is live: markup that slipped past escaping would not run.
    browser.execute_script(
        "document.body.insertAdjacentHTML('beforeend', "
        "'<img src=x onerror=\"window.__pwned = 1\">')"
    )
    WebDriverWait(browser, 10).until(lambda d: csp_violations(d))
    assert browser.execute_script("return window.__pwned") is None


def test_the_browser_shortcuts_toggle_concepts_and_move_through_the_queue(
    live_server, browser, concepts, curator, served_media
):
    first = crowd_item(concepts, "first", {"building": 0.5, "ceramics": 0.2})
    second = crowd_item(concepts, "second", {"building": 0.9})
    browser.get(f"{live_server.url}/admin/login/?next=/review/item/{first.pk}/")
    browser.find_element(By.ID, "id_username").send_keys(curator.username)
    browser.find_element(By.ID, "id_password").send_keys("a-long-test-password")
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    wait_for_path(browser, f"/review/item/{first.pk}/")

    # Typing in the comment box types; it does not decide. Esc leaves the box.
    comment = browser.find_element(By.ID, "review-comment")
    comment.send_keys("a e r s 1 j")
    assert comment.get_attribute("value") == "a e r s 1 j"
    comment.send_keys(Keys.ESCAPE)
    assert not Review.objects.exists()

    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("j")
    wait_for_path(browser, f"/review/item/{second.pk}/")
    browser.find_element(By.TAG_NAME, "body").send_keys("k")
    wait_for_path(browser, f"/review/item/{first.pk}/")

    # 1-9 toggle the first nine concepts and 0 the tenth, in vocabulary order.
    body = browser.find_element(By.TAG_NAME, "body")
    boxes = browser.find_elements(By.CSS_SELECTOR, 'input[name="concepts"]')
    assert not any(b.is_selected() for b in boxes)
    for key in "1330":
        body.send_keys(key)
    assert [b.is_selected() for b in boxes[:3]] == [True, False, False]
    assert boxes[9].is_selected()
    body.send_keys("3")
    body.send_keys("e")
    wait_for_path(browser, f"/review/item/{second.pk}/")
    review = Review.objects.get()
    keys = list(concepts)  # the vocabulary in its order, as the rows are
    expected = sorted([keys[0], keys[2], keys[9]])
    assert (review.item_id, review.action, review.after) == (first.pk, "edit", expected)
