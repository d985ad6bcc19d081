// Outpost console: live refresh of an element marked data-refresh="SECONDS" (the overview).
// The page is fetched again with the session cookie and the element's content replaced; a
// session that ended reloads the page, which then shows the sign-in form.
(function () {
  "use strict";
  var live = document.querySelector("[data-refresh]");
  if (!live) { return; }
  var every = Math.max(2, parseInt(live.getAttribute("data-refresh"), 10) || 5) * 1000;
  function refresh() {
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById(live.id);
        if (fresh) { live.innerHTML = fresh.innerHTML; }
      })
      .catch(function () { /* the node is unreachable: try again at the next tick */ })
      .then(function () { window.setTimeout(refresh, every); });
  }
  window.setTimeout(refresh, every);
})();
