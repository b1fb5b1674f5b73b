"""Tables and the share link at 1400 x 900 with the sidebar open: nothing to read is out of sight.

The metrics table once pushed ``mae_vs_naive`` and ``n`` past the right edge, the copy
check and the look-ahead audit were clipped, and the link's copy button showed only on
hover while the caption pointed to it.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT = 1400, 900
SMALL_COMPARE = "compare.models=naive,drift&compare.test_size=30&horizon=3&compare.folds=2"

# The element's left and right edges, and every ancestor that cuts off what overflows it
# sideways (a scrolling or clipping box) with its edges: a cell outside one is not seen.
CLIPPERS = """el => {
    const box = el.getBoundingClientRect();
    const clips = [];
    for (let up = el.parentElement; up; up = up.parentElement) {
        const overflow = getComputedStyle(up).overflowX;
        if (overflow !== 'visible') {
            const r = up.getBoundingClientRect();
            clips.push([up.className || up.tagName, overflow, r.left, r.right]);
        }
    }
    return {left: box.left, right: box.right, width: box.width, clips};
}"""

# Every box inside the element that scrolls sideways because its content is wider.
SIDEWAYS_SCROLLERS = """el => [el, ...el.querySelectorAll('*')]
    .filter(x => ['auto', 'scroll'].includes(getComputedStyle(x).overflowX))
    .filter(x => x.clientWidth > 0 && x.scrollWidth > x.clientWidth + 1)
    .map(x => [x.className, x.scrollWidth, x.clientWidth])"""

# Opacity and visibility of the element and each of its ancestors.
SHOWN = """el => { const out = [];
    for (let x = el; x; x = x.parentElement) {
        const s = getComputedStyle(x); out.push([x.className, s.opacity, s.visibility]); }
    return out; }"""


def assert_in_sight(locator, what: str) -> None:
    """The element lies inside the window sideways and inside every box that clips it."""
    locator.scroll_into_view_if_needed()
    found = locator.evaluate(CLIPPERS)
    assert found["width"] > 0, f"{what} has no width"
    assert found["left"] >= 0, f"{what} is off screen: {found}"
    assert found["right"] <= WIDTH, f"{what} is off screen: {found}"
    for name, overflow, left, right in found["clips"]:
        cut = f"{what} is cut off by {name} (overflow-x {overflow}): {found}"
        assert left - 1 <= found["left"], cut
        assert found["right"] <= right + 1, cut


def header_cells(table) -> dict[str, object]:
    cells = table.locator("thead th")
    return {cells.nth(i).inner_text().strip(): cells.nth(i) for i in range(cells.count())}


def column_of(page, heading: str):
    """The page column that this heading opens."""
    return page.get_by_test_id("stColumn").filter(has=page.get_by_role("heading", name=heading))


def grid_under(page, heading: str):
    """The st.dataframe in the page column that this heading opens."""
    return column_of(page, heading).get_by_test_id("stDataFrame")


def assert_grid_fits(grid, labels: list[str], what: str) -> None:
    """An st.dataframe shows every column: it ends inside the window, nothing in it
    scrolls sideways, and its header names the columns in this order."""
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    assert box is not None
    assert box["x"] >= 0, box
    assert box["x"] + box["width"] <= WIDTH, box
    assert grid.evaluate(SIDEWAYS_SCROLLERS) == [], f"{what} scrolls sideways"
    # The grid draws on a canvas; its accessible copy names the columns (once drawn).
    expect(grid.locator("[role='columnheader']")).to_have_text(labels, timeout=30_000)


def test_tables_and_the_copy_button_are_in_sight(browser_page, streamlit_url):
    page = browser_page
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    page.goto(f"{streamlit_url}/compare?{SMALL_COMPARE}")
    page.get_by_role("button", name="Run comparison").wait_for(timeout=60_000)
    wait_idle(page)
    page.get_by_role("button", name="Run comparison").click()
    page.get_by_text("Step by step").wait_for(timeout=120_000)
    wait_idle(page)
    sidebar = page.locator("[data-testid='stSidebar']")
    assert sidebar.is_visible()  # the sidebar is open
    assert sidebar.bounding_box()["width"] > 200
    page.mouse.move(0, 0)  # nothing is hovered

    # The link's copy button shows without hovering, and copies the link.
    code = page.locator("[data-testid='stCode']").first
    code.scroll_into_view_if_needed()
    page.mouse.move(0, 0)
    button = code.get_by_role("button", name="Copy to clipboard")
    assert button.is_visible()
    assert all(
        float(opacity) == 1 and visibility == "visible"
        for _, opacity, visibility in button.evaluate(SHOWN)
    ), button.evaluate(SHOWN)
    assert_in_sight(button, "the copy button")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    button.click()
    link = code.inner_text().strip()
    assert link.startswith(f"{streamlit_url}/compare?")
    assert page.evaluate("navigator.clipboard.readText()") == link

    # The metrics table: the key columns, first, all in sight.
    table = page.locator("[data-testid='stTable']").first
    table.wait_for(timeout=30_000)
    cells = header_cells(table)
    assert list(cells) == ["model", "mae_vs_naive", "against naive", "n", "mae"]
    for name, cell in cells.items():
        assert_in_sight(cell, f"metrics column {name!r}")
    assert table.evaluate(SIDEWAYS_SCROLLERS) == []
    rows = table.locator("tbody tr").all_inner_texts()
    assert [row.split()[0] for row in rows] == ["naive", "drift"]

    # Every other metric is behind "All metrics", key columns first again.
    page.get_by_text("All metrics").click()
    full = page.locator("[data-testid='stTable']").nth(1)
    full.wait_for(timeout=30_000)
    names = [name for name in header_cells(full) if name]
    assert names[:5] == ["model", "mae_vs_naive", "against naive", "n", "mae"]
    assert {"MASE < 1", "mase", "interval_score", "coverage", "directional_pvalue"} <= set(names)
    for name in ("mae_vs_naive", "n"):
        assert_in_sight(header_cells(full)[name], f"all-metrics column {name!r}")

    # The copy check: every column in sight, under short labels.
    page.get_by_role("heading", name="Copies the last price?").scroll_into_view_if_needed()
    wait_idle(page)
    copy_grid = grid_under(page, "Copies the last price?")
    copy_grid.wait_for(timeout=30_000)
    assert_grid_fits(
        copy_grid,
        ["model", "copies last", "moves", "change corr.", "level corr."],
        "the copy check",
    )
    # The fixed rules, too long for a cell, are under the table.
    rule = column_of(page, "Copies the last price?").get_by_text(
        "drift is by definition the last close"
    )
    assert rule.is_visible()

    # The look-ahead audit on the Features page.
    page.goto(f"{streamlit_url}/features")
    page.get_by_role("heading", name="Look-ahead audit").wait_for(timeout=120_000)
    wait_idle(page)
    audit = grid_under(page, "Look-ahead audit")
    audit.wait_for(timeout=30_000)
    assert_grid_fits(audit, ["column", "passed", "max diff.", "first diff."], "the audit")
    assert page.get_by_text("prefixes").first.is_visible()
