"""The funders' pages in a real headless browser (Debian's chromium through the system
chromedriver): trace two organisations and see the path marked in the picture, the
funders' table and picture, a click on a node opening its page, the pickers fed by
search, pan and zoom, and no content-security-policy violation anywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from browser_support import CHROMIUM, chromium, find, find_all, serve_in_thread, wait_for
from project import QUERIES, load_real_store

from sasci_kg.web import create_app, load_config

pytestmark = pytest.mark.browser

SHAPE = "session/sasci-final-2024.shape-or-be-shaped"

if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )


def node_id(ref: str) -> str:
    return "n-" + "".join(c if c.isalnum() or c in "_.-" else "-" for c in ref)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = load_real_store(tmp_path_factory.mktemp("funders-browser") / "store")
    app = create_app(load_config({"store": store, "query_workers": 2}, environ={}))
    app.config["SASCI_KG_QUERIES_DIR"] = QUERIES
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile"), window="1280,1100") as driver:
        yield driver





def marked(driver: Any) -> set[str]:
    return {n.get_attribute("id") for n in find_all(driver, "figure.network g.node.hl")}


def no_csp_violations(driver: Any) -> None:
    messages = [e["message"] for e in driver.get_log("browser")]
    assert not [m for m in messages if "Content Security Policy" in m
                or "Refused to" in m], messages


def test_trace_two_organisations_and_see_the_path_marked(site: str, browser: Any) -> None:
    browser.get(site + "/trace")
    find(browser, "#f-from").send_keys("Equal Care Co-op")
    find(browser, "#f-to").send_keys("Thurrock Council")
    find(browser, "form.trace-form button[type=submit]").click()
    wait_for(browser, lambda d: find_all(d, "figure.network g.node.hl"))
    assert marked(browser) == {node_id("org/equal-care-co-op"), node_id(SHAPE),
                               node_id("org/thurrock-council")}
    lines = find_all(browser, "figure.network line.edge.hl")
    assert len(lines) == 2
    # Marked in the picture's colour for the path, the rest dimmed.
    assert lines[0].value_of_css_property("stroke") == "rgb(192, 57, 43)"
    assert find_all(browser, "figure.network g.node.dim")
    sentence = find(browser, ".path .sentence").text
    assert sentence.startswith("Emma Back spoke for Equal Care Co-op in the breakout")
    # Another connection found can be marked too.
    buttons = find_all(browser, ".path .show-path")
    assert len(buttons) == 3
    nodes = json.loads(find_all(browser, ".path")[1].get_attribute("data-nodes"))
    buttons[1].click()
    assert marked(browser) == {node_id(ref) for ref in nodes}
    no_csp_violations(browser)


def test_a_name_that_matches_two_offers_both(site: str, browser: Any) -> None:
    browser.get(site + "/trace?from=Kings&to=Thurrock+Council")
    picks = find_all(browser, ".problem .suggestions a.pick")
    assert {p.text for p in picks} == {"King’s Fund", "King’s College London"}
    next(p for p in picks if p.text == "King’s College London").click()
    wait_for(browser, lambda d: find_all(d, "figure.network g.node.hl"))
    assert node_id("org/kings-college-london") in marked(browser)


def test_the_funders_page_shows_the_table_and_the_picture(site: str, browser: Any) -> None:
    browser.get(site + "/funders")
    rows = find_all(browser, "table#organisations tbody tr")
    assert len(rows) >= 14
    names = {a.text for a in find_all(browser, "table#organisations tbody th a")}
    assert {"Equal Care Co-op", "Thurrock Council", "WCS Care",
            "King’s College London"} <= names
    assert "Economic and Social Research Council" in find(browser, "table.funding").text
    picture = find(browser, "figure.network svg")
    assert picture.is_displayed() and picture.size["height"] > 300
    assert len(find_all(browser, "figure.network g.node")) >= 40
    no_csp_violations(browser)


def test_clicking_a_node_opens_its_page(site: str, browser: Any) -> None:
    browser.get(site + "/funders")
    node = find(browser, f"g#{node_id('org/thurrock-council')} circle")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", node)
    node.click()
    wait_for(browser, lambda d: d.current_url.endswith("/id/org/thurrock-council"))
    assert "Thurrock Council" in browser.title


def test_pan_and_zoom_change_the_view(site: str, browser: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get(site + "/network")
    svg = find(browser, "figure.network svg")

    def view_box() -> str:
        return str(browser.execute_script("return arguments[0].getAttribute('viewBox')", svg))

    home = view_box()
    find(browser, "[data-zoom=in]").click()
    zoomed = view_box()
    assert float(zoomed.split()[2]) < float(home.split()[2])
    view = find(browser, ".network-view")
    ActionChains(browser).move_to_element_with_offset(view, 10, 10).click_and_hold() \
        .move_by_offset(120, 60).release().perform()
    panned = view_box()
    assert panned.split()[2:] == zoomed.split()[2:] and panned.split()[:2] != zoomed.split()[:2]
    assert browser.current_url == site + "/network"  # a drag is not a click
    find(browser, "[data-zoom=reset]").click()
    assert [float(x) for x in view_box().split()] == [float(x) for x in home.split()]


def test_the_network_page_marks_a_connection_in_place(site: str, browser: Any) -> None:
    browser.get(site + "/network")
    find(browser, "#f-from").send_keys("KCL")
    find(browser, "#f-to").send_keys("WCS Care")
    find(browser, "#highlight-form button[type=submit]").click()
    wait_for(browser, lambda d: find_all(d, "figure.network g.node.hl"))
    assert {node_id("org/kings-college-london"), node_id("org/wcs-care")} <= marked(browser)
    status = find(browser, "#highlight-status").text
    assert status.startswith("King’s College London → WCS Care")
    assert "from=KCL" in browser.current_url
    no_csp_violations(browser)


def test_the_picker_suggests_from_search(site: str, browser: Any) -> None:
    browser.get(site + "/trace")
    find(browser, "#f-from").send_keys("Thurr")
    wait_for(browser, lambda d: find_all(d, "#f-from-options option"))
    option = find_all(browser, "#f-from-options option")[0]
    assert option.get_attribute("value") == "org/thurrock-council"
    assert option.get_attribute("label") == "Thurrock Council (organisation)"
