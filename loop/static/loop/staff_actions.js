// The staff actions page's lists of recent runs, kept current: every few seconds it asks the
// page's runs.json (the session's own login) and re-renders each list's rows with the markup the
// server renders (templates/loop/admin/_run_rows.html). No innerHTML: every string from the
// server goes in as text. When a refresh fails the page says so and dims the lists, so stale
// states never pass for live ones; the next success clears the note.
(function () {
  "use strict";

  // The table of each section in runs.json.
  var TABLES = { sync: "runs-sync", rounds: "runs-rounds", pushes: "runs-pushes", releases: "runs-releases" };

  function el(tag, attrs, ...children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (attrs[name] !== null && attrs[name] !== undefined) node.setAttribute(name, attrs[name]);
    });
    children.forEach(function (child) {
      if (child === null || child === undefined || child === "") return;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function truncate(text, n) {
    text = text || "";
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }

  function exact(iso) {
    return new Date(iso).toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  // Whole units, rounded down, as loop.dashboard.time_ago writes them.
  function ago(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 2 * 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }

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
    var url = page.getAttribute("data-runs");
    var every = Number(page.getAttribute("data-refresh-ms")) || 5000;
    var note = document.getElementById("runs-refresh-error");
    var timer = null;
    var inFlight = false;

    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(refresh, every);
    }

    function refresh() {
      // A hidden tab asks nothing; it refreshes as soon as it is shown again.
      if (document.hidden || inFlight) return schedule();
      inFlight = true;
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          var type = response.headers.get("Content-Type") || "";
          // A lost session lands on the login page: HTML, not the runs.
          if (type.indexOf("application/json") === -1) throw new Error("not signed in?");
          return response.json();
        })
        .then(function (data) {
          render(page, data);
          note.hidden = true;
          page.classList.remove("cl-stale");
        })
        .catch(function (error) {
          var reason = error && error.message ? error.message : "network error";
          if (reason === "Failed to fetch") reason = "no answer from the server";
          note.textContent = "Could not refresh (" + reason + ") at " + exact(new Date().toISOString())
            + ": the lists below are from " + document.getElementById("runs-updated").textContent
            + " and may be out of date. Retrying.";
          note.hidden = false;
          page.classList.add("cl-stale");
        })
        .finally(function () {
          inFlight = false;
          schedule();
        });
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) {
        clearTimeout(timer);
        refresh();
      }
    });
    schedule();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
