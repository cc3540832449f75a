// The staff actions page's lists of recent runs, kept current: every few seconds it asks the
// page's runs.json (the session's own login) and re-renders each list's rows with the markup the
// server renders (templates/loop/admin/_run_rows.html). No innerHTML: every string from the
// server goes in as text. When a refresh fails the page says so and dims the lists, so stale
// states never pass for live ones; the next success clears the note.
(function () {
  "use strict";

  // The table of each section in runs.json.
  var TABLES = { sync: "runs-sync", rounds: "runs-rounds", pushes: "runs-pushes", releases: "runs-releases" };

  var live = window.crowdloopLive;  // loop/static/loop/live.js
  var el = live.el, truncate = live.truncate, exact = live.exact, ago = live.ago;

  function row(run, now) {
    return el("tr", { "data-key": run.key, "data-status": run.status },
      el("td", null, el("span", { class: "cl-badge cl-badge-" + run.status }, run.status)),
      el("td", null,
        run.url ? el("a", { href: run.url }, run.title) : run.title,
        run.by ? " " : null, run.by ? el("span", { class: "cl-quiet" }, "by " + run.by) : null),
      el("td", null, truncate(run.detail, 300),
        run.error ? el("div", { class: "cl-error" }, truncate(run.error, 300)) : null),
      el("td", null, run.at
        ? el("time", { datetime: run.at, title: exact(run.at) }, ago((now - new Date(run.at)) / 1000))
        : null));
  }

  function render(page, data) {
    var now = new Date(data.generated_at);
    Object.keys(data.sections).forEach(function (section) {
      var table = document.getElementById(TABLES[section]);
      if (!table) return;
      var body = table.querySelector("tbody");
      var rows = data.sections[section].map(function (run) { return row(run, now); });
      if (!rows.length) {
        rows = [el("tr", null, el("td", { colspan: "4", class: "cl-quiet" }, table.getAttribute("data-empty")))];
      }
      while (body.firstChild) body.removeChild(body.firstChild);
      rows.forEach(function (node) { body.appendChild(node); });
    });
    document.getElementById("runs-updated").textContent = exact(data.generated_at);
  }

  function init() {
    var page = document.getElementById("staff-actions");
    if (!page || !window.fetch) return;
    var every = Number(page.getAttribute("data-refresh-ms")) || 5000;
    var note = document.getElementById("runs-refresh-error");
    live.poll(page.getAttribute("data-runs"), every, function (data) {
      render(page, data);
      note.hidden = true;
      page.classList.remove("cl-stale");
    }, function (reason) {
      note.textContent = "Could not refresh (" + reason + ") at " + exact(new Date().toISOString())
        + ": the lists below are from " + document.getElementById("runs-updated").textContent
        + " and may be out of date. Retrying.";
      note.hidden = false;
      page.classList.add("cl-stale");
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
