// The dashboard's loop panel, kept current: every 10 s it asks /api/v1/loop/ (the session's own
// login) and re-renders the panel's rows from the answer, the same markup the server renders
// (templates/loop/dashboard.html, loop.dashboard.loop_panel). No framework, no innerHTML: every
// string from the server goes in as text. When a refresh fails the panel says so and dims, so
// stale numbers never pass for live ones; the next success clears the note.
(function () {
  "use strict";

  var REFRESH_MS = 10000;
  var BADGES = { done: "done", nothing: "nothing to do", retrying: "retrying", failed: "failed" };
  var TOTALS = [  // [key, one, many], as loop.dashboard.LOOP_TOTALS
    ["votes_pulled", "vote pulled", "votes pulled"],
    ["labels_changed", "label changed", "labels changed"],
    ["subjects_retired", "subject retired", "subjects retired"],
    ["training_runs_requested", "training run requested", "training runs requested"],
    ["rounds_requested", "round requested", "rounds requested"],
  ];
  var RUN_ID = "__id__";

  var live = window.crowdloopLive;  // loop/static/loop/live.js
  var el = live.el, truncate = live.truncate, exact = live.exact, ago = live.ago;

  // A <time> relative to the answer's own clock, so the browser's clock does not matter.
  function when(iso, now) {
    return el("time", { datetime: iso, title: exact(iso) }, ago((now - new Date(iso)) / 1000));
  }

  function badge(status, text) {
    return el("span", { class: "cl-badge cl-badge-" + (status || "none") }, text);
  }

  function replaceChildren(parent, nodes) {
    while (parent.firstChild) parent.removeChild(parent.firstChild);
    nodes.forEach(function (node) {
      parent.appendChild(typeof node === "string" ? document.createTextNode(node) : node);
    });
  }

  function stepRow(step, now) {
    var status = badge(step.last_status, BADGES[step.last_status] || step.last_status || "never ran");
    var extra = step.running ? badge("running", "running") : step.pending ? badge("pending", "requested") : null;
    return el("tr", { "data-step": step.name },
      el("th", { scope: "row" }, step.label),
      el("td", null, step.last_finished_at ? when(step.last_finished_at, now) : el("span", { class: "cl-quiet" }, "never")),
      el("td", null, status, extra ? " " : null, extra),
      el("td", null, step.last_summary, step.last_error ? el("div", { class: "cl-error" }, truncate(step.last_error, 300)) : null),
      el("td", { class: "cl-waiting" }, step.waiting));
  }

  function eventRow(event, now) {
    return el("tr", { "data-event": event.id },
      el("td", null, when(event.finished_at, now)),
      el("td", null, event.step),
      el("td", null, badge(event.status, BADGES[event.status] || event.status)),
      el("td", null, truncate(event.trigger, 120)),
      el("td", null, truncate(event.summary, 300), event.error ? el("div", { class: "cl-error" }, truncate(event.error, 300)) : null),
      el("td", { class: "num" }, Number(event.seconds).toFixed(1) + " s"));
  }

  function trainingBlock(data, runUrl, now) {
    var run = data.training.latest_run;
    var model = data.training.active_model;
    var round = data.latest_round;
    var lines = [];
    if (run) {
      var percent = Math.round(100 * Number(run.progress || 0));
      var label = "#" + run.id;
      lines.push(el("div", { class: "cl-loop-line" },
        "Latest run ", runUrl ? el("a", { href: runUrl.replace(RUN_ID, String(run.id)) }, label) : label, ": ",
        badge(run.status, run.status), " ",
        el("progress", { max: "100", value: String(percent), title: percent + "%" }), " " + percent + "%",
        run.trigger ? " " : null, run.trigger ? el("span", { class: "cl-quiet" }, "(" + run.trigger + ")") : null,
        run.error ? el("div", { class: "cl-error" }, truncate(run.error, 300)) : null));
    } else {
      lines.push(el("div", { class: "cl-loop-line" }, el("span", { class: "cl-quiet" }, "No training run yet.")));
    }
    if (model) {
      lines.push(el("div", { class: "cl-loop-line" }, "Active model v" + model.id,
        model.val_map !== null && model.val_map !== undefined ? ", val mAP " + Number(model.val_map).toFixed(3) : null,
        model.promoted_at ? ", promoted " : null, model.promoted_at ? when(model.promoted_at, now) : null));
    } else {
      lines.push(el("div", { class: "cl-loop-line" }, el("span", { class: "cl-quiet" }, "No active model.")));
    }
    lines.push(el("div", { class: "cl-loop-line" }, round
      ? "Latest round " + round.number + ": " + round.status + ", " + round.strategy
      : el("span", { class: "cl-quiet" }, "No round yet.")));
    return lines;
  }

  function render(panel, data) {
    var now = new Date(data.generated_at);
    var runUrl = panel.getAttribute("data-run-url");
    replaceChildren(panel.querySelector("#loop-steps tbody"),
      data.steps.map(function (step) { return stepRow(step, now); }));

    var totals = [el("strong", null, "Last 24 h:"), " "];
    TOTALS.forEach(function (total, i) {
      var n = data.totals_24h[total[0]] || 0;
      if (i) totals.push(" · ");
      totals.push(el("span", null, n + " " + (n === 1 ? total[1] : total[2])));
    });
    replaceChildren(panel.querySelector("#loop-totals"), totals);

    var training = panel.querySelector("#loop-training");
    replaceChildren(training, [el("h3", null, "Training")].concat(trainingBlock(data, runUrl, now)));

    var failures = data.failures.map(function (event) {
      return el("li", { class: "cl-error" }, when(event.finished_at, now),
        " · " + event.step + ": " + truncate(event.error || event.summary, 300));
    });
    if (!failures.length) failures = [el("li", { class: "cl-quiet" }, "None recorded.")];
    replaceChildren(panel.querySelector("#loop-failures ul"), failures);

    var events = data.events.map(function (event) { return eventRow(event, now); });
    if (!events.length) {
      events = [el("tr", null, el("td", { colspan: "6", class: "cl-empty" }, "No event yet: the loop has not run."))];
    }
    replaceChildren(panel.querySelector("#loop-events tbody"), events);
    panel.querySelector("#loop-updated").textContent = exact(data.generated_at);
  }

  function failed(panel, reason) {
    var note = panel.querySelector("#loop-refresh-error");
    var since = panel.querySelector("#loop-updated").textContent;
    note.textContent = "Could not refresh (" + reason + ") at " + exact(new Date().toISOString())
      + ": the figures below are from " + since + " and may be out of date. Retrying every 10 s.";
    note.hidden = false;
    panel.classList.add("cl-stale");
  }

  function refreshed(panel) {
    panel.querySelector("#loop-refresh-error").hidden = true;
    panel.classList.remove("cl-stale");
  }

  function init() {
    var panel = document.getElementById("loop-panel");
    if (!panel || !window.fetch) return;
    live.poll(panel.getAttribute("data-api"), REFRESH_MS, function (data) {
      render(panel, data);
      refreshed(panel);
    }, function (reason) {
      failed(panel, reason);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
