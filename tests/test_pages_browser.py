"""Linked-data pages in a real headless browser (Debian's chromium through the system
chromedriver, as in test_browser.py), served by the real app on a free loopback port over
the real graph: a person's page shows their sessions and quotes, a fact page its evidence."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import CHROMIUM, chromium, find, find_all, serve_in_thread
from project import load_real_store

from sasci_kg.vocab import BASE
from sasci_kg.web import create_app, load_config

pytestmark = pytest.mark.browser


if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = load_real_store(tmp_path_factory.mktemp("pages") / "store")
    app = create_app(load_config({"store": store, "query_workers": 1}, environ={}))
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile"), window="1280,1400") as driver:
        yield driver




def table_text(driver: Any, key: str) -> list[list[str]]:
    rows = find_all(driver, f"section#{key} table tbody tr")
    return [[cell.text for cell in row.find_elements("css selector", "td")] for row in rows]


def keep_screenshot(driver: Any, tmp_path: Path, name: str) -> None:
    shot = tmp_path / name
    assert driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("SASCI_KG_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / name)


def test_person_page_shows_sessions_and_quotes(site: str, browser: Any, tmp_path: Path) -> None:
    browser.get(site + "/id/person/adam-lent")
    assert browser.title == "Adam Lent · sasci-kg"
    assert find(browser, "h1").text == "Adam Lent"
    assert find(browser, "code.canonical").text == BASE + "id/person/adam-lent"
    assert "Person" in find(browser, ".types").text

    sessions = table_text(browser, "person-sessions")
    assert ["Opening panel", "SASCI Final Event"] in [row[:2] for row in sessions]
    quotes = table_text(browser, "person-quotes")
    assert any("forcing change from below" in row[0] for row in quotes)
    assert any("Opening panel" in cell for row in quotes for cell in row)
    organisations = table_text(browser, "person-organisations")
    assert any("King" in row[0] for row in organisations)

    # Links go to this server; following one opens that resource's page.
    session_link = find(browser, "section#person-sessions a.iri")
    assert session_link.get_attribute("href").startswith(site + "/id/session/")
    assert session_link.get_attribute("title").startswith(BASE + "id/session/")
    session_link.click()
    assert find(browser, "h1").text == "Opening panel"
    people = table_text(browser, "session-people")
    assert any("Lisa Smith" in row[0] and "chair" in row[1] for row in people)
    browser.back()

    # The embedded JSON-LD parses, with canonical IRIs.
    script = browser.execute_script(
        "return document.querySelector('script[type=\"application/ld+json\"]').textContent")
    document = json.loads(script)
    ids = {node["@id"] for graph in document["@graph"] for node in graph.get("@graph", [graph])}
    assert "person:adam-lent" in ids
    assert document["@context"]["person"] == BASE + "id/person/"
    keep_screenshot(browser, tmp_path, "person-page.png")


def test_fact_page_shows_its_evidence(site: str, browser: Any, tmp_path: Path) -> None:
    browser.get(site + "/id/fact/sasci.funder.esrc")
    evidence = table_text(browser, "fact-evidence")
    assert evidence[0][0] == "funded by the Economic and Social Research Council (ESRC)"
    provenance = table_text(browser, "fact-provenance")
    assert provenance[0][0] == "SASCI Final Event"
    assert provenance[0][1] == "stated"
    source = find(browser, "section#fact-provenance a.iri")
    assert source.get_attribute("href") == site + "/id/source/sasci-final-event"
    outgoing = find(browser, "section#outgoing").text
    assert "Economic and Social Research Council" in outgoing
    keep_screenshot(browser, tmp_path, "fact-page.png")


def test_ontology_and_dataset_pages(site: str, browser: Any) -> None:
    browser.get(site + "/def#Session")
    session = find(browser, "article#Session")
    assert "kgo:Session" in session.text and "rdfs:subClassOf" in session.text
    assert browser.execute_script("return window.scrollY") > 0  # the anchor was followed
    browser.get(site + "/.well-known/void")
    rows = find_all(browser, "#downloads tbody tr")
    assert len(rows) == 12
    assert rows[0].find_element("css selector", "a").get_attribute("href") == \
        site + "/download/sasci-kg.ttl"
