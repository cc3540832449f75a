// Keyboard shortcuts of the review screens. No framework: the page works without this file.
//   a / e / r / s  press Accept, Save edit, Reject, Skip (p: take the prior labels, when offered)
//   1-9, 0         toggle the first ten concepts' checkboxes (0 is the tenth)
//   j / k          next / previous item in the queue (after a decision, k goes back to it)
//   z              zoom the image (twice its shown size; the stage scrolls)
//   g              evidence map: cycle through the concepts the model scored, then none
//   v              open (or close) every concept's list of votes
//   Esc            leave the comment box, so the keys above work again
(function () {
  "use strict";

  function typing(target) {
    if (!target) return false;
    if (target.isContentEditable) return true;
    if (target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
    return target.tagName === "INPUT" && target.type !== "checkbox" && target.type !== "radio";
  }

  function init() {
    var form = document.getElementById("review-form");
    var boxes = form ? Array.prototype.slice.call(form.querySelectorAll('input[name="concepts"]')) : [];
    var buttons = {};
    if (form) {
      form.querySelectorAll("button[data-shortcut]").forEach(function (button) {
        buttons[button.getAttribute("data-shortcut")] = button;
      });
    }
    var links = { j: document.getElementById("review-next"), k: document.getElementById("review-previous") };
    var submitting = false;
    var evidence = evidenceInit();
    var votes = votesInit();
    var stage = document.getElementById("review-stage");
    if (stage) {
      stage.addEventListener("click", function () { stage.classList.toggle("cl-zoomed"); });
    }

    // A row whose tick differs from the shown final label is marked, so an edit is visible.
    boxes.forEach(function (box) {
      box.addEventListener("change", function () {
        var row = box.closest("tr");
        if (row) row.classList.toggle("cl-changed", box.checked !== box.defaultChecked);
      });
    });
    if (form) {
      // One decision per page: a second key press while the first POST is on its way is ignored.
      form.addEventListener("submit", function () { submitting = true; });
    }

    document.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
      if (typing(event.target)) {
        if (event.key === "Escape") event.target.blur();
        return;
      }
      if (submitting) return;
      var key = event.key;
      if (/^[0-9]$/.test(key)) {
        var box = boxes[key === "0" ? 9 : Number(key) - 1];
        if (box && !box.disabled) {
          event.preventDefault();
          box.checked = !box.checked;
          box.dispatchEvent(new Event("change", { bubbles: true }));
        }
        return;
      }
      var button = buttons[key];
      if (button && !button.disabled) {
        event.preventDefault();
        if (form.requestSubmit) {
          form.requestSubmit(button);
        } else {
          button.click();
        }
        return;
      }
      if (key === "z" && stage) {
        event.preventDefault();
        stage.classList.toggle("cl-zoomed");
        return;
      }
      if (key === "v" && votes) {
        event.preventDefault();
        votes.toggleAll();
        return;
      }
      if (key === "g" && evidence) {
        event.preventDefault();
        evidence.cycle();
        return;
      }
      var link = links[key];
      if (link) {
        event.preventDefault();
        window.location.assign(link.href);
      }
    });
  }

  // Who voted what: fetched once, when a curator first opens a concept's votes (most decisions
  // need only the counts), then every list is filled: ✓ or ✗, the volunteer linked to their page,
  // their sensitivity and specificity on that concept, and a link to every item they classified.
  function votesInit() {
    var table = document.getElementById("review-concepts");
    if (!table || !window.fetch) return null;
    var lists = Array.prototype.slice.call(table.querySelectorAll("ul.cl-voters"));
    var details = lists.map(function (list) { return list.closest("details"); });
    var asked = false;

    function text(tag, className, value) {
      var node = document.createElement(tag);
      if (className) node.className = className;
      node.textContent = value;
      return node;
    }

    function link(href, className, value, title) {
      var node = text("a", className, value);
      node.href = href;
      if (title) node.title = title;
      return node;
    }

    function fill(data) {
      lists.forEach(function (list) {
        (data.concepts[list.getAttribute("data-concept")] || []).forEach(function (vote) {
          var voter = data.voters[vote[0]];
          var item = document.createElement("li");
          item.className = (vote[1] ? "cl-vote-for" : "cl-vote-against") + (voter.excluded ? " cl-vote-excluded" : "");
          item.appendChild(document.createTextNode(vote[1] ? "✓ " : "✗ "));
          item.appendChild(link(voter.url, "", voter.name));
          var skill = vote[2] === null ? "skill not estimated yet"
            : "se " + vote[2].toFixed(2) + " · sp " + vote[3].toFixed(2);
          var span = text("span", "cl-skill", skill);
          span.title = "this volunteer's sensitivity (ticks it when present) and specificity (leaves it when absent) on this concept";
          item.appendChild(span);
          if (voter.excluded) item.appendChild(text("em", "", " excluded"));
          item.appendChild(link(voter.items_url, "cl-voter-items", "items", "every item this volunteer classified"));
          list.appendChild(item);
        });
      });
      table.setAttribute("data-votes-loaded", "");
    }

    function load() {
      if (asked) return;
      asked = true;
      fetch(table.getAttribute("data-votes-url"), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(fill)
        .catch(function (error) {
          asked = false;  // the next opening tries again
          lists.forEach(function (list) {
            list.textContent = "";
            list.appendChild(text("li", "cl-error", "could not load the votes (" + error.message + ")"));
          });
        });
    }

    details.forEach(function (node) {
      node.addEventListener("toggle", function () { if (node.open) load(); });
    });
    return {
      toggleAll: function () {
        var open = !details.some(function (node) { return node.open; });
        details.forEach(function (node) { node.open = open; });
        if (open) load();
      },
    };
  }

  // Grad-CAM of the active model laid over the image: a transparent map at the image's shown
  // size, from /training/items/<id>/explain/<concept>.png (cached per model version there).
  function evidenceInit() {
    var select = document.getElementById("review-evidence-concept");
    var layer = document.getElementById("review-evidence");
    var image = document.getElementById("review-image");
    var status = document.getElementById("review-evidence-status");
    if (!select || !layer || !image) return null;
    var template = select.getAttribute("data-url");
    // The version pins the map in the browser's cache for a day; a promotion redirects it.
    var version = select.getAttribute("data-version");

    function show(concept) {
      select.value = concept;
      document.querySelectorAll(".cl-evidence-button").forEach(function (button) {
        button.classList.toggle("cl-active", button.getAttribute("data-concept") === concept);
      });
      if (!concept) {
        layer.hidden = true;
        layer.removeAttribute("src");
        if (status) status.textContent = "";
        return;
      }
      var size = Math.round(Math.max(image.clientWidth, image.clientHeight) * (window.devicePixelRatio || 1));
      var url = template.replace("CONCEPT", encodeURIComponent(concept)) + "?size=" + Math.max(64, Math.min(1024, size || 512)) + (version ? "&v=" + version : "");
      if (status) status.textContent = "drawing the evidence map for " + concept + "…";
      layer.onload = function () { if (status) status.textContent = "evidence map: " + concept; layer.hidden = false; };
      layer.onerror = function () { if (status) status.textContent = "no evidence map for " + concept; layer.hidden = true; };
      layer.src = url;
    }

    select.addEventListener("change", function () { show(select.value); });
    document.querySelectorAll(".cl-evidence-button").forEach(function (button) {
      button.addEventListener("click", function () {
        var concept = button.getAttribute("data-concept");
        show(select.value === concept ? "" : concept);
      });
    });
    return {
      cycle: function () {
        var next = (select.selectedIndex + 1) % select.options.length;
        show(select.options[next].value);
      },
    };
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
