// Keyboard shortcuts of the review screens. No framework: the page works without this file.
//   a / e / r / s  press Accept, Save edit, Reject, Skip (p: take the prior labels, when offered)
//   1-9, 0         toggle the first ten concepts' checkboxes (0 is the tenth)
//   j / k          next / previous item in the queue (after a decision, k goes back to it)
//   z              zoom the image (twice its shown size; the stage scrolls)
//   g              evidence map: cycle through the concepts the model scored, then none
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
