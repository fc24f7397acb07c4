"""Every named query parses, runs and has a title; each answers as the article says."""

from __future__ import annotations

from pathlib import Path

import pyoxigraph as ox
import pytest
from project import QUERIES, load_real_store

from sasci_kg.errors import NotFoundError, QueryError
from sasci_kg.queries import NamedQuery, get_query, list_queries, read_query, run_named_query
from sasci_kg.store import OxigraphBackend, open_store

ALL = list_queries(QUERIES)
ID = "https://w3id.org/sasci-kg/id/"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> OxigraphBackend:
    return open_store(load_real_store(tmp_path_factory.mktemp("queries") / "store"))


def rows(backend: OxigraphBackend, name: str, **params: str) -> list[dict[str, str]]:
    result = run_named_query(backend, get_query(name, QUERIES), params)
    assert isinstance(result, ox.QuerySolutions)
    names = [v.value for v in result.variables]
    return [{n: s[n].value for n in names if s[n] is not None} for s in result]  # type: ignore[union-attr]


def column(table: list[dict[str, str]], key: str) -> list[str]:
    return [row[key] for row in table if key in row]


def test_there_are_at_least_fifteen_named_queries() -> None:
    assert len(ALL) >= 15


@pytest.mark.parametrize("query", ALL, ids=[q.name for q in ALL])
def test_named_query_has_header_and_runs(query: NamedQuery, backend: OxigraphBackend) -> None:
    assert query.title and query.description, query.path
    result = run_named_query(backend, query)
    assert isinstance(result, ox.QuerySolutions)
    assert len(list(result)) > 0, f"{query.name} gives no answer on the real graph"


def test_funder(backend: OxigraphBackend) -> None:
    table = rows(backend, "funders")
    assert column(table, "funderName") == ["Economic and Social Research Council"]
    assert "funded by the Economic and Social Research Council (ESRC)" in table[0]["evidence"]


def test_partners_and_roles(backend: OxigraphBackend) -> None:
    table = rows(backend, "partners")
    found = {(r["memberName"], r["role"], r["certainty"].rsplit("/", 1)[1]) for r in table}
    assert ("Care Policy and Evaluation Centre", "lead partner", "implied") in found
    assert ("King\u2019s College London", "partner", "stated") in found
    assert ("University of York", "partner", "stated") in found
    assert ("Juliette Malley", "project lead", "stated") in found
    assert not any(r["memberName"] in ("Research in Practice", "Social Finance") for r in table)


def test_cohosts_are_not_partners(backend: OxigraphBackend) -> None:
    table = {r["name"]: (r["cohost"], r["partner"]) for r in rows(backend, "cohosts-vs-partners")}
    assert table["Research in Practice"] == ("true", "false")
    assert table["Social Finance"] == ("true", "false")
    assert table["University of York"] == ("false", "true")


def test_sessions_of_the_event(backend: OxigraphBackend) -> None:
    table = rows(backend, "sessions")
    assert len(table) == 8
    types = sorted(r["type"] for r in table)
    assert types == ["breakout"] * 4 + ["closing"] + ["panel"] * 2 + ["plenary"]
    assert {"Perspectives on Innovation in Adult Social Care", "Shape or Be Shaped"} <= set(
        column(table, "title"))


def test_session_roles_for_one_session(backend: OxigraphBackend) -> None:
    table = rows(backend, "session-roles",
                 session=f"{ID}session/sasci-final-2024.opening-panel")
    found = {(r["name"], r["role"], r.get("organisationName")) for r in table}
    assert found == {
        ("Lisa Smith", "chair", "Research in Practice"),
        ("Malte Gerhold", "panellist", "Health Foundation"),
        ("Adam Lent", "panellist", "King\u2019s Fund"),
        ("Jennifer Pearl", "panellist", "Think Local Act Personal"),
    }


def test_organisations_sharing_a_session(backend: OxigraphBackend) -> None:
    pairs = {(r["nameA"], r["nameB"], r["sessionLabel"]) for r in rows(backend, "shared-sessions")}
    assert any(a == "Equal Care Co-op" and b == "Thurrock Council" for a, b, _ in pairs)
    assert any({a, b} == {"King\u2019s College London", "WCS Care"} for a, b, _ in pairs)


def test_who_said_what(backend: OxigraphBackend) -> None:
    table = rows(backend, "quotes")
    speakers = sorted(column(table, "speakerName"))
    assert speakers == ["Adam Lent", "Jenny Pitts", "Juliette Malley", "Karen Spilsbury"]
    pitts = next(r for r in table if r["speakerName"] == "Jenny Pitts")
    assert pitts["text"].startswith("Just be prepared to jump in the river.")
    assert pitts["session"].endswith("second-panel")
    spilsbury = next(r for r in table if r["speakerName"] == "Karen Spilsbury")
    # the article only implies the breakout she spoke in; the link says so
    assert spilsbury["session"].endswith("research-breakout")
    assert spilsbury["sessionCertainty"].endswith("/implied")
    assert pitts["sessionCertainty"].endswith("/stated")
    only = rows(backend, "quotes", speaker=f"{ID}person/juliette-malley")
    assert column(only, "text") == ["Being led by delivering savings can be self-defeating"]


def test_ideas_by_session(backend: OxigraphBackend) -> None:
    table = rows(backend, "ideas-by-session")
    plenary = {r["ideaLabel"] for r in table if r["session"].endswith(".plenary")}
    assert "Innovation as a river" in plenary
    research = {r["ideaLabel"] for r in table if r["session"].endswith("research-breakout")}
    assert "Knowledge exchange" in research


def test_ideas_raised_by_people(backend: OxigraphBackend) -> None:
    table = rows(backend, "ideas-raised-by", person=f"{ID}person/david-behan")
    assert {"Human behaviour", "Personalisation"} <= set(column(table, "ideaLabel"))


def test_river_metaphor(backend: OxigraphBackend) -> None:
    table = {r["elementLabel"]: r for r in rows(backend, "river-metaphor")}
    assert set(table) == {"Rocks", "Headwinds", "Thunderstorms"}
    assert table["Rocks"]["standsForLabel"] == "Barriers"


def test_implied_facts_are_listed(backend: OxigraphBackend) -> None:
    facts = column(rows(backend, "implied-facts"), "fact")
    assert f"{ID}fact/recorded-at.karen-spilsbury.not-everything-needs-research" in facts
    assert all(f.startswith(f"{ID}fact/") for f in facts)


def test_fact_provenance(backend: OxigraphBackend) -> None:
    table = rows(backend, "fact-provenance")
    assert table[0]["sourceTitle"] == "SASCI Final Event"
    assert table[0]["certainty"].endswith("/stated")


def test_affiliations_and_people_without(backend: OxigraphBackend) -> None:
    table = {r["name"]: r["organisationName"] for r in rows(backend, "affiliations")}
    assert table["Karen Spilsbury"] == "University of Leeds"
    assert table["Jenny Pitts"] == "National Development Team for Inclusion"
    assert column(rows(backend, "people-without-affiliation"), "name") == [
        "Ann-Marie Towers", "David Behan"]


def test_organisations_and_their_sessions(backend: OxigraphBackend) -> None:
    table = {r["name"]: r for r in rows(backend, "organisation-sessions")}
    assert table["Thurrock Council"]["sessions"] == 'Breakout "Shape or Be Shaped"'
    assert sorted(table["Thurrock Council"]["people"].split(", ")) == [
        "Ceri Armstrong", "Ian Wake", "Les Billingham"]


def test_structure_people_and_reach(backend: OxigraphBackend) -> None:
    structure = rows(backend, "organisation-structure")
    assert [(r["unitName"], r["parentName"]) for r in structure] == [
        ("Care Policy and Evaluation Centre", "London School of Economics and Political Science")]
    profile = rows(backend, "person-profile")
    assert {r["role"] for r in profile} == {"presenter", "organiser"}
    assert column(rows(backend, "multi-session-people"), "name") == ["Juliette Malley"]
    reach = set(column(rows(backend, "event-organisations-beyond-partners"), "name"))
    assert "Equal Care Co-op" in reach and "University of York" not in reach
    graphs = column(rows(backend, "graphs"), "graph")
    assert "https://w3id.org/sasci-kg/graph/source/sasci-final-event" in graphs


def test_parameters_are_checked(backend: OxigraphBackend, tmp_path: Path) -> None:
    query = get_query("quotes", QUERIES)
    with pytest.raises(QueryError, match="has no parameter 'who'"):
        run_named_query(backend, query, {"who": "x"})
    with pytest.raises(QueryError, match="is not an absolute IRI"):
        run_named_query(backend, query, {"speaker": "not an iri> } DROP ALL"})
    with pytest.raises(NotFoundError, match="no named query 'nope'"):
        get_query("nope", QUERIES)
    bad = tmp_path / "bad.rq"
    bad.write_text("SELECT * WHERE { ?s ?p ?o }\n")
    with pytest.raises(QueryError, match=r"bad.rq:1: the query has no '# title: …' header"):
        read_query(bad)
