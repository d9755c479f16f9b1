// The dashboard's one script (the pages allow no inline script). A run's page follows the run's events
// (Server-Sent Events, replayed from the first on opening): each is added to the events timeline and reloads
// the parts of the page that show the run's state (htmx swaps them in), until the run's final event; what
// running tools write to stderr comes along and shows in an opened node.
(function () {
  "use strict";

  function summary(data) {
    var parts = [];
    ["step", "attempt", "error", "signal", "worker_id"].forEach(function (key) {
      if (data && data[key] !== undefined && data[key] !== null) { parts.push(key + " " + data[key]); }
    });
    return parts.join(" · ");
  }

  function follow(run) {
    var timeline = document.getElementById(run.dataset.timeline);
    var finals = (run.dataset.finalEvents || "").split(" ");
    var source = new EventSource(run.dataset.events);
    var loading = false, again = false;

    function reload() {
      if (loading) { again = true; return; }
      loading = true;
      var opened = document.getElementById("node-detail");  // an opened node follows its tasks too
      var loads = [htmx.ajax("GET", run.dataset.refresh, { target: "#" + run.dataset.target, swap: "outerHTML" })];
      if (opened) { loads.push(htmx.ajax("GET", opened.dataset.refresh, { target: "#node", swap: "innerHTML" })); }
      Promise.allSettled(loads).then(function () {
        loading = false;
        if (again) { again = false; reload(); }
      });
    }

    // What each running task's tool wrote to stderr so far, by task id: an opened node shows its tasks'.
    var logs = {};
    function showLogs() {
      document.querySelectorAll("[data-live-task]").forEach(function (pre) {
        pre.textContent = logs[pre.dataset.liveTask] || "";
      });
    }
    document.body.addEventListener("htmx:afterSwap", showLogs);

    function add(message) {
      var event = JSON.parse(message.data);
      if (event.type === "log") {
        logs[event.data.task_id] = (logs[event.data.task_id] || "") + event.data.text;
        showLogs();
        return;
      }
      var item = document.createElement("li");
      item.dataset.type = event.type;
      var when = document.createElement("time");
      when.dateTime = event.at;
      when.textContent = (event.at || "").replace("T", " ").slice(0, 23);
      var kind = document.createElement("strong");
      kind.textContent = event.type;
      item.append(when, " ", kind, " ", summary(event.data));
      timeline.append(item);
      if (finals.indexOf(event.type) >= 0) { source.close(); }
      reload();
    }

    source.onmessage = add;  // the dashboard's stream sends every event unnamed, its type in its data
  }

  // A button with data-dismiss="ID" empties that region (the flash region's "Keep them", say).
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-dismiss]");
    if (button) { document.getElementById(button.dataset.dismiss).replaceChildren(); }
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-events]").forEach(follow);
  });
})();
