// txcoord console: live refresh of the element #live. Every data-interval
// ms it fetches data-live (a server-rendered fragment of the same page) and
// swaps it in, unless paused, the tab is hidden, or focus is inside it (so
// typing in a filter is never interrupted). A 401/403 answer means the
// session ended: go to the sign-in page. Nothing else runs on the page.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var toggle = document.getElementById("live-toggle");
  var note = document.getElementById("live-note");
  if (!live || !live.dataset.live) {
    return;
  }
  var src = live.dataset.live;
  var every = parseInt(live.dataset.interval, 10) || 2000;
  var paused = false;
  var busy = false;
  var failures = 0;

  function say(text) {
    if (note) {
      note.textContent = text;
    }
  }

  function clock() {
    var d = new Date();
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }

  function refresh() {
    if (paused || busy || document.hidden) {
      return;
    }
    if (live.contains(document.activeElement) && document.activeElement !== document.body) {
      return;
    }
    busy = true;
    var ctl = typeof AbortController === "function" ? new AbortController() : null;
    var timer = setTimeout(function () { if (ctl) { ctl.abort(); } }, Math.max(every * 3, 8000));
    fetch(src, { credentials: "same-origin", headers: { "Accept": "text/html" }, signal: ctl ? ctl.signal : undefined })
      .then(function (resp) {
        if (resp.status === 401 || resp.status === 403) {
          window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
          return null;
        }
        if (!resp.ok) {
          throw new Error("HTTP " + resp.status);
        }
        return resp.text();
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        live.innerHTML = html;
        failures = 0;
        say("Live: updated at " + clock() + ".");
      })
      .catch(function (err) {
        failures++;
        say("Live: update failed (" + err.message + "); retrying. Last good data is shown.");
      })
      .then(function () {
        clearTimeout(timer);
        busy = false;
      });
  }

  if (toggle) {
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.setAttribute("aria-pressed", paused ? "true" : "false");
      toggle.textContent = paused ? "Resume live updates" : "Pause live updates";
      say(paused ? "Live updates paused." : "Live updates resumed.");
      if (!paused) {
        refresh();
      }
    });
  }
  setInterval(refresh, every);
})();
