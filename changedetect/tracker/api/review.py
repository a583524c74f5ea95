"""The morning review page (``GET /review``) and the evidence chips it shows.

The page is one HTML document with its CSS and a small vanilla script inline: no CDN, no web
font, nothing fetched from outside the app (so it works on an offline network). Its Content
Security Policy allows only same-origin requests and only the inline style and script that
carry this response's nonce. The script renders with ``textContent``/DOM calls, never
``innerHTML``, so nothing from a case can become markup.

Chips are served by ``GET /cases/{id}/chips/{before|after}``: the case must be visible to the
user, the file is the one a detection of that case names (the request never names a path), and
the path must resolve — symlinks followed — to an image file inside an evidence root: the
folders given to :func:`~changedetect.tracker.api.create_app`, or by default the folder of the
``clues.geojson`` the detection was ingested from (its chips sit beside it in ``chips/``).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse
from sqlalchemy import select

from ..dossier import DOSSIER_CSP, render_dossier
from ..models import Detection
from .deps import CSRF_HEADER, StateDep, UserDep
from .routes import E401, E404, MAX_ID, visible_case_detail, visible_or_404

router = APIRouter()

#: Image types a chip may be; anything else is refused even inside an evidence root.
CHIP_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def resolve_evidence(path: str, source: str | None, roots: tuple[Path, ...] | None) -> Path | None:
    """The chip file ``path`` names, if it is a readable image inside an allowed root; else None.

    ``path`` comes from the database (written at ingest from a clues file), which is still input
    we do not trust: a clue could name ``../../etc/shadow`` or a symlink could point out of the
    chips folder. Resolving first (``strict``: the file must exist) and then checking
    containment on the real path catches both.
    """
    candidate = Path(path)
    base = Path(source).parent if source else None
    if not candidate.is_absolute():
        if base is None:
            return None
        candidate = base / candidate
    allowed = roots if roots is not None else ((base,) if base is not None else ())
    try:
        real = candidate.resolve(strict=True)
        real_roots = [r.resolve(strict=True) for r in allowed]
    except (OSError, RuntimeError):  # missing file or root, or a symlink loop
        return None
    if real.suffix.lower() not in CHIP_TYPES or not real.is_file():
        return None
    if not any(real.is_relative_to(root) for root in real_roots):
        return None
    return real


@router.get(
    "/cases/{case_id}/chips/{which}",
    tags=["cases"],
    summary="The before or after chip of a case (the latest detection's, or clue_id's)",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The chip image, patch outline drawn",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
        **E401,
        **E404,
    },
)
def chip(
    case_id: Annotated[int, PathParam(ge=1, le=MAX_ID, description="Case id")],
    which: Literal["before", "after"],
    user: UserDep,
    state: StateDep,
    clue_id: Annotated[
        str | None, Query(max_length=200, description="A detection of the case (default: latest)")
    ] = None,
) -> FileResponse:
    """404 for a case the user may not see, and when the chip is missing or not allowed."""
    with state.db.session() as session:
        visible_or_404(session, case_id, user)
        column = Detection.chip_before if which == "before" else Detection.chip_after
        stmt = (
            select(column, Detection.source)
            .where(Detection.case_id == case_id, column.is_not(None))
            # the newest non-suppressed detection shows the site as it is now
            .order_by(Detection.suppressed, Detection.detected_on.desc(), Detection.id.desc())
        )
        if clue_id is not None:
            stmt = stmt.where(Detection.clue_id == clue_id)
        found = session.execute(stmt.limit(1)).first()
    resolved = resolve_evidence(found[0], found[1], state.evidence_roots) if found else None
    if resolved is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no {which} chip available for case {case_id}"
        )
    return FileResponse(
        resolved,
        media_type=CHIP_TYPES[resolved.suffix.lower()],
        headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


@router.get(
    "/cases/{case_id}/dossier",
    tags=["cases"],
    summary="The case's dossier for the enforcement file: one self-contained, printable page",
    # the errors are JSON like every other route's; only the dossier itself is HTML
    responses={
        200: {
            "description": "The dossier",
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
        **E401,
        **E404,
    },
)
def dossier(
    case_id: Annotated[int, PathParam(ge=1, le=MAX_ID, description="Case id")],
    user: UserDep,
    state: StateDep,
) -> HTMLResponse:
    """Chips inline, no script, no request: the page can be saved, printed or attached as is."""
    with state.db.session() as session:
        detail = visible_case_detail(session, case_id, user, state.now())
    # the newest detection that was not suppressed shows the site as it is now
    shown = sorted(detail.detections, key=lambda d: (d.suppressed, -d.detected_on.toordinal()))
    chips: dict[str, tuple[bytes, str]] = {}
    for which in ("before", "after"):
        for d in shown:
            path = getattr(d, f"chip_{which}")
            found = resolve_evidence(path, d.source, state.evidence_roots) if path else None
            if found is not None:
                chips[which] = (found.read_bytes(), CHIP_TYPES[found.suffix.lower()])
                break
    page = render_dossier(detail, chips, now=state.now())
    return HTMLResponse(
        page,
        headers={
            "Content-Security-Policy": DOSSIER_CSP,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
        },
    )


@router.get("/review", response_class=HTMLResponse, tags=["review"], summary="The review page")
def review_page() -> HTMLResponse:
    """The page itself needs no token: it asks for one (login form) when the API says 401."""
    nonce = secrets.token_urlsafe(16)
    csp = (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "img-src 'self'; connect-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )
    html = PAGE.replace("{{NONCE}}", nonce).replace("{{CSRF_HEADER}}", CSRF_HEADER)
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>changedetect · case review</title>
<style nonce="{{NONCE}}">
  :root { --fg:#1d2733; --muted:#5b6b7c; --line:#d5dde5; --bg:#f5f7f9; --accent:#0b6e4f;
          --warn:#b3261e; }
  * { box-sizing: border-box; }
  body { margin:0; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color:var(--fg); background:var(--bg); }
  header.top { display:flex; align-items:center; gap:1rem; padding:.6rem 1rem;
               background:#fff; border-bottom:1px solid var(--line); }
  header.top h1 { font-size:1.1rem; margin:0; flex:1; }
  main { padding:1rem; max-width:1200px; margin:0 auto; }
  form.filters { display:flex; flex-wrap:wrap; gap:.6rem; align-items:end; margin-bottom:1rem; }
  form.filters label { display:flex; flex-direction:column; font-size:.8rem; color:var(--muted); }
  input, select, button { font:inherit; padding:.3rem .5rem; border:1px solid var(--line);
                          border-radius:4px; background:#fff; }
  button { cursor:pointer; }
  button.act { background:var(--accent); color:#fff; border-color:var(--accent); }
  button.act[data-to="violation"] { background:var(--warn); border-color:var(--warn); }
  .case { background:#fff; border:1px solid var(--line); border-radius:6px; padding:.8rem;
          margin-bottom:1rem; }
  .case h2 { font-size:1rem; margin:0 0 .4rem; }
  .case.current { outline:3px solid var(--accent, #2b6cb0); outline-offset:2px; }
  .keys { color:var(--muted); font-size:.8rem; margin:.3rem 0 .8rem; }
  #report { margin:.4rem 0 .8rem; } #report table { border-collapse:collapse; margin-top:.4rem; }
  #report td, #report th { padding:.15rem .5rem; border-bottom:1px solid var(--line);
                           text-align:right; }
  #report td:nth-child(2), #report th:nth-child(2) { text-align:left; }
  [hidden] { display:none !important; } /* a display rule must not show what is hidden */
  .bulk { display:flex; flex-wrap:wrap; gap:.5rem; align-items:center; margin:.4rem 0 .8rem; }
  .keys kbd { border:1px solid var(--line); border-radius:3px; padding:0 .25rem; background:#fff; }
  /* a phone in the field: one column, thumb-sized controls, no keyboard help */
  @media (max-width: 640px) {
    header.top { flex-wrap:wrap; }
    button, select, input { min-height:44px; font-size:16px; }
    .actions button.act { flex:1 1 40%; }
    .actions input.comment { flex:1 1 100%; min-width:0; }
    .chips figure, .chips img { width:100%; }
    .keys { display:none; }
  }
  .meta { color:var(--muted); font-size:.85rem; margin-bottom:.5rem; }
  .badge { display:inline-block; padding:0 .4rem; border-radius:3px; background:#e6edf3;
           margin-right:.3rem; font-size:.8rem; }
  .badge.overdue, .badge.escalated { background:#fde2e0; color:var(--warn); }
  .chips { display:flex; gap:.8rem; flex-wrap:wrap; }
  .chips figure { margin:0; }
  .chips img { width:400px; max-width:100%; height:auto; image-rendering:pixelated;
               background:#222; border:1px solid var(--line); display:block; }
  .chips figcaption { font-size:.8rem; color:var(--muted); text-align:center; }
  .nochip { width:256px; height:256px; display:flex; align-items:center; justify-content:center;
            background:#eceff2; color:var(--muted); border:1px dashed var(--line); }
  .actions { display:flex; flex-wrap:wrap; gap:.4rem; margin-top:.6rem; align-items:center; }
  .actions input.comment { flex:1; min-width:12rem; }
  .msg { font-size:.85rem; margin-top:.3rem; min-height:1.2em; }
  .msg.error { color:var(--warn); }
  .pager { display:flex; gap:.6rem; align-items:center; margin:1rem 0; }
  #login { max-width:28rem; margin:3rem auto; background:#fff; padding:1.2rem;
           border:1px solid var(--line); border-radius:6px; }
  #login input { width:100%; margin:.5rem 0; }
</style>
</head>
<body>
<header class="top">
  <h1>changedetect · case review</h1>
  <span id="who"></span>
  <button id="logout" type="button" hidden>Log out</button>
</header>
<main>
  <section id="login" hidden>
    <h2>Log in</h2>
    <p>Paste your API token (from <code>changedetect tracker token create</code>).
       It is kept in an HttpOnly cookie for this site only.</p>
    <form id="login-form">
      <input id="token" name="token" type="password" autocomplete="off" required
             placeholder="cdt_...">
      <button class="act" type="submit">Log in</button>
      <div class="msg error" id="login-msg" role="alert"></div>
    </form>
  </section>
  <section id="app" hidden>
    <form class="filters" id="filters">
      <label>State<select name="state">
        <option value="">open (issued … rectifying)</option>
        <option value="*">any</option>
        <option>issued</option><option>verifying</option><option>violation</option>
        <option>rectifying</option><option>compliant</option><option>false_alarm</option>
        <option>closed</option>
      </select></label>
      <label>Change type<select name="change_type">
        <option value="">any</option><option>quarry</option><option>construction</option>
        <option>vegetation_loss</option><option>other</option>
      </select></label>
      <label id="county-filter">County<input name="county" size="12"></label>
      <label>Tier<input name="tier" size="12"></label>
      <label>Detected from<input name="detected_from" type="date"></label>
      <label>Detected to<input name="detected_to" type="date"></label>
      <button type="submit">Apply</button>
    </form>
    <div class="pager"><button id="prev" type="button">‹ Prev</button>
      <span id="count"></span><button id="next" type="button">Next ›</button></div>
    <p class="keys" id="keys">Keys: <kbd>j</kbd>/<kbd>k</kbd> next/previous case,
      <kbd>v</kbd> verifying, <kbd>c</kbd> compliant, <kbd>f</kbd> false alarm,
      <kbd>x</kbd> violation, <kbd>r</kbd> rectifying, <kbd>d</kbd> closed (as the role
      allows), <kbd>/</kbd> the case's comment.</p>
    <details id="report"><summary>Monthly report (通报): the cases of a detection month, per
      county</summary>
      <form id="report-form"><label>Month <input type="month" name="month" required></label>
        <button type="submit">Show</button> <a id="report-csv" hidden>CSV</a></form>
      <table id="report-table" hidden><thead><tr><th>rank</th><th>county</th><th>issued</th>
        <th>verified</th><th>on time</th><th>violations</th><th>rectified</th><th>overdue</th>
        <th>relapses</th><th>closed</th><th>on-time share</th><th>median days</th></tr></thead>
        <tbody></tbody></table>
      <div class="msg" id="report-msg" role="status"></div>
    </details>
    <div class="bulk" id="bulk" hidden>Assign the ticked cases to
      <select id="bulk-county"></select>
      <button type="button" id="bulk-assign">Assign selected</button>
      <span class="msg" id="bulk-msg" role="status"></span></div>
    <div id="cases"></div>
  </section>
</main>
<script nonce="{{NONCE}}">
"use strict";
(function () {
  const CSRF = "{{CSRF_HEADER}}";
  const OPEN = ["issued", "verifying", "violation", "rectifying"];
  const PAGE = 20;
  let me = null;
  let offset = 0;
  const $ = (id) => document.getElementById(id);

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

  async function api(path, options) {
    const opts = Object.assign({credentials: "same-origin", headers: {}}, options || {});
    if (opts.method && opts.method !== "GET") opts.headers[CSRF] = "1";
    const response = await fetch(path, opts);
    let body = null;
    const type = response.headers.get("content-type") || "";
    if (type.includes("json")) body = await response.json();
    return {status: response.status, ok: response.ok, body: body};
  }

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
    const r = await api("/cases?" + query().toString());
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
    focusCard(0);
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
      el("div", {class: "chips"}, chip(c, "before"), chip(c, "after")));
    const msg = el("div", {class: "msg", role: "status"});
    article.append(actions(c, article, msg), msg);
    return article;
  }

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
      b.addEventListener("click", () => act(c, article, msg, "/cases/" + c.id + "/assign",
                                            {county: county.value, comment: comment.value || null}));
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

  // bulk assignment: tick cases, pick a county, assign them all (one request per case, each
  // checked and recorded as a single assignment would be)
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
                                                      " case(s) from the review page"})});
      if (r.ok) { article.replaceWith(card(r.body)); done += 1; }
      else failed.push(id + " (" + ((r.body && r.body.detail) || r.status) + ")");
    }
    msg.textContent = done + " case(s) assigned to " + county +
      (failed.length ? "; not: " + failed.join(", ") : "");
  }

  async function act(c, article, msg, path, body) {
    for (const b of article.querySelectorAll("button")) b.disabled = true;
    const r = await api(path, {method: "POST", body: JSON.stringify(body),
                               headers: {"Content-Type": "application/json"}});
    if (r.ok) {
      const fresh = card(r.body);
      fresh.querySelector(".msg").textContent = "Saved: case " + r.body.id + " is " + r.body.state;
      if (article.classList.contains("current")) fresh.classList.add("current");
      article.replaceWith(fresh);
    } else {
      for (const b of article.querySelectorAll("button")) b.disabled = false;
      msg.className = "msg error";
      msg.textContent = (r.body && r.body.detail) || ("failed (HTTP " + r.status + ")");
    }
  }

  // keyboard triage: move through the cases and record a verdict without the mouse
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
  }
  document.addEventListener("keydown", (e) => {
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
  });

  $("bulk-assign").addEventListener("click", assignSelected);
  $("report-form").addEventListener("submit", async (e) => {
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
  });
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); offset = 0; load(); });
  $("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
  $("next").addEventListener("click", () => { offset += PAGE; load(); });
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
  start();
})();
</script>
</body>
</html>
"""
