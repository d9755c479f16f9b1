// The dashboard's one script: a run page follows its run's events (Server-Sent Events) and, on each, reloads
// the parts of the page that show the run's state (htmx swaps them), until the run's final event.
(function () {
  "use strict";
  function follow(live) {
    var source = new EventSource(live.dataset.events);
    var loading = false, again = false;
    function reload() {
      if (loading) { again = true; return; }
      loading = true;
      htmx.ajax("GET", live.dataset.refresh, { target: "#" + live.id, swap: "outerHTML" }).then(function () {
        loading = false;
        if (again) { again = false; reload(); }
      });
    }
    source.onmessage = reload;
    var finals = (live.dataset.finalEvents || "").split(" ");
    finals.forEach(function (type) {
      source.addEventListener(type, function () { source.close(); reload(); });
    });
    ["task.queued", "task.started", "task.succeeded", "task.failed", "task.retrying", "task.cancelled",
     "task.released", "task.dead", "run.created"].forEach(function (type) { source.addEventListener(type, reload); });
    source.onerror = function () { if (source.readyState === EventSource.CLOSED) { reload(); } };
  }
  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelector("[data-events]");
    if (live) { follow(live); }
  });
})();
