/* Podium's web UI: the one script (no build, no dependencies).
 *
 * The page is a static shell; this fetches the visible page's server-rendered fragment
 * (/ui/fragment/<page>, with the ACL token when there is one), swaps it in, and fetches
 * it again when the event stream (/v1/event/stream, NDJSON read through fetch so that the
 * token header goes with it) reports a change to what the page shows: at most one
 * refresh per REFRESH_MS.  Elements marked data-keep (filters being typed into, the log
 * tail, resource usage) survive a swap.  The token lives in sessionStorage only.
 */
(function () {
  "use strict";

  var TOKEN_KEY = "podium-token";
  var REFRESH_MS = 400;
  var POLL_MS = 1000; // only while the event stream cannot be followed
  var LOG_MAX_CHARS = 200000;
  var TERMINAL = { complete: 1, failed: 1, lost: 1 };
  var HEARTBEAT_S = 5; // the stream's idle heartbeat, asked of the server
  var LIST_PAGES = { jobs: 1, services: 1, evaluations: 1, variables: 1 };

  var aclOn = document.body.getAttribute("data-acl") === "on";
  var view = document.getElementById("view");
  var live = document.getElementById("live");

  // ------------------------------------------------------------------ token
  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }
  function setToken(value) {
    try {
      if (value) { sessionStorage.setItem(TOKEN_KEY, value); } else { sessionStorage.removeItem(TOKEN_KEY); }
    } catch (e) { /* storage off: the token lasts until the page is left */ }
  }
  function headers(extra) {
    var h = extra || {};
    var t = token();
    if (t) { h["X-Podium-Token"] = t; }
    return h;
  }

  // ------------------------------------------------------------------ where we are
  function route() {
    var rest = location.pathname.replace(/^\/ui\/?/, "");
    if (!rest) { rest = "jobs"; }
    var page = rest.split("/")[0];
    var params = new URLSearchParams(location.search);
    if (LIST_PAGES[page] && !params.has("namespace")) { params.set("namespace", "*"); }
    return { page: page, rest: rest, params: params };
  }
  function fragmentUrl() {
    var r = route();
    var q = r.params.toString();
    return "/ui/fragment/" + r.rest + (q ? "?" + q : "");
  }
  function markNav(page) {
    var links = document.querySelectorAll("[data-nav]");
    for (var i = 0; i < links.length; i++) {
      var on = links[i].getAttribute("data-nav").split(" ").indexOf(page) >= 0;
      if (on) { links[i].setAttribute("aria-current", "page"); } else { links[i].removeAttribute("aria-current"); }
    }
  }

  // ------------------------------------------------------------------ login
  function showLogin(message) {
    stopAll();
    view.innerHTML = "";
    view.hidden = true;
    document.getElementById("login").hidden = false;
    document.getElementById("login-error").textContent = message || "";
    document.getElementById("logout").hidden = true;
    document.getElementById("who").hidden = true;
    live.textContent = "signed out";
    document.getElementById("token").focus();
  }
  function signedIn(name) {
    document.getElementById("login").hidden = true;
    view.hidden = false;
    var who = document.getElementById("who");
    if (name) { who.textContent = name; who.hidden = false; }
    document.getElementById("logout").hidden = !aclOn;
  }
  function checkToken(value) {
    return fetch("/v1/acl/token/self", { headers: { "X-Podium-Token": value }, cache: "no-store" })
      .then(function (r) {
        if (r.ok) { return r.json(); }
        return r.json().then(function (b) { throw new Error(b.error || ("HTTP " + r.status)); },
                             function () { throw new Error("HTTP " + r.status); });
      });
  }
  document.getElementById("login-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var value = document.getElementById("token").value.trim();
    checkToken(value).then(function (info) {
      setToken(value);
      document.getElementById("token").value = "";
      signedIn(info.name || info.accessor_id || "signed in");
      start();
    }, function (err) {
      document.getElementById("login-error").textContent = "This token was refused: " + err.message;
    });
  });
  document.getElementById("logout").addEventListener("click", function () {
    setToken("");
    showLogin("Signed out.");
  });

  // ------------------------------------------------------------------ fragments
  var loading = false, dirty = false, timer = null, lastLoad = 0, pollTimer = null;

  function keepLive(fresh) {
    // the data-keep elements of the current view replace their fresh twins (same id)
    var kept = fresh.querySelectorAll("[data-keep][id]");
    for (var i = 0; i < kept.length; i++) {
      var old = document.getElementById(kept[i].id);
      if (old && view.contains(old)) { kept[i].replaceWith(old); }
    }
  }
  function focusKey(el) {
    // how to find "the same" control in a fresh fragment, so a live update keeps focus
    if (!el || el === document.body || !view.contains(el)) { return null; }
    if (el.id) { return "#" + CSS.escape(el.id); }
    if (el.matches("a[href]")) { return 'a[href="' + CSS.escape(el.getAttribute("href")) + '"]'; }
    if (el.matches("button[data-action]")) {
      return 'button[data-action="' + CSS.escape(el.getAttribute("data-action")) + '"]' +
        (el.getAttribute("data-group") ? '[data-group="' + CSS.escape(el.getAttribute("data-group")) + '"]' : "");
    }
    if (el.matches("details > summary") && el.parentElement.id) { return "#" + CSS.escape(el.parentElement.id) + " > summary"; }
    return null;
  }
  function swap(html) {
    var key = focusKey(document.activeElement); // before keepLive moves it out
    var tpl = document.createElement("template");
    tpl.innerHTML = html;
    keepLive(tpl.content);
    // what the person opened stays open (version diffs)
    var open = view.querySelectorAll("details[id]");
    for (var i = 0; i < open.length; i++) {
      var twin = tpl.content.getElementById ? tpl.content.getElementById(open[i].id) : null;
      if (twin) { twin.open = open[i].open; }
    }
    view.replaceChildren(tpl.content);
    if (key) {
      var again = view.querySelector(key);
      if (again) { again.focus({ preventScroll: true }); } else { view.focus({ preventScroll: true }); }
    }
    view.setAttribute("aria-busy", "false");
    var page = view.querySelector(".page");
    if (page && page.getAttribute("data-title")) {
      document.title = page.getAttribute("data-title") + " · Podium";
    }
  }
  function showError(status, message) {
    view.setAttribute("aria-busy", "false");
    view.replaceChildren();
    var box = document.createElement("div");
    box.className = "error-box";
    box.setAttribute("role", "alert");
    var h = document.createElement("h1");
    h.textContent = status === 403 ? "Not allowed" : (status === 404 ? "Not found" : "Error " + status);
    var p = document.createElement("p");
    p.textContent = message;
    box.appendChild(h); box.appendChild(p);
    view.appendChild(box);
  }
  function load() {
    if (!started) { return Promise.resolve(); } // signed out: nothing is fetched or shown
    if (loading) { dirty = true; return Promise.resolve(); }
    loading = true; dirty = false; lastLoad = Date.now();
    return fetch(fragmentUrl(), { headers: headers(), cache: "no-store" }).then(function (r) {
      return r.text().then(function (body) {
        if (!started) { return; } // signed out while it was on its way
        if (r.status === 401) { setToken(""); showLogin(errorText(body) || "Sign in to see this cluster."); return; }
        if (!r.ok) { showError(r.status, errorText(body) || r.statusText); return; }
        // the index it was rendered at: the stream starts after it, so nothing is missed
        var idx = r.headers.get("X-Podium-Index");
        if (stream === null && lastIndex === null && idx && /^[0-9]+$/.test(idx)) { lastIndex = Number(idx); }
        swap(body);
        afterSwap();
      });
    }, function (err) {
      live.textContent = "server unreachable";
    }).then(function () {
      loading = false;
      if (dirty) { schedule(); }
    });
  }
  function errorText(body) {
    try { return JSON.parse(body).error || ""; } catch (e) { return ""; }
  }
  function schedule() {
    if (timer !== null) { return; }
    var wait = Math.max(0, lastLoad + REFRESH_MS - Date.now());
    timer = setTimeout(function () { timer = null; load(); }, wait);
  }

  // ------------------------------------------------------------------ the event stream
  var stream = null, streamTopics = "", lastIndex = null, retryMs = 500, started = false, noStream = false;

  function topics() {
    var page = view.querySelector(".page");
    return page ? (page.getAttribute("data-topics") || "") : "";
  }
  function follow() {
    var want = topics();
    if (stream && want === streamTopics) { return; }
    if (stream) { stream.abort(); stream = null; }
    streamTopics = want;
    if (!want) { return; }
    var q = new URLSearchParams();
    want.split(" ").forEach(function (t) { if (t) { q.append("topic", t); } });
    q.set("namespace", "*");
    q.set("heartbeat", HEARTBEAT_S + "s");
    if (lastIndex !== null) { q.set("index", String(lastIndex)); }
    var ctl = new AbortController();
    stream = ctl;
    fetch("/v1/event/stream?" + q.toString(), { headers: headers({ Accept: "application/x-ndjson" }), signal: ctl.signal, cache: "no-store" })
      .then(function (r) {
        if (r.status === 410) { lastIndex = null; schedule(); throw new Error("too old"); }
        if (r.status === 404) { noStream = true; }
        if (!r.ok || !r.body) { throw new Error("HTTP " + r.status); }
        lastLine = Date.now();
        live.textContent = "live";
        live.className = "live on";
        noStream = false;
        retryMs = 500;
        stopPolling();
        return readLines(r.body, ctl, onEvent);
      })
      .catch(function () { /* reconnected below */ })
      .then(function () {
        if (stream !== ctl) { return; } // replaced or stopped on purpose
        stream = null;
        // a server without the event stream is polled instead (and asked again, slowly)
        live.textContent = noStream ? "polling" : "reconnecting…";
        live.className = noStream ? "live poll" : "live off";
        startPolling();
        setTimeout(function () { if (started && stream === null) { streamTopics = ""; follow(); } }, retryMs);
        retryMs = Math.min(retryMs * 2, 10000);
      });
  }
  function readLines(body, ctl, each) {
    var reader = body.getReader();
    var decoder = new TextDecoder();
    var buf = "";
    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) { return; }
        buf += decoder.decode(chunk.value, { stream: true });
        var nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          var line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) { each(line); }
        }
        return pump();
      });
    }
    return pump();
  }
  // a connection that went silent (no heartbeat for 3 periods) is dropped and reopened
  var lastLine = 0;
  setInterval(function () {
    if (stream && lastLine && Date.now() - lastLine > 3 * HEARTBEAT_S * 1000) { lastLine = 0; stream.abort(); }
  }, HEARTBEAT_S * 1000);
  function onEvent(line) {
    lastLine = Date.now();
    var ev;
    try { ev = JSON.parse(line); } catch (e) { return; }
    if (ev.code === "index_too_old") { lastIndex = null; schedule(); return; }
    if (typeof ev.index === "number") { lastIndex = ev.index; }
    if (ev.topic) { schedule(); }
  }
  function startPolling() {
    if (pollTimer === null) { pollTimer = setInterval(function () { schedule(); }, POLL_MS); }
  }
  function stopPolling() {
    if (pollTimer !== null) { clearInterval(pollTimer); pollTimer = null; }
  }
  function stopAll() {
    started = false;
    if (stream) { var s = stream; stream = null; s.abort(); }
    streamTopics = "";
    stopPolling();
    stopLogs();
    stopUsage();
  }

  // ------------------------------------------------------------------ per page
  function afterSwap() {
    follow();
    bindFilters();
    bindActions();
    var page = view.querySelector(".page[data-alloc]");
    if (page) { startLogs(page); startUsage(page); } else { stopLogs(); stopUsage(); }
  }

  function bindFilters() {
    var form = view.querySelector("form[data-filter]");
    if (!form || form.getAttribute("data-bound")) { return; }
    form.setAttribute("data-bound", "1");
    var typing = null;
    function apply() {
      var params = new URLSearchParams(location.search);
      params.delete("page"); // new filters start at the first page
      var fields = form.querySelectorAll("input[name], select[name]");
      for (var i = 0; i < fields.length; i++) {
        if (fields[i].value) { params.set(fields[i].name, fields[i].value); } else { params.delete(fields[i].name); }
      }
      var q = params.toString();
      history.replaceState(null, "", location.pathname + (q ? "?" + q : ""));
      load();
    }
    form.addEventListener("submit", function (ev) { ev.preventDefault(); apply(); });
    form.addEventListener("change", apply);
    form.addEventListener("input", function () {
      clearTimeout(typing);
      typing = setTimeout(apply, 250);
    });
  }

  // scale and stop: behind the confirmation dialog, through the API
  var dialog = document.getElementById("confirm");
  var pending = null;
  function bindActions() {
    var buttons = view.querySelectorAll("button[data-action]");
    for (var i = 0; i < buttons.length; i++) {
      if (buttons[i].getAttribute("data-bound")) { continue; }
      buttons[i].setAttribute("data-bound", "1");
      buttons[i].addEventListener("click", onAction);
    }
  }
  function onAction(ev) {
    var b = ev.currentTarget;
    pending = { action: b.getAttribute("data-action"), job: b.getAttribute("data-job"),
                namespace: b.getAttribute("data-namespace"), group: b.getAttribute("data-group"),
                deployment: b.getAttribute("data-deployment"), node: b.getAttribute("data-node"),
                name: b.getAttribute("data-name"), value: b.getAttribute("data-value") === "true",
                opener: b, key: focusKey(b) };
    var text = document.getElementById("confirm-text");
    var countBox = document.getElementById("confirm-count");
    var input = document.getElementById("confirm-count-input");
    document.getElementById("confirm-error").textContent = "";
    if (pending.action === "scale") {
      document.getElementById("confirm-title").textContent = "Scale group " + pending.group;
      text.textContent = "Set the count of group " + pending.group + " of job " + pending.job + ".";
      countBox.hidden = false;
      input.value = b.getAttribute("data-count");
      document.getElementById("confirm-ok").textContent = "Scale";
      document.getElementById("confirm-ok").className = "";
    } else if (pending.action === "eligibility" || pending.action === "drain") {
      var what = pending.action === "eligibility"
        ? (pending.value ? "Mark node " + pending.name + " eligible: the scheduler may place new allocations on it."
                         : "Mark node " + pending.name + " ineligible: nothing new is placed on it; what runs there stays.")
        : (pending.value ? "Drain node " + pending.name + ": it becomes ineligible and its allocations move to other nodes (within 1 hour, then they are stopped)."
                         : "Stop draining node " + pending.name + " (it stays ineligible until marked eligible).");
      document.getElementById("confirm-title").textContent = pending.action === "drain" ? (pending.value ? "Drain node" : "Stop drain") : "Node eligibility";
      text.textContent = what;
      countBox.hidden = true;
      document.getElementById("confirm-ok").textContent = "Confirm";
      document.getElementById("confirm-ok").className = pending.action === "drain" && pending.value ? "danger" : "";
    } else if (pending.action === "promote") {
      document.getElementById("confirm-title").textContent = "Promote canaries of " + pending.job;
      text.textContent = "Promote the canaries of job " + pending.job + ": the rollout then replaces the remaining allocations.";
      countBox.hidden = true;
      document.getElementById("confirm-ok").textContent = "Promote";
      document.getElementById("confirm-ok").className = "";
    } else {
      document.getElementById("confirm-title").textContent = "Stop job " + pending.job;
      text.textContent = "Stop every allocation of job " + pending.job + " (namespace " + pending.namespace + ")?";
      countBox.hidden = true;
      document.getElementById("confirm-ok").textContent = "Stop job";
      document.getElementById("confirm-ok").className = "danger";
    }
    dialog.showModal();
    if (pending.action === "scale") { input.focus(); input.select(); }
  }
  document.getElementById("confirm-cancel").addEventListener("click", function () { dialog.close("cancel"); });
  dialog.addEventListener("close", function () {
    if (!pending) { return; }
    var back = document.contains(pending.opener) ? pending.opener : view.querySelector(pending.key);
    if (back) { back.focus(); }
  });
  document.getElementById("confirm-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!pending) { dialog.close(); return; }
    var p = pending;
    var base = "/v1/job/" + encodeURIComponent(p.job);
    var ns = "?namespace=" + encodeURIComponent(p.namespace);
    var req;
    if (p.action === "scale") {
      var raw = document.getElementById("confirm-count-input").value;
      var count = Number(raw);
      if (raw === "" || !Number.isInteger(count) || count < 0) {
        document.getElementById("confirm-error").textContent = "The count must be a whole number, 0 or more.";
        return;
      }
      req = fetch(base + "/scale" + ns, { method: "POST", headers: headers({ "Content-Type": "application/json" }),
                                          body: JSON.stringify({ group: p.group, count: count }) });
    } else if (p.action === "eligibility" || p.action === "drain") {
      var nodeBody = p.action === "eligibility" ? { eligible: p.value } : { enable: p.value, deadline: "1h" };
      req = fetch("/v1/node/" + encodeURIComponent(p.node) + "/" + p.action,
                  { method: "PUT", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(nodeBody) });
    } else if (p.action === "promote") {
      req = fetch("/v1/deployment/" + encodeURIComponent(p.deployment) + "/promote" + ns,
                  { method: "POST", headers: headers({ "Content-Type": "application/json" }), body: "{}" });
    } else {
      req = fetch(base + ns, { method: "DELETE", headers: headers() });
    }
    req.then(function (r) {
      if (r.ok) { dialog.close("ok"); schedule(); return; }
      return r.text().then(function (body) {
        document.getElementById("confirm-error").textContent = errorText(body) || ("HTTP " + r.status);
      });
    }, function (err) {
      document.getElementById("confirm-error").textContent = "The server could not be reached: " + err.message;
    });
  });

  // ------------------------------------------------------------------ log tail
  var logs = null; // {alloc, ctl, paused, held}
  function startLogs(page) {
    var alloc = page.getAttribute("data-alloc");
    if (logs && logs.alloc === alloc) { return; }
    stopLogs();
    logs = { alloc: alloc, namespace: page.getAttribute("data-namespace"), ctl: null, paused: false, held: "", retry: null };
    var toggle = document.getElementById("log-toggle");
    toggle.addEventListener("click", function () {
      if (!logs) { return; }
      logs.paused = !logs.paused;
      toggle.textContent = logs.paused ? "Follow" : "Pause";
      toggle.setAttribute("aria-pressed", logs.paused ? "false" : "true");
      if (!logs.paused && logs.held) { appendLog(logs.held); logs.held = ""; }
      document.getElementById("log-state").textContent = logs.paused ? "paused" : "following";
    });
    document.getElementById("log-task").addEventListener("change", restartLogs);
    document.getElementById("log-type").addEventListener("change", restartLogs);
    openLogs();
  }
  function restartLogs() {
    if (!logs) { return; }
    if (logs.ctl) { logs.ctl.abort(); }
    document.getElementById("log-tail").textContent = "";
    logs.held = "";
    openLogs();
  }
  function openLogs() {
    var task = document.getElementById("log-task").value;
    var type = document.getElementById("log-type").value;
    if (!task) { return; }
    var me = logs, ctl = new AbortController();
    me.ctl = ctl;
    var q = new URLSearchParams({ task: task, type: type, origin: "end", offset: "16384", follow: "true", namespace: me.namespace });
    var state = document.getElementById("log-state");
    fetch("/v1/allocation/" + encodeURIComponent(me.alloc) + "/logs?" + q.toString(), { headers: headers(), signal: ctl.signal, cache: "no-store" })
      .then(function (r) {
        if (!r.ok || !r.body) {
          return r.text().then(function (b) { throw new Error(errorText(b) || ("HTTP " + r.status)); });
        }
        state.textContent = me.paused ? "paused" : "following";
        var reader = r.body.getReader(), dec = new TextDecoder();
        function pump() {
          return reader.read().then(function (c) {
            if (c.done) { return; }
            var text = dec.decode(c.value, { stream: true });
            if (me.paused) { me.held += text; } else { appendLog(text); }
            return pump();
          });
        }
        return pump().then(function () { return "ended"; });
      })
      .catch(function (err) {
        if (ctl.signal.aborted) { return; }
        state.textContent = "log unavailable: " + err.message + " (retrying)";
      })
      .then(function (how) {
        if (logs !== me || me.ctl !== ctl || ctl.signal.aborted) { return; }
        // a finished allocation's log ends for good: keep what was read, ask no more
        var page = view.querySelector(".page[data-alloc]");
        var status = page ? page.getAttribute("data-client-status") : "";
        if (how === "ended" && TERMINAL[status]) { state.textContent = "ended (" + status + ")"; return; }
        me.retry = setTimeout(function () { if (logs === me) { restartLogs(); } }, 2000);
      });
  }
  function appendLog(text) {
    var pre = document.getElementById("log-tail");
    if (!pre) { return; }
    var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    var all = pre.textContent + text;
    if (all.length > LOG_MAX_CHARS) { all = all.slice(all.length - LOG_MAX_CHARS); }
    pre.textContent = all;
    if (atBottom) { pre.scrollTop = pre.scrollHeight; }
  }
  function stopLogs() {
    if (!logs) { return; }
    if (logs.ctl) { logs.ctl.abort(); }
    clearTimeout(logs.retry);
    logs = null;
  }

  // ------------------------------------------------------------------ resource usage
  var usage = null;
  function startUsage(page) {
    var alloc = page.getAttribute("data-alloc");
    if (usage && usage.alloc === alloc) { return; }
    stopUsage();
    usage = { alloc: alloc, namespace: page.getAttribute("data-namespace"), timer: null };
    pollUsage(usage);
  }
  function pollUsage(me) {
    fetch("/v1/allocation/" + encodeURIComponent(me.alloc) + "/stats?namespace=" + encodeURIComponent(me.namespace),
          { headers: headers(), cache: "no-store" })
      .then(function (r) {
        return r.text().then(function (b) {
          if (r.ok) { showUsage(JSON.parse(b)); } else { usageUnavailable(errorText(b) || ("HTTP " + r.status)); }
        });
      }, function () { usageUnavailable("the server could not be reached"); })
      .then(function () { if (usage === me) { me.timer = setTimeout(function () { pollUsage(me); }, 3000); } });
  }
  function usageUnavailable(why) {
    var box = document.getElementById("usage");
    if (!box) { return; }
    box.replaceChildren();
    var p = document.createElement("p");
    p.className = "muted";
    p.textContent = "Resource usage unavailable: " + why + ".";
    box.appendChild(p);
  }
  function showUsage(s) {
    var box = document.getElementById("usage");
    if (!box) { return; }
    var table = document.createElement("table");
    table.className = "list";
    table.innerHTML = "<thead><tr><th scope='col'>Task</th><th scope='col'>CPU (% of a core)</th><th scope='col'>Memory</th><th scope='col'>Processes</th></tr></thead>";
    var body = document.createElement("tbody");
    Object.keys(s.tasks || {}).sort().forEach(function (name) {
      var t = s.tasks[name];
      var tr = document.createElement("tr");
      var mem = mb(t.memory_bytes) + (t.memory_limit_bytes ? " of " + mb(t.memory_limit_bytes) : "");
      [name, (t.cpu_percent || 0).toFixed(1) + " %", mem, String(t.pids == null ? "" : t.pids)].forEach(function (v) {
        var td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.appendChild(body);
    box.replaceChildren(table);
  }
  function mb(bytes) { return ((bytes || 0) / 1048576).toFixed(1) + " MiB"; }
  function stopUsage() {
    if (!usage) { return; }
    clearTimeout(usage.timer);
    usage = null;
  }

  // ------------------------------------------------------------------ start
  function start() {
    started = true;
    markNav(route().page);
    load();
    startPolling(); // until the event stream answers
  }
  window.addEventListener("popstate", function () { if (started) { load(); } });

  if (aclOn && !token()) {
    showLogin("");
  } else if (aclOn) {
    checkToken(token()).then(function (info) {
      signedIn(info.name || info.accessor_id);
      start();
    }, function () { setToken(""); showLogin("Your session's token is no longer valid."); });
  } else {
    signedIn("");
    start();
  }
})();
