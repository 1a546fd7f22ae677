"""The HTML report in a real browser: headless Chromium opens the file, the table, every chart and the
fastest-variant cards render, sorting and the filter work, no script error or blocked resource, and a
screenshot of the whole page is saved under the test's temporary folder."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from infertune.report import build_report
from tests.browser import Browser, find_chromium
from tests.report_fixtures import make_rows, p50_of, write_rows

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH: the README's test command installs Debian's `chromium` package (apt-get)",
)

ROWS_JS = "Array.from(document.querySelectorAll('#results-table tbody tr'))"


def _column(browser: Browser, key: str, attr: str = "sort") -> list[str]:
    """Visible rows' values of one column, top to bottom (data-sort by default, else the text)."""
    get = f"c.dataset.{attr}" if attr == "sort" else "c.textContent.trim()"
    return browser.evaluate(f"{ROWS_JS}.filter(r => !r.hidden).map(r => {{ const c = r.querySelector("
                            f"'td[data-key={key}]'); return {get}; }})")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser_report")
    rows, samples = make_rows(batches=(1, 8))
    paths = build_report(write_rows(folder, rows, samples), folder / "report")
    return rows, paths


@pytest.fixture(scope="module")
def page(report, tmp_path_factory):
    _, paths = report
    with Browser(CHROMIUM, tmp_path_factory.mktemp("chromium_profile"), width=1280, height=900) as browser:
        browser.open(paths["html"].resolve().as_uri())
        yield browser


def test_table_charts_and_fastest_cards_render(report, page):
    rows, paths = report
    assert page.evaluate("document.documentElement.dataset.ready") == "true"  # the page's script ran
    # the results table: one visible row per result row, the best one marked
    assert page.evaluate(f"{ROWS_JS}.filter(r => r.offsetHeight > 0).length") == len(rows)
    assert page.evaluate("document.querySelectorAll('#results-table tr.best').length") == 2
    # every chart decoded at its full size, none broken
    charts = [p for k, p in paths.items() if k not in ("html", "markdown")]
    images = page.evaluate("Array.from(document.images).map(i => ({name: i.dataset.name, ok: i.complete, "
                           "w: i.naturalWidth, h: i.naturalHeight, shown: i.getBoundingClientRect().width}))")
    assert sorted(i["name"] for i in images) == sorted(p.name for p in charts)
    for image in images:
        with Image.open(paths["html"].parent / image["name"]) as png:
            assert image["ok"] and (image["w"], image["h"]) == png.size, image
        assert image["shown"] > 600, image  # laid out, not collapsed
    # the fastest variant that kept the predictions, per batch size
    cards = page.evaluate("Array.from(document.querySelectorAll('#fastest .card')).map(c => c.innerText)")
    assert len(cards) == 2
    for card, batch in zip(cards, (1, 8)):
        speedup = p50_of(rows, "pytorch:fp32", batch) / p50_of(rows, "onnxruntime:fp32", batch)
        assert f"BATCH {batch}" in card.upper() and "onnxruntime:fp32" in card and f"{speedup:.2f}×" in card
    assert page.evaluate("document.querySelector('#failures').innerText").count("unavailable") >= 1
    assert page.console_errors == []  # no script error, no Content-Security-Policy violation


def test_sorting_by_clicking_headers(page):
    page.click("th[data-key=p50] button")
    assert page.evaluate("document.querySelector('th[data-key=p50]').getAttribute('aria-sort')") == "ascending"
    values = _column(page, "p50")
    numbers = [float(v) for v in values if v != ""]
    assert numbers == sorted(numbers) and len(numbers) == 8
    assert values[len(numbers):] == [""] * (len(values) - len(numbers))  # rows without timings last

    page.click("th[data-key=p50] button")
    assert page.evaluate("document.querySelector('th[data-key=p50]').getAttribute('aria-sort')") == "descending"
    values = _column(page, "p50")
    numbers = [float(v) for v in values if v != ""]
    assert numbers == sorted(numbers, reverse=True) and values[-1] == ""

    page.click("th[data-key=variant] button")
    names = _column(page, "variant")
    assert names == sorted(names) and page.evaluate(
        "document.querySelector('th[data-key=p50]').hasAttribute('aria-sort')") is False


def test_batch_filter_and_screenshot(report, page, tmp_path):
    rows, _ = report
    page.evaluate("(() => { const f = document.getElementById('group-filter'); f.value = f.options[2].value;"
                  " f.dispatchEvent(new Event('change')); })()")
    assert set(_column(page, "batch", attr="text")) == {"8"}
    assert len(_column(page, "batch", attr="text")) == sum(1 for r in rows if r.batch_size == 8)
    page.evaluate("(() => { const f = document.getElementById('group-filter'); f.value = '';"
                  " f.dispatchEvent(new Event('change')); })()")
    assert len(_column(page, "batch", attr="text")) == len(rows)

    shot = page.screenshot(tmp_path / "report_screenshot.png")
    with Image.open(shot) as im:
        width, height = im.size
        pixels = np.asarray(im.convert("RGB"))
    assert width == 1280 and height > 3000  # the whole page, charts included
    assert len(np.unique(pixels.reshape(-1, 3)[::97], axis=0)) > 100  # rendered content, not a blank page
    print(f"screenshot: {shot}")


def test_markup_in_result_files_does_not_run_in_the_browser(tmp_path):
    rows, samples = make_rows(batches=(1,), model='<img src=x onerror="window.__xss=1">')
    for row in rows:
        row.error = row.error and '<script>window.__xss=2</script>' + row.error
    paths = build_report(write_rows(tmp_path, rows, samples), tmp_path / "report")
    with Browser(CHROMIUM, tmp_path / "profile") as browser:
        browser.open(paths["html"].resolve().as_uri())
        assert browser.evaluate("window.__xss === undefined")
        assert browser.evaluate("document.querySelectorAll('img:not([data-name])').length") == 0
        heading = browser.evaluate("document.querySelector('h1').textContent")
        assert re.search(r'<img src=x onerror="window.__xss=1">', heading)  # shown as text
        assert browser.console_errors == []
