"""User text with Markdown payloads, in a real browser: no foreign link or image in the DOM.

A shared link, a CSV's header, cells and file name, and an experiment bundle's keys
carry a Markdown link and image to a foreign site. The page must show them as their
characters: no ``<a>`` or ``<img>`` pointing there, and no request leaving for it.
"""

from __future__ import annotations

import io
import json
import urllib.parse
import zipfile

import pytest

from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e

LINK = "[Sign in](https://evil.example/x)"
IMAGE = "![x](https://evil.example/p.png)"
DAYS = "\n".join(f"2024-01-{day:02d},1,2,0.5,1.5,10" for day in range(1, 31))


@pytest.fixture
def page(browser_page):
    """The browser page, with every request to the foreign site recorded and refused."""
    browser_page.foreign_requests = []

    def refuse(route):
        browser_page.foreign_requests.append(route.request.url)
        route.abort()

    browser_page.route(lambda url: urllib.parse.urlsplit(url).hostname == "evil.example", refuse)
    return browser_page


def assert_inert(page, *shown: str) -> None:
    """No foreign link or image, no request for one; each of ``shown`` appears as text."""
    wait_idle(page)
    assert page.locator('a[href*="evil.example"]').count() == 0
    assert page.locator('img[src*="evil.example"]').count() == 0
    assert page.foreign_requests == []
    assert page.locator("[data-testid='stException']").count() == 0
    body = page.evaluate("document.body.innerText").replace("\u200b", "")
    for payload in shown:
        assert payload in body


def upload(page, name: str, data: bytes, mime: str) -> None:
    page.locator("[data-testid='stFileUploaderDropzoneInput']").last.set_input_files(
        {"name": name, "mimeType": mime, "buffer": data}
    )


def test_link_values_and_names_are_shown_as_text(page, streamlit_url):
    query = urllib.parse.urlencode({"horizon": LINK, IMAGE: "1", "symbol": LINK})
    page.goto(f"{streamlit_url}/?{query}")
    page.get_by_text("were not valid").wait_for(timeout=60_000)
    assert_inert(page, LINK, IMAGE)


@pytest.mark.parametrize(
    ("name", "data", "wait_for", "shown"),
    [
        # a header the app does not know is quoted in the error
        ("prices.csv", f"timestamp,open,high,low,close,{LINK}\n{DAYS}", "Missing column", [LINK]),
        # a cell that is not a date is quoted in the error
        (
            "prices.csv",
            f"timestamp,open,high,low,close,volume\n{IMAGE},1,2,0.5,1.5,10\n{DAYS}",
            "is not a date",
            [IMAGE],
        ),
        # the file's name is the data's label
        (
            f"{LINK} {IMAGE}.csv",
            f"timestamp,open,high,low,close,volume\n{DAYS}",
            "CSV with a header",
            [LINK, IMAGE],
        ),
    ],
)
def test_csv_payloads_are_shown_as_text(page, streamlit_url, name, data, wait_for, shown):
    page.goto(f"{streamlit_url}/?start=2024-01-01&end=2024-01-31")
    wait_idle(page)
    page.get_by_text("CSV file").click()
    page.get_by_text("Upload a CSV file").first.wait_for(timeout=60_000)
    wait_idle(page)
    upload(page, name, data.encode(), "text/csv")
    page.get_by_text(wait_for).first.wait_for(timeout=60_000)
    assert_inert(page, *shown)


def test_bundle_keys_and_values_are_shown_as_text(page, streamlit_url):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app_settings.json", json.dumps({LINK: "1", "horizon": IMAGE}))
        archive.writestr("settings.json", "{}")
    page.goto(f"{streamlit_url}/compare")
    wait_idle(page)
    page.get_by_text("Restore settings from an experiment bundle").click()
    upload(page, "experiment.zip", buffer.getvalue(), "application/zip")
    page.get_by_text("Not restored").wait_for(timeout=60_000)
    assert_inert(page, LINK, IMAGE)
