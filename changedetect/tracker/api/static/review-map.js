"use strict";
/*
 * The review page's map: the listed cases (the list's filters and page, from /cases.geojson) as
 * outlines with a marker at each centroid, coloured by state. Clicking a case makes its card the
 * current one; the current card (a click on the map, j/k) is highlighted and panned to.
 *
 * No basemap unless the deployment configured one (the #map element's data-basemap-url): by
 * default the page loads nothing from outside the app. The chips are not laid on the map: no
 * record keeps a chip's ground extent (the pipeline frames it in the scene's pixel grid and does
 * not write that window down), and a chip is two panels side by side, not one image of the ground.
 *
 * It talks to review.js through the page's events only (see there): it listens to
 * review:cases, review:current and review:case, and sends review:select.
 */
(function () {
  const box = document.getElementById("map");
  if (!box || typeof L === "undefined") return;
  const panel = document.getElementById("map-panel");
  const note = document.getElementById("map-msg");
  const style = getComputedStyle(document.documentElement);
  // any first view will do: the listed cases' extent replaces it as soon as they come
  const map = L.map(box, {center: [34.0, 108.3], zoom: 7, minZoom: 2, maxZoom: 19});
  L.control.scale({imperial: false}).addTo(map);
  const shapes = L.featureGroup().addTo(map);
  const cases = new Map(); // case id → {outline, marker, state}
  let currentId = null;
  let requested = 0; // only the newest request's answer is drawn

  // --- base layer ---------------------------------------------------------------------------

  function escapeText(text) {
    // Leaflet writes attributions as markup: the configured text must stay text
    return text.replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
  }

  function baseNote() {
    return box.dataset.basemapUrl ? "" :
      "No basemap: case outlines only, nothing loaded from outside.";
  }

  // Leaflet cancels an unwanted tile's download by pointing the image at a data: URL, which
  // this page's CSP refuses (images come from the app and the basemap's origin only); taking
  // the src away cancels it all the same.
  const Tiles = L.TileLayer.extend({
    _abortLoading: function () {
      for (const key of Object.keys(this._tiles)) {
        const tile = this._tiles[key];
        if (tile.coords.z === this._tileZoom) continue;
        tile.el.onload = tile.el.onerror = L.Util.falseFn;
        if (tile.el.complete) continue;
        tile.el.removeAttribute("src");
        L.DomUtil.remove(tile.el);
        delete this._tiles[key];
        this.fire("tileabort", {tile: tile.el, coords: tile.coords});
      }
    },
    _removeTile: function (key) {
      const tile = this._tiles[key];
      if (!tile) return;
      tile.el.removeAttribute("src");
      return L.GridLayer.prototype._removeTile.call(this, key);
    },
  });

  function addBasemap() {
    const url = box.dataset.basemapUrl;
    note.textContent = baseNote();
    if (!url) return;
    new Tiles(url, {
      attribution: escapeText(box.dataset.basemapAttribution || ""),
      maxZoom: 19,
      // the tracker's origin only (some tile keys are bound to it), never the page's path
      referrerPolicy: "strict-origin",
    }).addTo(map);
  }

  // --- the cases ----------------------------------------------------------------------------

  function colour(state) {
    return style.getPropertyValue("--state-" + state).trim() || "#1d2733";
  }

  function paint(id, state) {
    const shape = cases.get(id);
    if (!shape) return;
    const current = id === currentId;
    const c = colour(state);
    shape.state = state;
    shape.outline.setStyle({color: c, fillColor: c, weight: current ? 4 : 2,
                            fillOpacity: current ? 0.45 : 0.25});
    shape.marker.setStyle({color: current ? "#000" : "#fff", fillColor: c,
                           weight: current ? 3 : 1.5});
    shape.marker.setRadius(current ? 9 : 6);
    if (current) { shape.outline.bringToFront(); shape.marker.bringToFront(); }
    for (const node of elements(shape)) node.classList.toggle("current", current);
  }

  /** The SVG paths that draw a case (its outline's parts and its marker). */
  function elements(shape) {
    const layers = [...shape.outline.getLayers(), shape.marker];
    return layers.map((layer) => layer.getElement()).filter((node) => node);
  }

  function label(id, p) {
    return "Case " + id + " · " + p.state + " · " + p.change_type;
  }

  function select(id) {
    document.dispatchEvent(new CustomEvent("review:select", {detail: {id: id}}));
  }

  function addCase(feature) {
    const id = feature.id, p = feature.properties;
    const outline = L.geoJSON(feature, {style: {className: "case-outline"}});
    const marker = L.circleMarker([p.centroid_lat, p.centroid_lon],
                                  {className: "case-marker", bubblingMouseEvents: false});
    marker.bindTooltip(label(id, p));
    for (const layer of [outline, marker]) {
      layer.on("click", () => select(id));
      shapes.addLayer(layer);
    }
    const shape = {outline: outline, marker: marker, state: p.state};
    for (const node of elements(shape)) node.setAttribute("data-case-id", String(id));
    cases.set(id, shape);
    paint(id, p.state);
  }

  async function show(detail) {
    const ticket = ++requested;
    // the map may have been laid out while the page was hidden (the login form)
    map.invalidateSize();
    const listed = new Set(detail.items.map((c) => c.id));
    const response = await fetch("/cases.geojson?" + new URLSearchParams(detail.query).toString(),
                                 {credentials: "same-origin"});
    if (ticket !== requested) return;
    if (!response.ok) {
      note.textContent = "The map could not load the cases (HTTP " + response.status + ").";
      return;
    }
    const collection = await response.json();
    if (ticket !== requested) return;
    shapes.clearLayers();
    cases.clear();
    // the list is the truth: a case changed between the two requests is shown as listed
    for (const feature of collection.features) if (listed.has(feature.id)) addCase(feature);
    if (cases.size) map.fitBounds(shapes.getBounds(), {padding: [24, 24], maxZoom: 16});
    note.textContent = baseNote();
    for (const c of detail.items) if (cases.has(c.id)) paint(c.id, c.state);
    if (currentId !== null) highlight(currentId, false);
  }

  function highlight(id, pan) {
    const previous = currentId;
    currentId = id;
    const old = cases.get(previous);
    if (old && previous !== id) paint(previous, old.state);
    const shape = cases.get(id);
    if (!shape) return;
    paint(id, shape.state);
    if (pan) map.panTo(shape.marker.getLatLng());
  }

  // --- wiring -------------------------------------------------------------------------------

  document.addEventListener("review:cases", (e) => { show(e.detail); });
  document.addEventListener("review:current", (e) => { highlight(e.detail.id, true); });
  document.addEventListener("review:case", (e) => {
    const item = e.detail.item, shape = cases.get(item.id);
    if (!shape) return;
    shape.marker.setTooltipContent(label(item.id, item));
    paint(item.id, item.state);
  });
  // a folded map has no size: lay it out again when it is unfolded
  panel.addEventListener("toggle", () => { if (panel.open) map.invalidateSize(); });
  addBasemap();

  /** For other features of the page (and tests): the Leaflet map and each listed case's layers. */
  window.caseMap = Object.freeze({
    map: map,
    ids: () => Array.from(cases.keys()),
    layersOf: (id) => cases.get(id) || null,
    currentId: () => currentId,
  });
})();
