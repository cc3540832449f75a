"""The admin page of a training run, in a real headless Chromium: live bar, plot, no CSP errors."""

from __future__ import annotations

import pytest

from tests.browser import BROWSER_MARKS, browser_errors  # noqa: E402
from training.models import TrainingRun

pytestmark = BROWSER_MARKS

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def test_the_run_page_follows_a_training_run_live(live_server, browser, django_user_model):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(
        "tess", password="a-long-test-password", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="training"))
    run = TrainingRun.objects.create(
        trigger="button", status="running", attempts=1, progress=0.25,
        metrics=[{"epoch": 1, "train_loss": 0.7, "val_loss": 0.69, "val_map": 0.41}],
        log="attempt 1 claimed\n",
    )
    browser.get(f"{live_server.url}/admin/login/?next=/admin/training/trainingrun/{run.pk}/change/")
    browser.find_element(By.NAME, "username").send_keys("tess")
    browser.find_element(By.NAME, "password").send_keys("a-long-test-password")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait = WebDriverWait(browser, 15)
    bar = wait.until(lambda d: d.find_element(By.ID, "run-progress-bar"))
    wait.until(lambda d: "attempt 1/3" in d.find_element(By.ID, "run-progress-text").text)
    assert bar.get_attribute("value") == "25"

    # the worker reports another epoch: the page follows without a reload
    TrainingRun.objects.filter(pk=run.pk).update(
        progress=1.0, status="succeeded",
        metrics=run.metrics + [{"epoch": 2, "train_loss": 0.5, "val_loss": 0.6, "val_map": 0.6}],
        log="attempt 1 claimed\nattempt 1 succeeded\n",
    )
    wait.until(lambda d: d.find_element(By.ID, "run-progress-bar").get_attribute("value") == "100")
    wait.until(lambda d: "succeeded" in d.find_element(By.ID, "run-log-tail").text)
    plot = browser.find_element(By.ID, "run-metrics-plot")
    wait.until(lambda d: "epochs=2" in plot.get_attribute("src"))
    wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", plot) > 0)
    assert browser_errors(browser) == []
