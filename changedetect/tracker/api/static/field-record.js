"use strict";
/*
 * The field record on the review page: on a case being verified, the officer records the
 * verdict with a note, where they stand (the phone's location, or typed in when it gives
 * none) and photos from the camera, uploaded one by one as they are picked.
 *
 * It joins the page through review.js's events: a form is added to each card of a case in
 * `verifying` whose verdict the user may give (review:cases, review:case); once the verdict is
 * recorded, review:refresh asks the list to redraw the card. Everything is built with DOM calls
 * and textContent, never parsed as HTML.
 */
(function () {
  const CSRF = document.body.dataset.csrfHeader;
  const VERDICTS = ["compliant", "false_alarm", "violation"];
  const LABELS = {compliant: "compliant", false_alarm: "false alarm", violation: "violation"};
  let maxBytes = null; // the API's photo_max_bytes, read once from /me

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-") || k.startsWith("aria-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) node.append(c);
    return node;
  }

  async function send(path, body, json) {
    const headers = {[CSRF]: "1"};
    if (json) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {method: "POST", credentials: "same-origin", headers: headers,
                                    body: json ? JSON.stringify(body) : body});
    } catch (err) {
      return {ok: false, status: 0, body: {detail: "no connection: try again when online"}};
    }
    const type = response.headers.get("content-type") || "";
    const parsed = type.includes("json") ? await response.json() : null;
    return {ok: response.ok, status: response.status, body: parsed};
  }

  function failure(r) {
    return (r.body && r.body.detail) || ("failed (HTTP " + r.status + ")");
  }

  function sizeText(bytes) {
    return bytes >= 1048576 ? (bytes / 1048576).toFixed(1) + " MB" :
      Math.max(1, Math.round(bytes / 1024)) + " kB";
  }

  async function photoLimit() {
    if (maxBytes === null) {
      const r = await fetch("/me", {credentials: "same-origin"});
      if (r.ok) maxBytes = (await r.json()).photo_max_bytes;
    }
    return maxBytes;
  }

  // --- the officer's position ---------------------------------------------------------------

  /** The position part of the form: "Use my position", and the fields it fills (editable). */
  function positionFields(state) {
    const number = (name, label, hint) => el("label", {class: "field"}, label,
      el("input", {name: name, type: "text", inputMode: "decimal", autocomplete: "off",
                   placeholder: hint}));
    const lat = number("lat", "Latitude (WGS84)", "34.00031");
    const lon = number("lon", "Longitude (WGS84)", "108.25052");
    const accuracy = number("accuracy_m", "Accuracy (m)", "from the phone");
    const status = el("div", {class: "fix-status", role: "status"});
    const locate = el("button", {type: "button", class: "locate"}, "Use my position");
    const inputs = [lat, lon, accuracy].map((l) => l.querySelector("input"));
    // a value typed by hand is the officer's, not the phone's: say so in the record
    for (const input of inputs) {
      input.addEventListener("input", () => {
        state.source = "manual"; state.takenAt = null;
        status.textContent = "typed in: recorded as a manual position";
      });
    }
    locate.addEventListener("click", () => {
      if (!navigator.geolocation) {
        status.textContent = "this browser gives no position: type it in";
        inputs[0].focus();
        return;
      }
      locate.disabled = true;
      status.textContent = "finding your position…";
      navigator.geolocation.getCurrentPosition((fix) => {
        locate.disabled = false;
        inputs[0].value = fix.coords.latitude.toFixed(6);
        inputs[1].value = fix.coords.longitude.toFixed(6);
        inputs[2].value = Math.round(fix.coords.accuracy * 10) / 10;
        state.source = "device";
        state.takenAt = new Date(fix.timestamp).toISOString();
        status.textContent = "position from the phone, ±" + Math.round(fix.coords.accuracy) +
          " m at " + new Date(fix.timestamp).toLocaleTimeString();
      }, (err) => {
        locate.disabled = false;
        const why = err.code === 1 ? "location permission refused" :
          err.code === 3 ? "no fix in time" : "position unavailable";
        status.textContent = why + ": type the position in";
        inputs[0].focus();
      }, {enableHighAccuracy: true, timeout: 20000, maximumAge: 0});
    });
    return el("fieldset", {class: "position"}, el("legend", {}, "Where you stand"),
              locate, status, lat, lon, accuracy);
  }

  /** The position to send, or an error message. */
  function readPosition(form, state) {
    const value = (name) => form.elements[name].value.trim();
    const lat = Number(value("lat")), lon = Number(value("lon"));
    if (!value("lat") || !value("lon")) return "position needed: use your position or type it in";
    if (!Number.isFinite(lat) || lat < -90 || lat > 90) return "latitude must be -90 to 90";
    if (!Number.isFinite(lon) || lon < -180 || lon > 180) return "longitude must be -180 to 180";
    const position = {lat: lat, lon: lon, source: state.source,
                      taken_at: state.takenAt || new Date().toISOString()};
    if (value("accuracy_m")) {
      const accuracy = Number(value("accuracy_m"));
      if (!Number.isFinite(accuracy) || accuracy < 0) return "accuracy must be metres, 0 or more";
      position.accuracy_m = accuracy;
    }
    return position;
  }

  // --- photos: each one uploaded as soon as it is picked -------------------------------------

  function photoFields(caseId, state) {
    const input = el("input", {type: "file", name: "photos", accept: "image/*", multiple: true,
                               class: "photo-input"});
    input.setAttribute("capture", "environment");
    const list = el("ul", {class: "photo-list"});
    input.addEventListener("change", async () => {
      const files = Array.from(input.files);
      input.value = ""; // the same file may be picked again after an error
      const limit = await photoLimit();
      for (const file of files) {
        const status = el("span", {class: "photo-status"}, "uploading…");
        const item = el("li", {class: "photo pending"}, el("span", {class: "photo-name"},
                        file.name + " (" + sizeText(file.size) + ")"), status);
        list.append(item);
        if (limit !== null && file.size > limit) {
          item.className = "photo error";
          status.textContent = "too large: at most " + sizeText(limit);
          continue;
        }
        state.uploading += 1;
        const data = new FormData();
        data.append("photo", file, file.name);
        const r = await send("/cases/" + caseId + "/photos", data, false);
        state.uploading -= 1;
        if (r.ok) {
          if (!state.photoIds.includes(r.body.id)) state.photoIds.push(r.body.id);
          item.className = "photo kept";
          item.dataset.photoId = String(r.body.id);
          status.textContent = "kept · " + r.body.width + "×" + r.body.height;
          item.prepend(el("img", {src: r.body.url, alt: "photo " + r.body.id, class: "thumb"}));
        } else {
          item.className = "photo error";
          status.textContent = failure(r);
        }
      }
    });
    return el("fieldset", {class: "photos"}, el("legend", {}, "Photos"),
              el("label", {class: "field"}, "Take or choose photos", input), list);
  }

  // --- the form ------------------------------------------------------------------------------

  function fieldRecord(item) {
    const allowed = VERDICTS.filter((v) => item.allowed_transitions.includes(v));
    const state = {source: "device", takenAt: null, photoIds: [], uploading: 0};
    const verdict = el("select", {name: "verdict", required: true});
    verdict.append(el("option", {value: ""}, "choose the verdict…"));
    for (const v of allowed) verdict.append(el("option", {value: v}, LABELS[v]));
    const note = el("textarea", {name: "note", rows: 3, maxLength: 4000,
                                 placeholder: "what you found on site (recorded)"});
    const msg = el("div", {class: "msg", role: "status"});
    const submit = el("button", {type: "submit", class: "record"}, "Record verdict");
    const form = el("form", {class: "field-record", noValidate: true},
      el("label", {class: "field"}, "Verdict", verdict),
      el("label", {class: "field"}, "Note", note),
      positionFields(state), photoFields(item.id, state), submit, msg);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      msg.className = "msg error";
      if (!verdict.value) { msg.textContent = "choose the verdict"; verdict.focus(); return; }
      if (state.uploading) { msg.textContent = "photos are still uploading: wait a moment"; return; }
      const position = readPosition(form, state);
      if (typeof position === "string") { msg.textContent = position; return; }
      submit.disabled = true;
      msg.className = "msg"; msg.textContent = "recording…";
      const r = await send("/cases/" + item.id + "/verification", {
        verdict: verdict.value, note: note.value.trim() || null, position: position,
        photo_ids: state.photoIds}, true);
      if (r.ok) {
        document.dispatchEvent(new CustomEvent("review:refresh", {detail: {item: r.body,
          message: "Saved: case " + r.body.id + " is " + r.body.state + " (field record with " +
                   state.photoIds.length + " photo(s))"}}));
      } else {
        submit.disabled = false;
        msg.className = "msg error";
        msg.textContent = failure(r);
      }
    });
    return el("details", {class: "field-record"}, el("summary", {}, "Field record"), form);
  }

  function attach(item) {
    if (item.state !== "verifying") return;
    if (!VERDICTS.some((v) => item.allowed_transitions.includes(v))) return;
    const article = document.querySelector("#cases article.case[data-case-id='" + item.id + "']");
    if (!article || article.querySelector("details.field-record")) return;
    article.append(fieldRecord(item));
  }

  document.addEventListener("review:cases", (e) => e.detail.items.forEach(attach));
  document.addEventListener("review:case", (e) => attach(e.detail.item));
})();
