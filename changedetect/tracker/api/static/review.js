"use strict";
/*
 * The review page: log in, list the cases, record verdicts and assignments, triage with the
 * keyboard, show the monthly report.
 *
 * Everything from a case is rendered with DOM calls and textContent, never parsed as HTML, so
 * nothing a clue carries can become markup. The Content Security Policy allows scripts and
 * styles from this app only.
 *
 * Other scripts on the page talk to this one through events on `document`, so a new feature
 * hooks in without reaching into this file's variables:
 *   review:cases    {items}  a page of cases was listed (the cards are in the DOM)
 *   review:current  {id}     a case became the current one (click, j/k, first of a page)
 *   review:case     {item}   a case changed (verdict, assignment); its card was redrawn
 *   review:select   {id}     (listened to) make that case's card the current one
 *   review:refresh  {item, message}  (listened to) another feature changed a case: redraw its
 *                   card from item, with message in its status line
 */
(function () {
  const CSRF = document.body.dataset.csrfHeader;
  const OPEN = ["issued", "verifying", "violation", "rectifying"];
  const PAGE = 20;
  let me = null;
  let offset = 0;
  const $ = (id) => document.getElementById(id);

  // --- helpers ----------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) node.append(c);
    return node;
  }

  function notify(name, detail) {
    document.dispatchEvent(new CustomEvent("review:" + name, {detail: detail}));
  }

  async function api(path, options) {
    const opts = Object.assign({credentials: "same-origin", headers: {}}, options || {});
    if (opts.method && opts.method !== "GET") opts.headers[CSRF] = "1";
    const response = await fetch(path, opts);
    let body = null;
    const type = response.headers.get("content-type") || "";
    if (type.includes("json")) body = await response.json();
    return {status: response.status, ok: response.ok, body: body};
  }

  // --- session: log in with a token, log out ----------------------------------------------

  function showLogin(message) {
    $("app").hidden = true; $("logout").hidden = true; $("who").textContent = "";
    $("login").hidden = false; $("login-msg").textContent = message || "";
  }

  async function start() {
    const r = await api("/me");
    if (r.status === 401) { showLogin(""); return; }
    me = r.body;
    $("login").hidden = true; $("app").hidden = false; $("logout").hidden = false;
    $("who").textContent = me.name + " · " + me.role + (me.county ? " · " + me.county : "");
    $("county-filter").hidden = me.role === "officer";
    $("bulk").hidden = !me.can_assign;
    if (me.can_assign) {
      const bulk = countySelect("bulk-county");
      bulk.id = "bulk-county";
      $("bulk-county").replaceWith(bulk);
    }
    await load();
  }

  function setUpSession() {
    $("logout").addEventListener("click", async () => {
      await api("/logout", {method: "POST"}); showLogin("");
    });
    $("login-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const r = await api("/login", {method: "POST", headers: {"Content-Type": "application/json"},
                                     body: JSON.stringify({token: $("token").value.trim()})});
      $("token").value = "";
      if (r.ok) start(); else showLogin((r.body && r.body.detail) || "login failed");
    });
  }

  // --- the list: filters, paging, one card per case ---------------------------------------

  /** The filters and this page's limit and offset, as API query parameters. */
  function query() {
    const form = new FormData($("filters"));
    const params = new URLSearchParams();
    const state = form.get("state");
    if (state === "") OPEN.forEach((s) => params.append("state", s));
    else if (state !== "*") params.append("state", state);
    for (const key of ["change_type", "county", "tier", "detected_from", "detected_to"]) {
      const v = (form.get(key) || "").trim();
      if (v) params.append(key, v);
    }
    params.set("limit", PAGE); params.set("offset", offset);
    return params;
  }

  async function load() {
    const params = query();
    const r = await api("/cases?" + params.toString());
    const box = $("cases");
    box.replaceChildren();
    if (r.status === 401) { showLogin("Your session has ended: log in again."); return; }
    if (!r.ok) { box.append(el("p", {class: "msg error"}, r.body ? r.body.detail : "error")); return; }
    const page = r.body;
    $("count").textContent = page.total === 0 ? "no cases" :
      (page.offset + 1) + "–" + (page.offset + page.items.length) + " of " + page.total;
    $("prev").disabled = page.offset === 0;
    $("next").disabled = page.offset + page.items.length >= page.total;
    for (const c of page.items) box.append(card(c));
    notify("cases", {items: page.items, query: params});
    focusCard(0);
  }

  function setUpList() {
    $("filters").addEventListener("submit", (e) => { e.preventDefault(); offset = 0; load(); });
    $("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
    $("next").addEventListener("click", () => { offset += PAGE; load(); });
  }

  function chip(c, which) {
    const img = el("img", {class: "chip chip-" + which, alt: which + " chip of case " + c.id,
                           src: "/cases/" + c.id + "/chips/" + which});
    const fig = el("figure", {}, img, el("figcaption", {}, which));
    img.addEventListener("error", () => {
      img.replaceWith(el("div", {class: "nochip"}, "no " + which + " chip"));
    });
    return fig;
  }

  /** The NDVI-change chip, loaded like the other two (so the card settles as they do), its
   *  caption shown with it; left out, with no placeholder and no broken image, for a case whose
   *  clues come from runs that did not draw one. */
  function changeChip(c) {
    const img = el("img", {class: "chip chip-change", alt: "NDVI change chip of case " + c.id,
                           src: "/cases/" + c.id + "/chips/change"});
    const caption = el("figcaption", {hidden: true}, "NDVI change · brown: loss, green: gain");
    const fig = el("figure", {class: "change"}, img, caption);
    img.addEventListener("load", () => { caption.hidden = false; });
    img.addEventListener("error", () => { fig.remove(); });
    return fig;
  }

  function card(c) {
    const badges = el("span", {});
    badges.append(el("span", {class: "badge state", "data-role": "state"}, c.state));
    badges.append(el("span", {class: "badge"}, c.priority));
    if (c.escalated) badges.append(el("span", {class: "badge escalated"}, "escalated"));
    if (c.overdue) badges.append(el("span", {class: "badge overdue"}, "overdue"));
    if (c.relapse) badges.append(el("span", {class: "badge"}, "relapse"));
    for (const t of c.tags) badges.append(el("span", {class: "badge"}, t));
    const meta = [c.change_type, "confidence " + c.confidence.toFixed(2),
                  (c.area_m2 / 10000).toFixed(2) + " ha (" + c.area_mu.toFixed(1) + " 亩)",
                  c.assigned_county || "unassigned", c.zone || "no zone",
                  "last seen " + c.last_detected_on, "deadline " + c.deadline.slice(0, 10)];
    const [lon, lat] = c.centroid, [glon, glat] = c.centroid_gcj02;
    const place = el("div", {class: "meta place"},
      "WGS84 " + lat.toFixed(5) + ", " + lon.toFixed(5) + " · GCJ-02 " + glat.toFixed(5) + ", " +
      glon.toFixed(5) + " · ",
      el("a", {href: c.link_amap, target: "_blank", rel: "noopener noreferrer"}, "Amap"), " · ",
      el("a", {href: c.link_baidu, target: "_blank", rel: "noopener noreferrer"}, "Baidu"), " · ",
      el("a", {href: c.link_geo}, "map app"), " · ",
      el("a", {href: "/cases/" + c.id + "/dossier", target: "_blank", class: "dossier"},
         "dossier"));
    const article = el("article", {class: "case", "data-case-id": String(c.id),
                                   "data-state": c.state},
      el("h2", {}, me.can_assign ? el("input", {type: "checkbox", class: "pick",
                                                  title: "select for bulk assignment"}) : "",
         "Case " + c.id + " ", badges),
      el("div", {class: "meta"}, meta.join(" · ")),
      place,
      el("div", {class: "chips"}, chip(c, "before"), chip(c, "after"), changeChip(c)));
    // what a bulk assignment expects the case's county to be (absent: unassigned)
    if (c.assigned_county !== null) article.dataset.assignedCounty = c.assigned_county;
    const msg = el("div", {class: "msg", role: "status"});
    article.append(actions(c, article, msg), msg);
    return article;
  }

  // --- what a user does to one case: verdicts (transitions) and assignment ----------------

  function actions(c, article, msg) {
    const bar = el("div", {class: "actions"});
    if (!c.allowed_transitions.length && !me.can_assign) return bar;
    const comment = el("input", {class: "comment", placeholder: "comment (recorded)"});
    bar.append(comment);
    for (const to of c.allowed_transitions) {
      const b = el("button", {class: "act", type: "button", "data-to": to}, "→ " + to);
      b.addEventListener("click", () => act(c, article, msg, "/cases/" + c.id + "/transitions",
                                            {to: to, comment: comment.value || null}));
      bar.append(b);
    }
    if (me.can_assign && !["compliant", "false_alarm", "closed"].includes(c.state)) {
      const county = countySelect("assign-county");
      const b = el("button", {type: "button", "data-action": "assign"}, "Assign");
      // the county this page shows: if another analyst moved the case since, the API says 409
      b.addEventListener("click", () => act(c, article, msg, "/cases/" + c.id + "/assign",
                                            {county: county.value, comment: comment.value || null,
                                             expected_county: c.assigned_county}));
      bar.append(county, b);
    }
    return bar;
  }

  function countySelect(cls) {
    const select = el("select", {class: cls});
    select.append(el("option", {value: ""}, "county…"));
    for (const name of me.counties) select.append(el("option", {value: name}, name));
    return select;
  }

  /** Put a fresh card for `item` where its card is, keeping it current; say `message`. */
  function redraw(article, item, message) {
    const fresh = card(item);
    fresh.querySelector(".msg").textContent = message;
    if (article.classList.contains("current")) fresh.classList.add("current");
    article.replaceWith(fresh);
    notify("case", {item: item});
  }

  async function act(c, article, msg, path, body) {
    for (const b of article.querySelectorAll("button")) b.disabled = true;
    const r = await api(path, {method: "POST", body: JSON.stringify(body),
                               headers: {"Content-Type": "application/json"}});
    if (r.ok) {
      redraw(article, r.body, "Saved: case " + r.body.id + " is " + r.body.state);
    } else {
      for (const b of article.querySelectorAll("button")) b.disabled = false;
      msg.className = "msg error";
      msg.textContent = (r.body && r.body.detail) || ("failed (HTTP " + r.status + ")");
    }
  }

  // --- bulk assignment: tick cases, pick a county, assign them all (one request per case,
  // each checked and recorded as a single assignment would be) -----------------------------

  async function assignSelected() {
    const county = $("bulk-county").value;
    const picked = Array.from(document.querySelectorAll("#cases input.pick:checked"));
    const msg = $("bulk-msg");
    if (!county || !picked.length) {
      msg.textContent = "tick cases and choose a county first"; return;
    }
    let done = 0;
    const failed = [];
    for (const box of picked) {
      const article = box.closest("article.case");
      const id = article.dataset.caseId;
      const r = await api("/cases/" + id + "/assign", {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({county: county, comment: "assigned with " + picked.length +
                                                      " case(s) from the review page",
                              expected_county: article.dataset.assignedCounty ?? null})});
      if (r.ok) {
        article.replaceWith(card(r.body)); done += 1;
        notify("case", {item: r.body});
      } else failed.push(id + " (" + ((r.body && r.body.detail) || r.status) + ")");
    }
    msg.textContent = done + " case(s) assigned to " + county +
      (failed.length ? "; not: " + failed.join(", ") : "");
  }

  function setUpBulk() {
    $("bulk-assign").addEventListener("click", assignSelected);
  }

  // --- the current case, and keyboard triage: move through the cases and record a verdict
  // without the mouse -----------------------------------------------------------------------

  const VERDICT_KEYS = {v: "verifying", c: "compliant", f: "false_alarm", x: "violation",
                        r: "rectifying", d: "closed"};
  let current = 0;
  function cards() { return Array.from(document.querySelectorAll("#cases article.case")); }

  function focusCard(index) {
    const all = cards();
    if (!all.length) return;
    current = Math.max(0, Math.min(index, all.length - 1));
    for (const a of all) a.classList.remove("current");
    all[current].classList.add("current");
    all[current].scrollIntoView({block: "nearest"});
    notify("current", {id: Number(all[current].dataset.caseId)});
  }

  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey || $("app").hidden) return;
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName);
    if (typing) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    const all = cards();
    if (e.key === "j") { focusCard(current + 1); e.preventDefault(); return; }
    if (e.key === "k") { focusCard(current - 1); e.preventDefault(); return; }
    const article = all[current];
    if (!article) return;
    if (e.key === "/") {
      const comment = article.querySelector("input.comment");
      if (comment) { comment.focus(); e.preventDefault(); }
      return;
    }
    const to = VERDICT_KEYS[e.key];
    if (!to) return;
    const button = article.querySelector("button.act[data-to='" + to + "']");
    if (button && !button.disabled) { button.click(); e.preventDefault(); }
  }

  function setUpTriage() {
    document.addEventListener("keydown", onKey);
    document.addEventListener("review:refresh", (e) => {
      const article = document.querySelector(
        "#cases article.case[data-case-id='" + e.detail.item.id + "']");
      if (article) redraw(article, e.detail.item, e.detail.message || "");
    });
    document.addEventListener("review:select", (e) => {
      const index = cards().findIndex((a) => Number(a.dataset.caseId) === e.detail.id);
      if (index >= 0) focusCard(index);
    });
  }

  // --- the monthly report (通报) ------------------------------------------------------------

  async function showReport(e) {
    e.preventDefault();
    const month = new FormData($("report-form")).get("month");
    const r = await api("/reports/monthly?month=" + encodeURIComponent(month));
    const table = $("report-table"), body = table.querySelector("tbody");
    body.replaceChildren();
    if (!r.ok) {
      table.hidden = true; $("report-csv").hidden = true;
      $("report-msg").textContent = (r.body && r.body.detail) || "failed";
      return;
    }
    const fmt = (v, digits) => v === null ? "—" : Number(v).toFixed(digits);
    for (const c of r.body.counties) {
      body.append(el("tr", {}, ...[c.rank === null ? "—" : c.rank, c.county, c.issued,
        c.verified, c.verified_on_time, c.violations, c.rectified, c.overdue, c.relapses,
        c.closed, fmt(c.on_time_share, 2), fmt(c.median_days_to_verify, 1)]
        .map((v) => el("td", {}, String(v)))));
    }
    table.hidden = !r.body.counties.length;
    $("report-msg").textContent = r.body.counties.length ? "" :
      "no case was first detected in " + month;
    const csv = $("report-csv");
    csv.href = "/reports/monthly.csv?month=" + encodeURIComponent(month);
    csv.hidden = false;
  }

  function setUpReport() {
    $("report-form").addEventListener("submit", showReport);
  }

  setUpSession();
  setUpList();
  setUpBulk();
  setUpTriage();
  setUpReport();
  start();
})();
