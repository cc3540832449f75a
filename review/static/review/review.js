// Keyboard shortcuts of the review screens. No framework: the page works without this file.
//   a / e / r / s  press Accept, Save edit, Reject, Skip
//   1-9, 0         toggle the first ten concepts' checkboxes (0 is the tenth)
//   j / k          next / previous item in the queue
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
      var link = links[key];
      if (link) {
        event.preventDefault();
        window.location.assign(link.href);
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
