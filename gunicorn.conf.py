"""gunicorn's settings for every way the web server starts from the repository (or /app in the
image): gunicorn reads ``./gunicorn.conf.py`` by itself; flags on its command line win.

Each worker, once started, warms up the evidence maps in a background thread: PyTorch imported
and the active model loaded (``training.services.explain.explain_warm``), so that a curator's
first Grad-CAM map is drawn in tens of milliseconds instead of a second and a half.
"""

from __future__ import annotations

import threading


def post_worker_init(worker) -> None:
    def warm() -> None:
        from training.services.explain import explain_warm

        if explain_warm():
            worker.log.info("evidence maps: the active model is loaded")

    threading.Thread(target=warm, name="explain-warm", daemon=True).start()
