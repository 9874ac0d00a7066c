/* mybot operator console.
 *
 * Plain JavaScript, no build step, no dependency. Every text that comes from the system is put in the page
 * with textContent (never innerHTML), so a symbol, a reason or an error cannot become markup. The control
 * token lives in sessionStorage and goes out only in the Authorization header (of every request once logged
 * in: a control port off loopback wants it for reads too), never in a cookie.
 * Live updates: the visible view polls its endpoint at most once a second (one request at a time, paused
 * while the tab is hidden); the headline refreshes from /v1/overview.
 */
"use strict";

(function () {
  const TOKEN_KEY = "mybot.token";
  const POLL_MS = 1000;
  const SLOW_POLL_MS = 5000;
  const IST = "Asia/Kolkata";
  const SVG = "http://www.w3.org/2000/svg";

  const state = {
    view: "overview",
    views: ["overview"],
    overview: null,
    risk: null,
    trades: [],
    selectedTrade: null,
    market: { symbols: [], timeframes: [60, 300, 900], symbol: null, timeframe: 60, trades: [], tradesAt: 0 },
    timer: null,
    slowAt: {},
  };

  // -- small DOM helpers ------------------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === undefined || value === null || value === false) continue;
        if (key === "class") node.className = value;
        else if (key === "dataset") Object.assign(node.dataset, value);
        else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
        else if (key === "text") node.textContent = String(value);
        else node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = String(value);
      else node.setAttribute(key, String(value));
    }
    return node;
  }

  function td(value, cls) {
    return el("td", { class: cls }, value === undefined || value === null || value === "" ? "—" : value);
  }

  function num(value, digits = 2) {
    if (value === undefined || value === null || Number.isNaN(Number(value))) return "—";
    return Number(value).toLocaleString("en-IN", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }

  function money(value) {
    if (value === undefined || value === null) return { text: "—", cls: "num" };
    const n = Number(value);
    const sign = n > 0 ? "+" : "";
    return { text: sign + num(n, 2), cls: "num " + (n > 0 ? "pos" : n < 0 ? "neg" : "") };
  }

  function moneyCell(value) {
    const m = money(value);
    return el("td", { class: m.cls }, m.text);
  }

  const timeFmt = new Intl.DateTimeFormat("en-IN", { timeZone: IST, hour: "2-digit", minute: "2-digit",
    second: "2-digit", hour12: false });
  const dayFmt = new Intl.DateTimeFormat("en-CA", { timeZone: IST, year: "numeric", month: "2-digit", day: "2-digit" });

  function clock(epochSeconds) {
    if (!epochSeconds) return "—";
    return timeFmt.format(new Date(epochSeconds * 1000));
  }

  function todayIst() {
    return dayFmt.format(new Date());
  }

  function duration(seconds) {
    if (seconds === undefined || seconds === null) return "—";
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d) return `${d}d ${h}h ${m}m`;
    if (h) return `${h}h ${m}m ${s % 60}s`;
    return `${m}m ${s % 60}s`;
  }

  function replaceRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function pill(node, text, kind) {
    node.textContent = text;
    node.className = "pill " + (kind || "");
  }

  function toast(message, kind) {
    const box = $("toast");
    box.textContent = message;
    box.className = "toast " + (kind || "");
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.hidden = true; }, 6000);
  }

  // -- HTTP ---------------------------------------------------------------------------------------------------
  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function readHeaders() {
    // A control port that is not on loopback wants the token for reads too: send it once logged in.
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    return headers;
  }

  async function getJson(path) {
    const response = await fetch(path, { headers: readHeaders(), cache: "no-store", credentials: "omit" });
    if (response.status === 401) {
      throw new Error("this control port wants the token for reads: log in");
    }
    const body = await response.json().catch(() => null);
    if (!response.ok && response.status !== 503) {
      throw new Error(body && body.error ? `${body.error}: ${body.detail || ""}` : `HTTP ${response.status}`);
    }
    return body;
  }

  async function mutate(path, body) {
    if (!token()) {
      toast("Log in with the control token first.", "bad");
      $("token").focus();
      throw new Error("not logged in");
    }
    const response = await fetch(path, {
      method: "POST", cache: "no-store", credentials: "omit",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token() },
      body: JSON.stringify(body || {}),
    });
    const answer = await response.json().catch(() => null);
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showSession();
      toast("The token was refused: log in again.", "bad");
      throw new Error("unauthorized");
    }
    if (!response.ok) {
      const text = answer ? [answer.error, answer.reason || answer.detail].filter(Boolean).join(": ") : `HTTP ${response.status}`;
      toast(text, "bad");
      throw new Error(text);
    }
    return answer;
  }

  // -- confirmation -------------------------------------------------------------------------------------------
  function confirmAction(title, text, label) {
    return new Promise((resolve) => {
      $("modal-title").textContent = title;
      $("modal-text").textContent = text;
      $("modal-ok").textContent = label || "Confirm";
      $("modal").hidden = false;
      const done = (answer) => {
        $("modal").hidden = true;
        $("modal-ok").removeEventListener("click", yes);
        $("modal-cancel").removeEventListener("click", no);
        resolve(answer);
      };
      const yes = () => done(true);
      const no = () => done(false);
      $("modal-ok").addEventListener("click", yes);
      $("modal-cancel").addEventListener("click", no);
      $("modal-ok").focus();
    });
  }

  // -- session ------------------------------------------------------------------------------------------------
  function showSession() {
    const has = Boolean(token());
    $("login").hidden = has;
    $("session").hidden = !has;
  }

  function bindSession() {
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token").value = "";
      showSession();
    });
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showSession();
    });
    showSession();
  }

  // -- headline and overview ----------------------------------------------------------------------------------
  function renderHeadline(o) {
    const health = o.health || {};
    pill($("h-health"), health.status === "ok" ? "healthy" : `degraded: ${(health.failing || []).join(", ")}`,
      health.status === "ok" ? "ok" : "bad");
    $("h-role").textContent = `role ${o.role} · pid ${o.pid}`;
    const market = o.market;
    $("h-market").textContent = market ? `NSE ${market.state} (${market.reason})` : "";
    $("h-market").className = market && market.state === "open" ? "pos" : "muted";
    $("h-uptime").textContent = `up ${duration(o.uptime_seconds)}`;
    $("h-clock").textContent = `${clock(o.now)} IST`;
    const views = o.views || ["overview"];
    if (views.join() !== state.views.join()) {
      state.views = views;
      for (const button of document.querySelectorAll("#nav button")) {
        button.hidden = !views.includes(button.dataset.view);
      }
    }
  }

  function detailText(check) {
    const parts = [];
    for (const [key, value] of Object.entries(check)) {
      if (key === "ok" || key === "last_tick_age_seconds") continue;
      if (value === null || value === undefined || (Array.isArray(value) && !value.length)) continue;
      parts.push(`${key}: ${typeof value === "object" ? JSON.stringify(value) : value}`);
    }
    return parts.join(" · ");
  }

  function renderOverview(o) {
    const checks = Object.entries((o.health && o.health.checks) || {});
    replaceRows($("health-table").tBodies[0], checks.map(([name, check]) => el("tr", { dataset: { check: name } },
      td(name), el("td", null, el("span", { class: "pill " + (check.ok ? "ok" : "bad") }, check.ok ? "ok" : "failing")),
      el("td", { class: "detail" }, detailText(check)))));

    const feed = o.feed;
    $("feed-source").textContent = feed ? `${feed.source} · ${feed.ticks.toLocaleString("en-IN")} ticks` : "no feed in this role";
    const ages = feed ? Object.entries(feed.ages || {}) : [];
    replaceRows($("feed-table").tBodies[0], ages.map(([symbol, age]) => {
      const stale = feed.stale.includes(symbol);
      return el("tr", null, td(symbol), el("td", { class: "num" }, age === null ? "—" : num(age, 3)),
        el("td", null, el("span", { class: "pill " + (stale ? "bad" : "ok") }, stale ? "FEED_STALE" : "ticking")));
    }));

    const rows = [];
    const walk = (node, depth) => {
      for (const child of node.children || []) {
        rows.push(actorRow(child, depth));
        walk(child, depth + 1);
      }
    };
    if (o.tree) walk(o.tree, 0);
    replaceRows($("tree-table").tBodies[0], rows);
  }

  function actorRow(actor, depth) {
    const indent = el("span", { class: "indent" });
    indent.style.width = `${depth * 16}px`;
    const kind = actor.state === "running" ? "ok" : actor.state === "stopped" ? "" : "warn";
    const restart = el("button", { type: "button", class: "small", dataset: { actor: actor.id },
      onclick: () => restartActor(actor.id) }, "restart");
    return el("tr", { class: actor.children ? "supervisor" : "", dataset: { actor: actor.id } },
      el("td", { class: "actor" }, indent, actor.children ? "▾ " : "• ", actor.id),
      el("td", null, el("span", { class: "pill " + kind }, actor.state)),
      el("td", { class: "num restarts" }, actor.restarts), el("td", { class: "num" }, actor.crashes ?? "—"),
      el("td", { class: "num" }, actor.mailbox_depth), el("td", { class: "num" }, actor.buffered),
      el("td", { class: "num" }, actor.dead_letters),
      el("td", { class: "fail" }, actor.last_failure ? `${clock(actor.last_failure_at)} ${actor.last_failure}` : ""),
      el("td", null, restart));
  }

  async function restartActor(id) {
    const ok = await confirmAction("Restart actor", `Restart ${id}? Its mailbox is kept and delivered to the new ` +
      "instance; a supervisor restarts its whole subtree.", "Restart");
    if (!ok) return;
    try {
      await mutate(`/v1/actors/${encodeURIComponent(id)}/restart`);
      toast(`${id} restarted`, "ok");
      refreshNow();
    } catch (error) { /* the toast said it */ }
  }

  // -- positions ----------------------------------------------------------------------------------------------
  function renderPositions(body) {
    const rows = body.positions || [];
    const summary = body.summary || {};
    const parts = [["open positions", summary.open_positions ?? rows.length, null],
      ["open exposure", num(summary.open_exposure), null], ["unrealized", null, summary.unrealized],
      ["realized today", null, body.realized_today]];
    $("pos-summary").replaceChildren(...parts.map(([label, text, pnl]) => {
      const value = pnl === null || pnl === undefined ? el("b", null, text ?? "—") : el("b", { class: money(pnl).cls }, money(pnl).text);
      return el("span", null, `${label} `, value);
    }));
    $("pos-empty").hidden = rows.length > 0;
    replaceRows($("pos-table").tBodies[0], rows.map((p) => {
      const exit = el("button", { type: "button", class: "small danger", dataset: { posId: p.pos_id },
        onclick: () => exitPosition(p.pos_id) }, "Exit");
      return el("tr", { dataset: { posId: p.pos_id } }, td(p.pos_id), td(p.symbol), td(p.instrument), td(p.side),
        el("td", null, el("span", { class: "pill" }, p.state)), el("td", { class: "num" }, p.qty),
        el("td", { class: "num" }, p.open_qty), el("td", { class: "num" }, num(p.avg_entry_price)),
        el("td", { class: "num" }, num(p.mark)), moneyCell(p.unrealized_pnl), moneyCell(p.realized_pnl),
        el("td", { class: "num" }, num(p.stop_price)), el("td", { class: "num" }, num(p.target_price)),
        el("td", { class: "num" }, num(p.trailing_stop)), el("td", { class: "num" }, num(p.broker_stop_price)),
        td(clock(p.opened_at)), el("td", null, exit));
    }));
  }

  async function exitPosition(posId) {
    const ok = await confirmAction("Exit position", `Exit ${posId} at the market (a marketable limit)?`, "Exit");
    if (!ok) return;
    try {
      await mutate(`/v1/trades/${encodeURIComponent(posId)}/exit`, { reason: "dashboard" });
      toast(`exit requested for ${posId}`, "ok");
      refreshNow();
    } catch (error) { /* toast */ }
  }

  // -- trades -------------------------------------------------------------------------------------------------
  function filteredTrades() {
    const text = $("f-text").value.trim().toUpperCase();
    return state.trades.filter((t) => !text || t.pos_id.toUpperCase().includes(text) ||
      t.symbol.toUpperCase().includes(text) || (t.instrument || "").toUpperCase().includes(text));
  }

  function renderTrades() {
    const trades = filteredTrades();
    $("trade-count").textContent = `${trades.length} of ${state.trades.length}`;
    replaceRows($("trade-table").tBodies[0], trades.map((t) => el("tr", {
      dataset: { posId: t.pos_id }, class: t.pos_id === state.selectedTrade ? "selected" : "",
      onclick: () => openTrade(t.pos_id),
    }, td(t.pos_id), td(t.symbol), td(t.instrument), td(t.side), el("td", { class: "num" }, t.qty),
    el("td", null, el("span", { class: "pill " + stateKind(t.state) }, t.state)),
    el("td", { class: "num" }, num(t.entry_price)), el("td", { class: "num" }, num(t.exit_price)),
    moneyCell(t.realized_pnl), td(clock(t.entry_time)), td(clock(t.exit_time)))));
  }

  function stateKind(s) {
    if (s === "CLOSED") return "ok";
    if (["REJECTED", "CANCELLED", "DENIED"].includes(s)) return "bad";
    return "warn";
  }

  async function refreshTrades() {
    const params = new URLSearchParams();
    if ($("f-day").value) params.set("day", $("f-day").value);
    if ($("f-state").value) params.set("state", $("f-state").value);
    const body = await getJson(`/v1/trades?${params}`);
    state.trades = (body.trades || []).slice().sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
    renderTrades();
    if (state.selectedTrade) await loadTrade(state.selectedTrade);
  }

  async function openTrade(posId) {
    state.selectedTrade = posId;
    renderTrades();
    await loadTrade(posId);
    $("trade-detail").scrollIntoView({ block: "nearest" });
  }

  async function loadTrade(posId) {
    const detail = await getJson(`/v1/trades/${encodeURIComponent(posId)}`);
    $("trade-detail").hidden = false;
    $("td-id").textContent = posId;
    const row = detail.trade || {};
    pill($("td-state"), row.state || (detail.live && detail.live.state) || "?", stateKind(row.state));
    const timeline = detail.timeline || [];
    replaceRows($("td-timeline").tBodies[0], timeline.map((e) => el("tr", null,
      el("td", { class: "num" }, e.seq), td(clock(e.at)), td(e.event),
      td(`${e.from_state || ""} → ${e.to_state || ""}`), el("td", { class: "detail" }, payloadText(e.payload)))));
    replaceRows($("td-orders").tBodies[0], (detail.orders || []).map((o) => el("tr", null,
      td(o.leg), td(o.correlation_id), td(o.broker_order_id), td(o.status), el("td", { class: "num" }, o.qty),
      el("td", { class: "num" }, o.filled_qty), el("td", { class: "num" }, num(o.avg_price)),
      el("td", { class: "num" }, num(o.expected_price)))));
    $("td-latency").replaceChildren(...latencies(timeline).map(([label, seconds]) =>
      el("span", null, `${label} `, el("b", null, seconds === null ? "—" : `${num(seconds * 1000, 1)} ms`))));
  }

  function payloadText(payload) {
    if (!payload || typeof payload !== "object") return "";
    return Object.entries(payload).filter(([k]) => !["at", "pos_id"].includes(k))
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join("  ");
  }

  function latencies(timeline) {
    const first = (name, leg) => timeline.find((e) => e.event === name && (!leg || (e.payload || {}).leg === leg));
    const gap = (a, b) => (a && b ? b.at - a.at : null);
    const signal = first("SignalAccepted");
    const placed = first("OrderPlaced", "ENTRY");
    const filled = first("OrderFilled", "ENTRY");
    const exitAsked = first("ExitRequested");
    const exitFilled = first("OrderFilled", "EXIT");
    return [["signal → placed", gap(signal, placed)], ["placed → filled", gap(placed, filled)],
      ["exit requested → filled", gap(exitAsked, exitFilled)]];
  }

  function bindTrades() {
    $("f-day").value = todayIst();
    const states = ["SIGNAL_GENERATED", "ENTRY_PENDING", "ORDER_PLACED", "POSITION_OPEN", "EXIT_PENDING",
      "EXIT_ORDER_PLACED", "CLOSED", "REJECTED", "CANCELLED", "DENIED"];
    for (const s of states) $("f-state").append(el("option", { value: s }, s));
    for (const id of ["f-day", "f-state"]) $(id).addEventListener("change", () => refreshNow());
    $("f-text").addEventListener("input", renderTrades);
    $("trade-filters").addEventListener("submit", (event) => event.preventDefault());
    $("td-close").addEventListener("click", () => {
      state.selectedTrade = null;
      $("trade-detail").hidden = true;
      renderTrades();
    });
  }

  // -- risk ---------------------------------------------------------------------------------------------------
  function kv(table, rows) {
    replaceRows(table.tBodies[0], rows.map(([key, value, cls]) => el("tr", null, td(key),
      el("td", { class: cls || "" }, value === null || value === undefined ? "—" : value))));
  }

  function renderRisk(r) {
    state.risk = r;
    pill($("risk-enabled"), r.trading_enabled ? "entries allowed" : "entries halted", r.trading_enabled ? "ok" : "bad");
    $("risk-why").textContent = r.why || "";
    const engaged = r.kill_switch && r.kill_switch.engaged;
    $("kill-toggle").textContent = engaged ? "Release kill switch" : "Engage kill switch";
    $("kill-toggle").className = engaged ? "" : "danger";
    $("kill-toggle").dataset.engaged = engaged ? "true" : "false";
    kv($("risk-state"), [
      ["kill switch", engaged ? `ENGAGED${r.kill_switch.reason ? ": " + r.kill_switch.reason : ""}` : "off", engaged ? "neg" : ""],
      ["halted for the session", r.halted_for_session ? `yes: ${r.halt_reason || r.halt_code || ""}` : "no"],
      ["flattening", r.flattening || "no"],
      ["square-off due", r.square_off_due ? "yes" : "no"],
      ["open positions", r.open_positions],
      ["start-up reconciliation", r.startup_reconciliation_passed ? "passed" : "pending"],
    ]);
    const limits = r.limits || {};
    const realized = Number(r.realized_pnl || 0), unrealized = Number(r.unrealized_pnl || 0);
    const limitValues = [limits.daily_max_loss, limits.daily_max_loss_pct_rupees].filter((v) => v > 0);
    const limit = limitValues.length ? Math.min(...limitValues) : null;
    const m = (v) => money(v);
    kv($("risk-pnl"), [
      ["realized today (guard)", m(realized).text, m(realized).cls],
      ["unrealized", m(unrealized).text, m(unrealized).cls],
      ["net", m(realized + unrealized).text, m(realized + unrealized).cls],
      ["tighter daily loss limit", limit === null ? "off" : num(limit)],
      ["headroom (realized)", limit === null ? "—" : num(limit + realized)],
      ["consecutive losses", `${r.consecutive_losses} of ${limits.consecutive_losses_limit}`],
      ["trades closed", r.trades_closed],
    ]);
    const used = limit ? Math.max(0, Math.min(1, -(realized + Math.min(0, unrealized)) / limit)) : 0;
    $("loss-fill").style.width = `${(used * 100).toFixed(1)}%`;
    $("loss-fill").className = "fill " + (used >= 0.8 ? "bad" : used >= 0.5 ? "warn" : "");
    $("loss-caption").textContent = limit ? `${(used * 100).toFixed(1)}% of the daily loss limit used (net of open losses)` : "";
    kv($("risk-limits"), Object.entries(limits).map(([k, v]) => [k, typeof v === "number" ? String(v) : v]));
    const hold = r.reconciliation_hold || {};
    pill($("recon-hold"), hold.engaged ? "hold engaged" : "no hold", hold.engaged ? "bad" : "ok");
    $("recon-why").textContent = hold.reason || "";
    $("recon-ack").disabled = !hold.engaged;
    const incidents = (state.overview && state.overview.trading && state.overview.trading.reconciliation &&
      state.overview.trading.reconciliation.incidents) || [];
    replaceRows($("recon-table").tBodies[0], incidents.map((i) => el("tr", null,
      td(typeof i === "object" ? (i.kind || i.key || i.symbol || "incident") : "incident"),
      el("td", { class: "detail" }, typeof i === "object" ? JSON.stringify(i) : String(i)))));
  }

  function bindRisk() {
    $("kill-toggle").addEventListener("click", async () => {
      const engage = $("kill-toggle").dataset.engaged !== "true";
      const ok = await confirmAction(engage ? "Engage the kill switch" : "Release the kill switch",
        engage ? "Stop every new entry now? Exits stay allowed." : "Allow new entries again?",
        engage ? "Engage" : "Release");
      if (!ok) return;
      try {
        renderRisk(await mutate("/v1/control/kill-switch", { engaged: engage, reason: "dashboard" }));
        toast(engage ? "kill switch engaged" : "kill switch released", "ok");
      } catch (error) { /* toast */ }
    });
    $("flatten").addEventListener("click", async () => {
      const ok = await confirmAction("Flatten everything", "Exit every open position and stay halted (the kill " +
        "switch stays engaged)?", "Flatten");
      if (!ok) return;
      try {
        const answer = await mutate("/v1/control/flatten", { reason: "dashboard" });
        toast(`flatten: exiting ${answer.exiting.length} position(s)`, "ok");
        renderRisk(answer.risk);
      } catch (error) { /* toast */ }
    });
    $("recon-ack").addEventListener("click", async () => {
      const ok = await confirmAction("Acknowledge reconciliation", "You checked the broker's positions and orders " +
        "and accept the differences: release the hold on entries?", "Acknowledge");
      if (!ok) return;
      try {
        await mutate("/v1/control/reconcile/ack", { reason: "dashboard" });
        toast("reconciliation acknowledged", "ok");
        refreshNow();
      } catch (error) { /* toast */ }
    });
  }

  // -- market -------------------------------------------------------------------------------------------------
  async function initMarket() {
    if (state.market.symbols.length) return;
    const body = await getJson("/v1/market/symbols");
    state.market.symbols = body.symbols || [];
    state.market.underlyings = body.underlyings || [];
    state.market.timeframes = body.timeframes && body.timeframes.length ? body.timeframes : [60, 300, 900];
    state.market.symbol = state.market.symbols[0] || null;
    $("m-symbol").replaceChildren(...state.market.symbols.map((s) => el("option", { value: s }, s)));
    $("m-symbol").addEventListener("change", () => { state.market.symbol = $("m-symbol").value; refreshNow(); });
    $("m-timeframes").replaceChildren(...state.market.timeframes.map((tf) => el("button", {
      type: "button", class: tf === state.market.timeframe ? "active" : "", dataset: { tf: String(tf) },
      onclick: (event) => {
        state.market.timeframe = tf;
        for (const b of $("m-timeframes").children) b.classList.toggle("active", b === event.currentTarget);
        refreshNow();
      },
    }, `${tf / 60}m`)));
  }

  async function refreshMarket() {
    await initMarket();
    const m = state.market;
    if (!m.symbol) return;
    const [candles, chain] = await Promise.all([
      getJson(`/v1/market/candles?symbol=${encodeURIComponent(m.symbol)}&timeframe_seconds=${m.timeframe}&limit=120`),
      slow("chain:" + m.symbol, () => chainFor(m.symbol)),
      slow("trades", async () => { m.trades = (await getJson(`/v1/trades?day=${todayIst()}`)).trades || []; }),
    ]);
    drawChart(candles.candles || [], m);
    if (chain !== undefined) renderChain(chain);
  }

  async function slow(key, fn) {
    const now = Date.now();
    if (state.slowAt[key] && now - state.slowAt[key] < SLOW_POLL_MS) return undefined;
    state.slowAt[key] = now;
    return fn();
  }

  async function chainFor(symbol) {
    const underlying = (state.market.underlyings || []).includes(symbol) ? symbol : null;
    if (!underlying) return { none: `${symbol} is not an option-chain underlying` };
    const response = await fetch(`/v1/market/option_chain?symbol=${encodeURIComponent(underlying)}`,
      { headers: readHeaders(), cache: "no-store", credentials: "omit" });
    if (response.status === 404) return { none: `no chain for ${underlying} yet` };
    return response.json();
  }

  function drawChart(candles, m) {
    const box = $("chart");
    const width = Math.max(400, box.clientWidth);
    const height = 380, right = 70, bottom = 22, top = 10;
    const plotW = width - right, plotH = height - top - bottom;
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "candles", "aria-label": `${m.symbol} candles` });
    if (!candles.length) {
      root.append(svg("text", { x: 20, y: 40, class: "axis", fill: "#8591a0", text: `no candles for ${m.symbol} yet` }));
      box.replaceChildren(root);
      $("m-last").textContent = "";
      return;
    }
    const times = candles.map((c) => Date.parse(c.ts) / 1000);
    let lo = Math.min(...candles.map((c) => c.low)), hi = Math.max(...candles.map((c) => c.high));
    const markers = chartMarkers(times, candles, m);
    for (const mk of markers) { lo = Math.min(lo, mk.price); hi = Math.max(hi, mk.price); }
    const pad = (hi - lo) * 0.06 || 1;
    lo -= pad; hi += pad;
    const slots = Math.max(candles.length, 60);  // a few candles keep a candle's width, newest on the right
    const offset = slots - candles.length;
    const step = plotW / slots;
    const x = (i) => (i + offset) * step + step / 2;
    const y = (p) => top + (hi - p) / (hi - lo) * plotH;
    const grid = svg("g", { class: "grid" }), axis = svg("g", { class: "axis" });
    for (let k = 0; k <= 5; k++) {
      const p = lo + (hi - lo) * k / 5;
      grid.append(svg("line", { x1: 0, x2: plotW, y1: y(p), y2: y(p) }));
      axis.append(svg("text", { x: plotW + 6, y: y(p) + 4, text: num(p, 2) }));
    }
    const every = Math.max(1, Math.ceil(64 / step));  // a time label every ~64 px
    candles.forEach((c, i) => {
      if (i % every === 0) axis.append(svg("text", { x: x(i) - 16, y: height - 6, text: clock(times[i]).slice(0, 5) }));
    });
    const body = svg("g", { class: "bodies" });
    candles.forEach((c, i) => {
      const up = c.close >= c.open;
      const cls = "candle " + (up ? "up" : "down");
      body.append(svg("line", { class: cls + " wick", x1: x(i), x2: x(i), y1: y(c.high), y2: y(c.low) }));
      const yTop = y(Math.max(c.open, c.close)), h = Math.max(1, Math.abs(y(c.open) - y(c.close)));
      body.append(svg("rect", { class: cls, x: x(i) - Math.max(1, step * 0.35), y: yTop, width: Math.max(2, step * 0.7), height: h }));
    });
    const marks = svg("g", { class: "markers" });
    for (const mk of markers) {
      const cx = x(mk.index), cy = y(mk.price);
      if (mk.kind === "signal") {
        const d = mk.side === "BUY" ? `M${cx},${cy + 6} l-5,9 l10,0 z` : `M${cx},${cy - 6} l-5,-9 l10,0 z`;
        const node = svg("path", { d, class: "marker signal" });
        node.append(svg("title", { text: `${mk.label}` }));
        marks.append(node);
      } else {
        const node = svg("circle", { cx, cy, r: 4.5, class: `marker fill-${mk.kind}` });
        node.append(svg("title", { text: `${mk.label}` }));
        marks.append(node);
      }
    }
    root.append(grid, body, marks, axis);
    box.replaceChildren(root);
    const last = candles[candles.length - 1];
    $("m-last").textContent = `last ${num(last.close)} at ${clock(times[times.length - 1])}`;
  }

  function chartMarkers(times, candles, m) {
    const tf = m.timeframe;
    const indexOf = (t) => {
      if (!t) return -1;
      for (let i = times.length - 1; i >= 0; i--) if (times[i] <= t && t < times[i] + tf) return i;
      return -1;
    };
    const markers = [];
    for (const t of m.trades) {
      const onSymbol = t.symbol === m.symbol, onInstrument = t.instrument === m.symbol;
      if (!onSymbol && !onInstrument) continue;
      const signalAt = indexOf(t.created_at);
      if (signalAt >= 0 && onSymbol) {
        const c = candles[signalAt];
        const buy = t.side === "BUY";
        markers.push({ kind: "signal", side: t.side, index: signalAt, price: buy ? c.low : c.high,
          label: `${t.pos_id}: ${t.side} signal` });
      }
      for (const [kind, at, price] of [["entry", t.entry_time, t.entry_price], ["exit", t.exit_time, t.exit_price]]) {
        const i = indexOf(at);
        if (i < 0 || !price) continue;
        const onChart = onInstrument ? price : candles[i].close;
        markers.push({ kind, index: i, price: onChart, label: `${t.pos_id}: ${kind} fill ${num(price)}` });
      }
    }
    return markers;
  }

  function renderChain(body) {
    const tbody = $("oc-table").tBodies[0];
    if (!body || body.none) {
      replaceRows(tbody, []);
      $("oc-empty").hidden = false;
      $("oc-empty").textContent = body ? body.none : "no chain";
      $("oc-meta").textContent = "";
      return;
    }
    $("oc-empty").hidden = true;
    const payload = body.payload || {};
    const spot = Number(payload.last_price);
    const strikes = Object.keys(payload.oc || {}).map(Number).filter((s) => !Number.isNaN(s)).sort((a, b) => a - b);
    const atm = strikes.reduce((best, s) => (best === null || Math.abs(s - spot) < Math.abs(best - spot) ? s : best), null);
    const center = strikes.indexOf(atm);
    const shown = strikes.slice(Math.max(0, center - 8), center + 9);
    $("oc-meta").textContent = `${body.symbol} · expiry ${body.expiry} · spot ${num(spot)} · ${clock(Date.parse(body.updated_at) / 1000)}`;
    const find = (strike) => {
      for (const [key, value] of Object.entries(payload.oc)) if (Number(key) === strike) return value || {};
      return {};
    };
    replaceRows(tbody, shown.map((strike) => {
      const row = find(strike), ce = row.ce || {}, pe = row.pe || {};
      const cls = [strike === atm ? "atm" : "", strike < spot ? "itm-ce" : "", strike > spot ? "itm-pe" : ""].join(" ");
      return el("tr", { class: cls }, el("td", { class: "num ce" }, num(ce.oi, 0)),
        el("td", { class: "num ce" }, num(ce.implied_volatility, 2)), el("td", { class: "num ce" }, num(ce.last_price)),
        el("td", { class: "num strike" }, num(strike, 0)), el("td", { class: "num pe" }, num(pe.last_price)),
        el("td", { class: "num pe" }, num(pe.implied_volatility, 2)), el("td", { class: "num pe" }, num(pe.oi, 0)));
    }));
  }

  // -- the poll loop ------------------------------------------------------------------------------------------
  async function refreshOverview(force) {
    if (!force && state.view !== "overview" && !slowDue("overview")) return;
    const o = await getJson("/v1/overview");
    state.overview = o;
    renderHeadline(o);
    if (state.view === "overview") renderOverview(o);
  }

  function slowDue(key) {
    const now = Date.now();
    if (state.slowAt[key] && now - state.slowAt[key] < SLOW_POLL_MS) return false;
    state.slowAt[key] = now;
    return true;
  }

  const refreshers = {
    overview: async () => {},
    positions: async () => renderPositions(await getJson("/v1/positions")),
    trades: refreshTrades,
    risk: async () => renderRisk(await getJson("/v1/risk")),
    market: refreshMarket,
  };

  async function tick() {
    state.timer = null;
    if (!document.hidden) {
      try {
        await refreshOverview(state.view === "overview" || state.view === "risk");
        await refreshers[state.view]();
        $("banner").hidden = true;
      } catch (error) {
        $("banner").textContent = `Cannot reach mybot: ${error.message}`;
        $("banner").hidden = false;
      }
    }
    document.body.dataset.refreshed = String(Date.now());
    state.timer = setTimeout(tick, POLL_MS);
  }

  function refreshNow() {
    if (state.timer !== null) {
      clearTimeout(state.timer);
      tick();
    }
  }

  function show(view) {
    state.view = view;
    for (const button of document.querySelectorAll("#nav button")) button.classList.toggle("active", button.dataset.view === view);
    for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
    document.body.dataset.view = view;
    if (location.hash !== `#${view}`) history.replaceState(null, "", `#${view}`);
    refreshNow();
  }

  function start() {
    bindSession();
    bindTrades();
    bindRisk();
    for (const button of document.querySelectorAll("#nav button")) {
      button.addEventListener("click", () => show(button.dataset.view));
    }
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshNow(); });
    window.addEventListener("hashchange", () => {
      const view = location.hash.slice(1);
      if (view !== state.view && state.views.includes(view)) show(view);
    });
    const wanted = location.hash.slice(1);
    state.view = ["overview", "positions", "trades", "risk", "market"].includes(wanted) ? wanted : "overview";
    for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${state.view}`;
    for (const button of document.querySelectorAll("#nav button")) button.classList.toggle("active", button.dataset.view === state.view);
    document.body.dataset.view = state.view;
    tick();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
