"""The query page in a real headless browser: Debian's chromium, driven by selenium through
the system chromedriver (never a downloaded one). The app runs on a free loopback port."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyoxigraph as ox
import pytest
from browser_support import CHROMIUM, chromium, find, find_all, serve_in_thread, wait_for

from sasci_kg.store import LoadInput, load_store
from sasci_kg.vocab import BASE
from sasci_kg.web import create_app, load_config

pytestmark = pytest.mark.browser


if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

TRIG = f"""
@prefix schema: <https://schema.org/> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
@base <{BASE}> .

<graph/source/test> {{
  <id/person/alice-example> a schema:Person ;
      schema:name "Alice Example"@en ;
      schema:affiliation <id/org/north-uni> .
  <id/person/bob-sample> a schema:Person ;
      schema:name "Bob Sample"@en ;
      schema:affiliation <id/org/care-trust> .
  <id/person/carol-test> a schema:Person ;
      schema:name "Carol Test"@en ;
      schema:affiliation <https://example.org/elsewhere> .
  <id/org/north-uni> a schema:Organization ; schema:name "North University" .
  <id/org/care-trust> a schema:Organization ; schema:name "Care Trust" .
  <id/session/panel> a schema:Event ;
      schema:name "Panel" ;
      schema:performer <id/person/alice-example>, <id/person/bob-sample>,
          <id/person/carol-test> ;
      schema:maximumAttendeeCapacity "40"^^xsd:integer .
}}
"""

WHO_SPOKE = """\
# title: Who spoke on the panel?
# description: Each speaker with their organisation.
SELECT ?person ?name ?org
WHERE {
  ?session schema:performer ?person .
  ?person schema:name ?name ;
          schema:affiliation ?org .
}
ORDER BY ?name
"""


# ---------------------------------------------------------------------------------------
# The app under test: the real one, on a free loopback port


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("browser")
    store_path = root / "store"
    load_store(store_path, [LoadInput(format=ox.RdfFormat.TRIG, data=TRIG.encode())])
    queries_dir = root / "queries"
    queries_dir.mkdir()
    (queries_dir / "who-spoke.rq").write_text(WHO_SPOKE, encoding="utf-8")
    # environ={}: the machine's SASCI_KG_* settings must not leak into the test.
    app = create_app(load_config({"store": store_path, "query_workers": 2}, environ={}))
    app.config["SASCI_KG_QUERIES_DIR"] = queries_dir
    with serve_in_thread(app) as url:
        yield url


# ---------------------------------------------------------------------------------------
# The browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile"), window="1280,1100") as driver:
        yield driver





def result_rows(driver: Any, count: int) -> list[Any]:
    """Wait until the result table has ``count`` rows, and return them."""
    wait_for(driver, lambda d: len(find_all(d, "table.result-table tbody tr")) == count)
    return find_all(driver, "table.result-table tbody tr")


def set_query(driver: Any, text: str) -> None:
    driver.execute_script(
        "const t = document.getElementById('query'); t.value = arguments[0];"
        "t.dispatchEvent(new Event('input', {bubbles: true}));",
        text,
    )


def run_with_keyboard(driver: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    find(driver, "#query").send_keys(Keys.CONTROL, Keys.ENTER)


# ---------------------------------------------------------------------------------------
# Tests


def test_named_query_runs_and_links_iris(site: str, browser: Any, tmp_path: Path) -> None:
    browser.get(site + "/")
    assert browser.title.startswith("SPARQL query")
    example = find(browser, 'a.example[data-name="who-spoke"]')
    assert "Who spoke on the panel?" in example.text
    assert "Each speaker with their organisation." in example.text
    example.click()

    rows = result_rows(browser, 3)
    assert [r.find_elements("css selector", "td")[2].text for r in rows] == [
        "Alice Example@en", "Bob Sample@en", "Carol Test@en"
    ]
    assert find(browser, "#query").get_attribute("value") == WHO_SPOKE
    assert re.match(r"3 rows in \d", find(browser, "#status").text)

    # Our IRIs: shown with the default prefixes, linked to this server's own pages.
    person = rows[0].find_element("css selector", "td:nth-child(2) a.iri")
    assert person.text == "person:alice-example"
    assert person.get_attribute("href") == site + "/id/person/alice-example"
    assert person.get_attribute("title") == BASE + "id/person/alice-example"
    # Anyone else's IRIs: linked where they are.
    elsewhere = rows[2].find_element("css selector", "td:nth-child(4) a.iri")
    assert elsewhere.get_attribute("href") == "https://example.org/elsewhere"
    # Language tags shown apart from the value.
    assert rows[0].find_element("css selector", ".term-meta").text == "@en"

    # Download links follow the query.
    csv_link = find(browser, 'a.download[data-format="csv"]').get_attribute("href")
    assert parse_qs(urlsplit(csv_link).query) == {
        "query": [WHO_SPOKE], "format": ["csv"], "download": ["1"]
    }

    shot = tmp_path / "query-page.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("SASCI_KG_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "query-page.png")


def test_share_link_round_trips_query_and_format(site: str, browser: Any) -> None:
    from selenium.webdriver.support.ui import Select

    browser.get(site + "/")
    find(browser, 'a.example[data-name="who-spoke"]').click()
    result_rows(browser, 3)
    Select(find(browser, "#format")).select_by_value("csv")
    share = find(browser, "#share-url").get_attribute("value")
    assert share.startswith(site + "/?")
    assert parse_qs(urlsplit(share).query) == {"query": [WHO_SPOKE], "format": ["csv"]}

    # Opening the link fills the editor, keeps the format, and runs the query.
    browser.get("about:blank")
    browser.get(share)
    assert find(browser, "#query").get_attribute("value") == WHO_SPOKE
    assert Select(find(browser, "#format")).first_selected_option.get_attribute("value") == "csv"
    text = wait_for(browser, lambda d: find_all(d, "pre.raw-text") and find(d, "pre.raw-text").text)
    assert text.splitlines()[0] == "person,name,org"
    assert "Alice Example" in text

    # Back to the table: the address bar becomes the share link of what ran.
    Select(find(browser, "#format")).select_by_value("")
    run_with_keyboard(browser)
    result_rows(browser, 3)
    assert parse_qs(urlsplit(browser.current_url).query) == {"query": [WHO_SPOKE]}


def test_ask_construct_and_errors(site: str, browser: Any) -> None:
    browser.get(site + "/")

    set_query(browser, "ASK { ?s schema:name \"Care Trust\" }")
    run_with_keyboard(browser)
    verdict = wait_for(browser, lambda d: find_all(d, ".boolean") and find(d, ".boolean"))
    assert verdict.text == "true"

    set_query(browser, "CONSTRUCT { ?p schema:affiliation ?o } WHERE { ?p schema:affiliation ?o }")
    run_with_keyboard(browser)
    turtle = wait_for(browser, lambda d: find_all(d, "pre.rdf-text") and find(d, "pre.rdf-text"))
    assert re.match(r"Graph as Turtle, 3 triples in \d", find(browser, "#status").text)
    assert "schema:affiliation" in turtle.text
    links = {a.get_attribute("href") for a in turtle.find_elements("css selector", "a")}
    assert site + "/id/org/north-uni" in links

    set_query(browser, "SELECT * WHERE {\n  ?s ?p ?o .\n  FILTER( }")
    run_with_keyboard(browser)
    problem = wait_for(browser, lambda d: find_all(d, ".problem") and find(d, ".problem"))
    assert "syntax error" in problem.find_element("css selector", "h3").text.lower()
    assert re.search(r"Line 3, column \d+", problem.text)
    assert find(browser, "#gutter .error-line").text == "3"


def test_editor_keys(site: str, browser: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    browser.get(site + "/")
    editor = find(browser, "#query")
    set_query(browser, "")
    editor.click()
    editor.send_keys("SELECT", Keys.ENTER, Keys.TAB, "?s")
    assert editor.get_attribute("value") == "SELECT\n  ?s"
    assert browser.switch_to.active_element == editor  # Tab indented, focus stayed
    editor.send_keys(Keys.ESCAPE, Keys.TAB)
    assert browser.switch_to.active_element != editor  # Esc, Tab: focus moves on
    lines = [s.text for s in find_all(browser, "#gutter span")]
    assert lines == ["1", "2"]
