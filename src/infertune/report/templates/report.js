// Sortable tables and the group filter of an infertune report. No network, no libraries.
// A header button sorts its column (again: the other way); numbers sort by data-sort, and cells
// without a number stay at the bottom in both directions. Ties keep the table's original order.
"use strict";
(function () {
  function sortKey(row, column, numeric) {
    const cell = row.cells[column];
    const raw = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
    if (!numeric) return raw;
    return raw === "" ? NaN : Number(raw);
  }

  function sortTable(table, column, header) {
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    for (const th of table.tHead.rows[0].cells) th.removeAttribute("aria-sort");
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const numeric = header.dataset.type === "number";
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      const x = sortKey(a, column, numeric);
      const y = sortKey(b, column, numeric);
      let order;
      if (numeric) {
        const xMissing = Number.isNaN(x), yMissing = Number.isNaN(y);
        order = xMissing || yMissing ? xMissing - yMissing : (ascending ? x - y : y - x);
      } else {
        order = ascending ? x.localeCompare(y, undefined, {numeric: true}) : y.localeCompare(x, undefined, {numeric: true});
      }
      return order || Number(a.dataset.index) - Number(b.dataset.index);
    });
    body.append(...rows);
  }

  for (const table of document.querySelectorAll("table.sortable")) {
    const headers = table.tHead.rows[0].cells;
    for (let column = 0; column < headers.length; column++) {
      const button = headers[column].querySelector("button");
      if (button) button.addEventListener("click", function () { sortTable(table, column, headers[column]); });
    }
  }

  const filter = document.getElementById("group-filter");
  if (filter) {
    filter.addEventListener("change", function () {
      for (const row of document.querySelectorAll("#results tbody tr")) {
        row.hidden = filter.value !== "" && row.dataset.group !== filter.value;
      }
    });
  }
  document.documentElement.dataset.ready = "true";
})();
