// What the pages that keep themselves current share (the dashboard's loop panel, the staff
// actions' runs): building nodes without innerHTML, dates as the server writes them, and a
// poller that asks a JSON URL with the session's own login every few seconds, skips hidden tabs,
// never overlaps itself, and says why a refresh failed. Loaded before the page's own script.
(function () {
  "use strict";

  // el("td", {class: "num"}, "12", otherNode): attributes set as attributes, children as text
  // or nodes; null and "" children are skipped.
  function el(tag, attrs, ...children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (attrs[name] !== null && attrs[name] !== undefined) node.setAttribute(name, attrs[name]);
    });
    children.forEach(function (child) {
      if (child === null || child === undefined || child === "") return;
      node.appendChild(typeof child === "string" || typeof child === "number"
        ? document.createTextNode(String(child)) : child);
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

  // Ask ``url`` every ``everyMs``: onData(json) on success, onError(reason) on failure.
  function poll(url, everyMs, onData, onError) {
    var timer = null;
    var inFlight = false;

    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(refresh, everyMs);
    }

    function refresh() {
      // A hidden tab asks nothing; it refreshes as soon as it is shown again.
      if (document.hidden || inFlight) return schedule();
      inFlight = true;
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          var type = response.headers.get("Content-Type") || "";
          // A lost session lands on the login page: HTML, not JSON.
          if (type.indexOf("application/json") === -1) throw new Error("not signed in?");
          return response.json();
        })
        .then(onData)
        .catch(function (error) {
          var reason = error && error.message ? error.message : "network error";
          onError(reason === "Failed to fetch" ? "no answer from the server" : reason);
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

  window.crowdloopLive = { el: el, truncate: truncate, exact: exact, ago: ago, poll: poll };
})();
