// Polls a training run's progress.json and refreshes the bar, the log tail and the plot.
(function () {
  "use strict";
  function start() {
    var box = document.getElementById("run-live");
    if (!box) { return; }
    var url = box.dataset.progressUrl, plotUrl = box.dataset.plotUrl, epochs = -1;
    var bar = document.getElementById("run-progress-bar");
    var text = document.getElementById("run-progress-text");
    var plot = document.getElementById("run-metrics-plot");
    var log = document.getElementById("run-log-tail");
    function poll() {
      fetch(url, {credentials: "same-origin", cache: "no-store"})
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (data) {
          var pct = Math.round(data.progress * 100);
          bar.value = pct;
          text.textContent = pct + "% · " + data.status + " · attempt " + data.attempts +
            "/" + data.max_attempts + (data.error ? " · " + data.error : "");
          log.textContent = data.log_tail.join("\n");
          if (data.epochs !== epochs) {  // a new epoch: redraw the plot
            epochs = data.epochs;
            plot.src = plotUrl + "?epochs=" + epochs;
          }
          if (!data.finished) { window.setTimeout(poll, 2000); }
        })
        .catch(function () { window.setTimeout(poll, 10000); });
    }
    poll();
  }
  document.addEventListener("DOMContentLoaded", start);
}());
