"use strict";
// Sorting and filtering of the clue index; the cards and the overview's links follow the filter.
// The page is whole without this script: every clue listed and carded, in review order.
// The report's Content-Security-Policy allows this exact text by its hash: any edit changes it.
(function () {
  const table = document.getElementById("clue-index");
  const bar = document.getElementById("clue-filters");
  const shown = document.getElementById("clues-shown");
  if (!table || !bar || !shown) {
    return;
  }
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const headers = Array.from(table.tHead.rows[0].cells);
  const selects = Array.from(bar.querySelectorAll("select[data-filter]"));
  const words = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  const hits = new Map();
  for (const hit of document.querySelectorAll("a.hit")) {
    hits.set(hit.getAttribute("href"), hit);
  }
  // what else on the page stands for a row: its card and its link on the overview
  const elsewhere = new Map(
    rows.map((row) => {
      const target = "clue-" + row.dataset.number;
      return [row, [document.getElementById(target), hits.get("#" + target)].filter(Boolean)];
    })
  );

  function sortValue(row, column, numeric) {
    const raw = row.cells[column].dataset.value;
    if (!numeric) {
      return raw;
    }
    // a missing number (shown as a dash) sorts below every number
    return raw === "" ? -Infinity : Number(raw);
  }

  function sortBy(header) {
    const column = header.cellIndex;
    const numeric = header.dataset.sort === "number";
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    const ordered = rows.slice().sort((a, b) => {
      const x = sortValue(a, column, numeric);
      const y = sortValue(b, column, numeric);
      const order = numeric ? (x < y ? -1 : x > y ? 1 : 0) : words.compare(x, y);
      // equal values keep the review order, so a sort never shuffles them
      return order || Number(a.dataset.number) - Number(b.dataset.number);
    });
    if (!ascending) {
      ordered.reverse();
    }
    for (const other of headers) {
      other.removeAttribute("aria-sort");
    }
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    for (const row of ordered) {
      body.appendChild(row);
    }
  }

  function applyFilters() {
    let count = 0;
    for (const row of rows) {
      // the first option of each select is "all"
      const keep = selects.every(
        (select) => select.selectedIndex === 0 || row.dataset[select.dataset.filter] === select.value
      );
      row.hidden = !keep;
      for (const element of elsewhere.get(row)) {
        element.hidden = !keep;
      }
      count += keep ? 1 : 0;
    }
    shown.textContent = count + " of " + rows.length + " clues shown";
  }

  for (const header of headers) {
    const button = header.querySelector("button");
    if (button) {
      button.addEventListener("click", () => sortBy(header));
    }
  }
  for (const select of selects) {
    select.addEventListener("change", applyFilters);
  }
  // a reload may bring back the selects as they were left
  applyFilters();
  bar.hidden = false;
})();
