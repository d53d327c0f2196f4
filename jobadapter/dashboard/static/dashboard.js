// Live refresh, the only script: with "Live" ticked, a page reloads itself every 5 s
// (unless someone is typing). Every view and action works without it.
(function () {
  "use strict";
  var box = document.getElementById("live");
  if (!box) { return; }
  box.parentElement.classList.add("ready");
  var key = "jobadapter-dashboard-live";
  box.checked = window.localStorage.getItem(key) === "on";
  box.addEventListener("change", function () {
    window.localStorage.setItem(key, box.checked ? "on" : "off");
  });
  window.setInterval(function () {
    var typing = document.activeElement && document.activeElement.tagName === "INPUT" && document.activeElement.type !== "checkbox";
    if (box.checked && !typing) { window.location.reload(); }
  }, 5000);
})();
