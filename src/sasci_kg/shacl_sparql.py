"""SHACL validation by SPARQL: the shapes graph, translated into queries that Oxigraph runs.

pySHACL walks every focus node in Python over an rdflib graph: 42 s at 3·10⁴ triples, and
more than 20 minutes at 10⁶. This module reads the shapes graph (``ontology/shapes.ttl``)
and turns it into SPARQL SELECT queries — per property shape one for its value constraints
and one per ``sh:class``, ``sh:minCount``, ``sh:maxCount``, ``sh:hasValue``, ``sh:equals``
and qualified count; one per SPARQL-based constraint — that find the violations over the
whole dataset at once, in the store's own engine (0.3 s at 3·10⁴, 12 s at 10⁶ in memory,
354 s at 10⁷ on disk). Adding a shape needs no code: the queries come from the
shapes. ``validate_store(..., timings=[])`` profiles every query.

Shaped for Oxigraph 0.5's planner, each measured at 10⁷: ``sh:class`` is a MINUS over the
class's instances (an EXISTS per value was 3× slower); a "missing" check is a FILTER NOT
EXISTS around one triple pattern with ``?this`` bound (never around joins); the focus
nodes of a shape with several targets are a DISTINCT sub-select joined at the head of each
query, not a UNION with the joins after it.

What is translated (SHACL Core as the shapes use it, plus SHACL-SPARQL constraints):

- targets: ``sh:targetClass`` (with the subclasses that ``rdfs:subClassOf`` gives in the
  data, as pySHACL does), ``sh:targetNode``, ``sh:targetSubjectsOf``, ``sh:targetObjectsOf``,
  and shapes that are classes themselves (implicit class targets);
- paths: IRIs, ``sh:inversePath``, sequences, ``sh:alternativePath``, ``sh:zeroOrMorePath``,
  ``sh:oneOrMorePath``, ``sh:zeroOrOnePath``;
- value constraints: ``sh:class``, ``sh:datatype`` (ill-typed literals of the XSD types
  Oxigraph can cast fail too), ``sh:nodeKind``, ``sh:pattern`` (+ ``sh:flags``),
  ``sh:languageIn``, ``sh:in``, ``sh:minLength``, ``sh:hasValue``, ``sh:node``, ``sh:not``,
  ``sh:or``, nested to any depth (a nested property shape may use ``sh:minCount``/``sh:maxCount``
  of 0 or 1, ``sh:hasValue`` and value constraints);
- ``sh:minCount``, ``sh:maxCount``, ``sh:equals``, ``sh:qualifiedValueShape`` with
  ``sh:qualifiedMinCount``/``sh:qualifiedMaxCount``;
- ``sh:sparql`` SELECT constraints on node shapes: ``$this`` is pre-bound — with up to
  PER_FOCUS_LIMIT focus nodes, by running the query once per node with ``$this`` written as
  its IRI; with more, by putting the focus nodes at the head of the WHERE group (every
  filter of the group then sees ``$this`` bound); prefixes come from
  ``sh:prefixes``/``sh:declare``, and ``{?var}``/``{$var}`` in the message are filled in as
  pySHACL fills them;
- ``sh:message``, ``sh:severity``, ``sh:deactivated``; non-validating properties (``sh:name``,
  ``sh:description``, ``sh:order``, ``sh:group``, ``sh:defaultValue``) are ignored.

Anything else in the ``sh:`` namespace on a shape (``sh:closed``, ``sh:xone``, ``sh:lessThan``,
``sh:sparql`` on a property shape, …) raises :class:`ShaclError` naming the construct and
the shape: a shape is never skipped in silence.

The data are the union of the store's graphs (``use_default_graph_as_union``): each triple
lives in exactly one graph (build.py keeps it so), so the union counts no triple twice;
counts use ``COUNT(DISTINCT …)`` all the same. (A loaded store also holds the VoID graph,
…/graph/meta; pass ``default_graph=[…]`` to ``validate_store`` to leave it out.)
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyoxigraph as ox

from .errors import ShaclError

SH = "http://www.w3.org/ns/shacl#"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RDFS = "http://www.w3.org/2000/01/rdf-schema#"
XSD = "http://www.w3.org/2001/XMLSchema#"
OWL = "http://www.w3.org/2002/07/owl#"

RDF_TYPE = ox.NamedNode(RDF + "type")
RDF_FIRST = ox.NamedNode(RDF + "first")
RDF_REST = ox.NamedNode(RDF + "rest")
RDF_NIL = ox.NamedNode(RDF + "nil")
TRUE = ox.Literal("true", datatype=ox.NamedNode(XSD + "boolean"))

# Beyond this many quads validate_quads puts them in a temporary store on disk: an in-memory
# store takes about 600 MiB per 10⁶ quads, on top of the build's own list of quads.
IN_MEMORY_QUADS = 2_000_000

# A SPARQL constraint whose shape has at most this many focus nodes runs once per focus
# node, with $this written as the node's IRI: Oxigraph plans a join on a constant far
# better than on a variable (the duplicate-label check of ConceptSchemeShape: 17 s at 10⁷
# with $this bound by a pattern or by substitution, 0.03 s with the scheme's IRI).
PER_FOCUS_LIMIT = 32

Term = ox.NamedNode | ox.BlankNode | ox.Literal

# XSD datatypes whose lexical form Oxigraph checks when casting: a literal of one of these
# types that does not cast is ill-typed, and sh:datatype fails on it (as in pySHACL).
CASTABLE = frozenset(XSD + name for name in (
    "string", "boolean", "float", "double", "decimal", "integer", "dateTime", "date", "time",
    "duration", "yearMonthDuration", "dayTimeDuration"))

NODE_KINDS = {
    "IRI": "isIRI({v})",
    "Literal": "isLiteral({v})",
    "BlankNode": "isBlank({v})",
    "IRIOrLiteral": "(isIRI({v}) || isLiteral({v}))",
    "BlankNodeOrIRI": "(isBlank({v}) || isIRI({v}))",
    "BlankNodeOrLiteral": "(isBlank({v}) || isLiteral({v}))",
}

TARGETS = ("targetClass", "targetNode", "targetSubjectsOf", "targetObjectsOf")
# Constraints on the value nodes, one by one: translated into a boolean SPARQL expression.
VALUE_PARAMS = ("class", "datatype", "nodeKind", "pattern", "languageIn", "in", "minLength",
                "node", "not", "or")
# Properties of a shape that do not validate anything (or are read with another one).
IGNORED = ("message", "severity", "deactivated", "name", "description", "order", "group",
           "defaultValue", "flags", "path", "property")
NODE_SHAPE_PARAMS = frozenset((*TARGETS, *VALUE_PARAMS, *IGNORED, "hasValue", "sparql"))
PROPERTY_SHAPE_PARAMS = frozenset((*NODE_SHAPE_PARAMS, "minCount", "maxCount", "equals",
                                   "qualifiedValueShape", "qualifiedMinCount",
                                   "qualifiedMaxCount", "qualifiedValueShapesDisjoint"))
SPARQL_CONSTRAINT_PARAMS = frozenset(("select", "message", "prefixes", "deactivated"))

COMPONENT_NAMES = {
    "class": "ClassConstraintComponent", "datatype": "DatatypeConstraintComponent",
    "nodeKind": "NodeKindConstraintComponent", "pattern": "PatternConstraintComponent",
    "languageIn": "LanguageInConstraintComponent", "in": "InConstraintComponent",
    "minLength": "MinLengthConstraintComponent", "node": "NodeConstraintComponent",
    "not": "NotConstraintComponent", "or": "OrConstraintComponent",
    "hasValue": "HasValueConstraintComponent", "minCount": "MinCountConstraintComponent",
    "maxCount": "MaxCountConstraintComponent", "equals": "EqualsConstraintComponent",
    "qualifiedMinCount": "QualifiedMinCountConstraintComponent",
    "qualifiedMaxCount": "QualifiedMaxCountConstraintComponent",
    "sparql": "SPARQLConstraintComponent",
}


class UntranslatableShape(ShaclError):
    """The shapes use a construct this translator does not know (pySHACL may)."""


@dataclass(frozen=True)
class ShaclResult:
    """One SHACL result: severity, focus node, path, message (and the value node, if any)."""

    severity: str
    focus: str
    path: str
    message: str
    value: str = ""

    def __str__(self) -> str:
        where = f" {self.path}" if self.path else ""
        return f"{self.severity}: <{self.focus}>{where}: {self.message}"


@dataclass(frozen=True)
class Finding:
    """One failure a check's row reports: which constraint, and the message to give."""

    component: str
    message: str


@dataclass
class Check:
    """One SPARQL query that finds the failures of one or more constraints of one shape.

    Each row binds ``?this`` (the focus node) and, where there is one, ``?value``; a check
    of several constraints binds ``?f0``, ``?f1``, … true for each constraint the row fails.
    """

    shape: str  # where the constraints are, for messages and profiles
    severity: str
    path: str  # the result path in SPARQL syntax ("" for a node shape)
    query: str
    findings: list[Finding]  # in the order of ?f0, ?f1, …
    value_is_focus: bool = False  # node-level constraints: the value node is the focus node
    sparql: bool = False  # a SHACL-SPARQL constraint: ?path/?value and message variables
    select: str = ""  # a SPARQL constraint's own query (prefixed), run once per focus node
    focus_query: str = ""  # … when this query finds at most PER_FOCUS_LIMIT focus nodes

    @property
    def components(self) -> str:
        return "+".join(f.component for f in self.findings)


@dataclass(frozen=True)
class Timing:
    """How long one check took, and how many rows (failures) it gave."""

    check: Check
    seconds: float
    rows: int


# --- the shapes graph -------------------------------------------------------------------


class ShapesGraph:
    """The shapes graph, indexed by subject, with the few look-ups the translator needs."""

    def __init__(self, triples: Iterable[ox.Triple], *, source: str = "the shapes graph"):
        self.source = source
        self._out: dict[Term, dict[str, list[Term]]] = {}
        self._in: dict[str, list[Term]] = {}
        for t in triples:
            if isinstance(t.object, ox.Triple) or isinstance(t.subject, ox.Triple):
                raise ShaclError(f"{source}: triple terms are not SHACL; remove {t}")
            self._out.setdefault(t.subject, {}).setdefault(t.predicate.value, []).append(
                t.object)
            self._in.setdefault(t.predicate.value, []).append(t.subject)

    @classmethod
    def from_file(cls, path: Path) -> ShapesGraph:
        if not path.exists():
            raise ShaclError(f"{path}: the SHACL shapes are missing; restore them or build "
                             "with --shacl=off")
        try:
            triples = list(ox.parse(path=str(path), format=ox.RdfFormat.TURTLE))
        except SyntaxError as exc:
            raise ShaclError(f"{path}: not valid Turtle: {exc}") from exc
        return cls(triples, source=str(path))

    def objects(self, node: Term, predicate: str) -> list[Term]:
        return list(self._out.get(node, {}).get(predicate, []))

    def one(self, node: Term, predicate: str) -> Term | None:
        values = self.objects(node, predicate)
        if len(values) > 1:
            raise self.error(node, f"has {len(values)} values of <{predicate}>, SHACL allows "
                             "one")
        return values[0] if values else None

    def subjects(self, predicate: str) -> list[Term]:
        return list(dict.fromkeys(self._in.get(predicate, [])))

    def predicates(self, node: Term) -> list[str]:
        return list(self._out.get(node, {}))

    def items(self, node: Term) -> list[Term]:
        """The members of an RDF list."""
        members: list[Term] = []
        seen: set[Term] = set()
        while node != RDF_NIL:
            if node in seen:
                raise self.error(node, "is a cyclic RDF list")
            seen.add(node)
            first = self.one(node, RDF + "first")
            rest = self.one(node, RDF + "rest")
            if first is None or rest is None:
                raise self.error(node, "is not a well-formed RDF list (rdf:first/rdf:rest)")
            members.append(first)
            node = rest
        return members

    def name(self, node: Term) -> str:
        """A shape's name for messages: its IRI, or its path / parent for a blank node."""
        if isinstance(node, ox.NamedNode):
            return f"<{node.value}>"
        path = self.objects(node, SH + "path")
        inside = f"sh:path {self.path(path[0])}" if len(path) == 1 else ""
        for predicate in ("property", "node", "not", "qualifiedValueShape"):
            for parent in self.subjects(SH + predicate):
                if node in self.objects(parent, SH + predicate) and parent != node:
                    return f"{self.name(parent)} sh:{predicate} [{inside}]"
        return f"[{inside}]" if inside else "a blank shape"

    def error(self, node: Term, what: str) -> ShaclError:
        return ShaclError(f"{self.source}: {self.name(node)} {what}")

    def unsupported(self, node: Term, construct: str, where: str = "") -> UntranslatableShape:
        return UntranslatableShape(
            f"{self.source}: {self.name(node)} uses {construct}{where}, which the SPARQL "
            "validator (sasci_kg/shacl_sparql.py) does not translate; validate with "
            "--shacl=pyshacl, or teach the translator the construct")

    def path(self, node: Term) -> str:
        """A SHACL property path in SPARQL syntax."""
        if isinstance(node, ox.NamedNode):
            return f"<{node.value}>"
        if isinstance(node, ox.Literal):
            raise self.error(node, "is a literal where a property path must be")
        if self.objects(node, RDF + "first"):
            members = self.items(node)
            if len(members) < 2:
                raise ShaclError(f"{self.source}: a sequence path needs two members or more")
            return "(" + "/".join(self.path(m) for m in members) + ")"
        kinds = {"inversePath": "^{}", "zeroOrMorePath": "{}*", "oneOrMorePath": "{}+",
                 "zeroOrOnePath": "{}?"}
        for kind, form in kinds.items():
            inner = self.one(node, SH + kind)
            if inner is not None:
                text = self.path(inner)
                return "(" + form.format(text) + ")" if kind != "inversePath" else \
                    form.format(text)
        alternatives = self.one(node, SH + "alternativePath")
        if alternatives is not None:
            return "(" + "|".join(self.path(m) for m in self.items(alternatives)) + ")"
        raise ShaclError(f"{self.source}: a blank node with {self.predicates(node)} is not a "
                         "SHACL property path the SPARQL validator knows")


# --- SPARQL text ------------------------------------------------------------------------


def sparql_string(text: str) -> str:
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def sparql_term(shapes: ShapesGraph, node: Term, owner: Term) -> str:
    if isinstance(node, ox.BlankNode):
        raise shapes.error(owner, "uses a blank node as a value; the SPARQL validator can "
                           "only compare IRIs and literals")
    return str(node)  # N-Triples form: also SPARQL


def missing_query(focus: str, pattern: str) -> str:
    """The focus nodes for which ``pattern`` (with ?this bound) has no match."""
    return f"SELECT DISTINCT ?this WHERE {{ {focus} FILTER NOT EXISTS {{ {pattern} }} }}"


def count_query(focus: str, values: str, test: str, *, optional: bool) -> str:
    """The focus nodes whose number of distinct ``?value`` matching ``values`` fails
    ``test`` (e.g. "> 1"); ``optional`` keeps the focus nodes with none."""
    body = f"OPTIONAL {{ {values} }}" if optional else values
    return (f"SELECT ?this WHERE {{ {focus} {body} }} "
            f"GROUP BY ?this HAVING (COUNT(DISTINCT ?value) {test})")


def _int(shapes: ShapesGraph, owner: Term, param: str, value: Term) -> int:
    if not isinstance(value, ox.Literal) or not re.fullmatch(r"[0-9]+", value.value):
        raise shapes.error(owner, f"has sh:{param} {value}, which is not a non-negative "
                           "integer")
    return int(value.value)


def _sh(name: str) -> str:
    return SH + name


# --- the translator ---------------------------------------------------------------------


class Translator:
    """Shapes → checks. ``subclasses(C)`` gives C and its subclasses in the data."""

    def __init__(self, shapes: ShapesGraph, subclasses: Callable[[str], list[str]]):
        self.shapes = shapes
        self.subclasses = subclasses
        self._fresh = 0
        self._stack: list[Term] = []

    def var(self) -> str:
        self._fresh += 1
        return f"?v{self._fresh}"

    # -- which shapes, and their focus nodes

    def shape_nodes(self) -> list[Term]:
        """Every shape that has targets, in a stable order."""
        found: dict[Term, None] = {}
        for target in (*TARGETS, "target"):  # sh:target: refused by check_params
            for node in self.shapes.subjects(_sh(target)):
                found[node] = None
        for node in self.shapes.subjects(RDF + "type"):
            types = {t.value for t in self.shapes.objects(node, RDF + "type")
                     if isinstance(t, ox.NamedNode)}
            is_shape = types & {_sh("NodeShape"), _sh("PropertyShape")}
            if is_shape and types & {RDFS + "Class", OWL + "Class"}:
                found[node] = None
        return sorted(found, key=str)

    def focus_pattern(self, shape: Term) -> str:
        """A group pattern binding ?this to each focus node of ``shape`` once."""
        s = self.shapes
        branches: list[str] = []
        unique = True  # a single branch that gives each focus node once
        classes = [c for c in s.objects(shape, _sh("targetClass"))]
        types = {t.value for t in s.objects(shape, RDF + "type") if isinstance(t, ox.NamedNode)}
        if types & {RDFS + "Class", OWL + "Class"}:
            classes.append(shape)
        for cls in classes:
            if not isinstance(cls, ox.NamedNode):
                raise s.error(shape, "has a sh:targetClass that is not an IRI")
            for sub in self.subclasses(cls.value):
                branches.append(f"?this a <{sub}> .")
        nodes = [sparql_term(s, n, shape) for n in s.objects(shape, _sh("targetNode"))]
        if nodes:
            branches.append("VALUES ?this { " + " ".join(nodes) + " }")
        for p in s.objects(shape, _sh("targetSubjectsOf")):
            branches.append(f"?this {sparql_term(s, p, shape)} [] .")
            unique = False
        for p in s.objects(shape, _sh("targetObjectsOf")):
            branches.append(f"[] {sparql_term(s, p, shape)} ?this .")
            unique = False
        if len(branches) == 1 and unique:
            return branches[0]
        union = " UNION ".join("{ " + b + " }" for b in branches)
        return "{ SELECT DISTINCT ?this WHERE { " + union + " } }"

    # -- the checks of one targeted shape

    def checks(self) -> list[Check]:
        out: list[Check] = []
        for shape in self.shape_nodes():
            if self.deactivated(shape):
                continue
            is_property = self.shapes.one(shape, _sh("path")) is not None
            self.check_params(shape, PROPERTY_SHAPE_PARAMS if is_property else
                              NODE_SHAPE_PARAMS, "property shape" if is_property else
                              "node shape")
            focus = self.focus_pattern(shape)
            if is_property:
                out.extend(self.property_checks(shape, focus))
            else:
                out.extend(self.node_checks(shape, focus))
        return out

    def deactivated(self, node: Term) -> bool:
        value = self.shapes.one(node, _sh("deactivated"))
        return isinstance(value, ox.Literal) and value.value in ("true", "1")

    def severity(self, node: Term) -> str:
        value = self.shapes.one(node, _sh("severity"))
        if value is None:
            return "Violation"
        if not isinstance(value, ox.NamedNode):
            raise self.shapes.error(node, "has a sh:severity that is not an IRI")
        return value.value.removeprefix(SH)

    def message(self, node: Term) -> str | None:
        messages = [m for m in self.shapes.objects(node, _sh("message"))
                    if isinstance(m, ox.Literal)]
        if not messages:
            return None
        # English (or untagged) first, then as written.
        messages.sort(key=lambda m: (m.language not in (None, "en"), m.value))
        return messages[0].value

    def check_params(self, node: Term, allowed: frozenset[str], kind: str) -> None:
        for predicate in self.shapes.predicates(node):
            if predicate.startswith(SH) and predicate.removeprefix(SH) not in allowed:
                raise self.shapes.unsupported(node, f"sh:{predicate.removeprefix(SH)}",
                                              f" in a {kind}")

    def node_checks(self, shape: Term, focus: str) -> Iterator[Check]:
        s = self.shapes
        self.check_params(shape, NODE_SHAPE_PARAMS, "node shape")
        name = s.name(shape)
        severity = self.severity(shape)
        message = self.message(shape)
        yield from self.class_checks(shape, name, severity, "", focus, "", message)
        conditions = list(self.value_conditions(shape, "?this", skip=("class",)))
        has_value = s.objects(shape, _sh("hasValue"))
        for value in has_value:
            conditions.append(("hasValue", f"sameTerm(?this, {sparql_term(s, value, shape)})",
                               f"the node is not {value}"))
        if conditions:
            yield self.value_check(name, severity, "", focus, "", conditions, message,
                                   value_is_focus=True)
        for prop in s.objects(shape, _sh("property")):
            if not self.deactivated(prop):
                yield from self.property_checks(prop, focus)
        for constraint in s.objects(shape, _sh("sparql")):
            if not self.deactivated(constraint):
                yield self.sparql_check(shape, constraint, focus, severity, message)

    def property_checks(self, prop: Term, focus: str) -> Iterator[Check]:
        s = self.shapes
        self.check_params(prop, PROPERTY_SHAPE_PARAMS, "property shape")
        path_node = s.one(prop, _sh("path"))
        if path_node is None:
            raise s.error(prop, "is a property shape without sh:path")
        path = s.path(path_node)
        name = s.name(prop)
        severity = self.severity(prop)
        message = self.message(prop)
        if s.objects(prop, _sh("sparql")):
            raise s.unsupported(prop, "sh:sparql", " in a property shape")

        # Value constraints: one pass over (focus, value) pairs.
        yield from self.class_checks(prop, name, severity, path, focus,
                                     f"?this {path} ?value .", message)
        conditions = list(self.value_conditions(prop, "?value", skip=("class",)))
        if conditions:
            yield self.value_check(name, severity, path, focus, f"?this {path} ?value .",
                                   conditions, message)

        # Counts.
        min_count = s.one(prop, _sh("minCount"))
        max_count = s.one(prop, _sh("maxCount"))
        low = _int(s, prop, "minCount", min_count) if min_count is not None else 0
        high = _int(s, prop, "maxCount", max_count) if max_count is not None else None
        if low > 0:
            query = missing_query(focus, f"?this {path} ?value") if low == 1 else \
                count_query(focus, f"?this {path} ?value .", f"< {low}", optional=True)
            yield Check(name, severity, path, query,
                        [Finding("minCount", message or f"Less than {low} values on {path}")])
        if high is not None:
            query = count_query(focus, f"?this {path} ?value .", f"> {high}", optional=False)
            yield Check(name, severity, path, query,
                        [Finding("maxCount", message or f"More than {high} values on {path}")])

        for value in s.objects(prop, _sh("hasValue")):
            term = sparql_term(s, value, prop)
            query = missing_query(focus, f"?this {path} {term}")
            yield Check(name, severity, path, query,
                        [Finding("hasValue", message or f"Missing value {value} on {path}")])

        for other in s.objects(prop, _sh("equals")):
            term = sparql_term(s, other, prop)
            query = (f"SELECT DISTINCT ?this ?value WHERE {{ "
                     f"{{ {focus} ?this {path} ?value . "
                     f"FILTER NOT EXISTS {{ ?this {term} ?value }} }} UNION "
                     f"{{ {focus} ?this {term} ?value . "
                     f"FILTER NOT EXISTS {{ ?this {path} ?value }} }} }}")
            yield Check(name, severity, path, query,
                        [Finding("equals", message or f"Values of {path} differ from "
                                                      f"those of {term}")])

        qualified = s.one(prop, _sh("qualifiedValueShape"))
        if qualified is not None:
            yield from self.qualified_checks(prop, qualified, name, severity, path, focus,
                                             message)
        elif s.objects(prop, _sh("qualifiedMinCount")) or \
                s.objects(prop, _sh("qualifiedMaxCount")):
            raise s.error(prop, "has sh:qualifiedMinCount/MaxCount without "
                          "sh:qualifiedValueShape")

    def qualified_checks(self, prop: Term, qualified: Term, name: str, severity: str,
                         path: str, focus: str, message: str | None) -> Iterator[Check]:
        s = self.shapes
        disjoint = s.one(prop, _sh("qualifiedValueShapesDisjoint"))
        if isinstance(disjoint, ox.Literal) and disjoint.value in ("true", "1"):
            raise s.unsupported(prop, "sh:qualifiedValueShapesDisjoint true")
        values = f"?this {path} ?value . FILTER ({self.conforms(qualified, '?value')})"
        min_q = s.one(prop, _sh("qualifiedMinCount"))
        max_q = s.one(prop, _sh("qualifiedMaxCount"))
        low = _int(s, prop, "qualifiedMinCount", min_q) if min_q is not None else 0
        if low > 0:
            query = count_query(focus, values, f"< {low}", optional=True)
            yield Check(name, severity, path, query, [Finding(
                "qualifiedMinCount",
                message or f"Less than {low} values on {path} conform to the shape")])
        if max_q is not None:
            high = _int(s, prop, "qualifiedMaxCount", max_q)
            query = count_query(focus, values, f"> {high}", optional=False)
            yield Check(name, severity, path, query, [Finding(
                "qualifiedMaxCount",
                message or f"More than {high} values on {path} conform to the shape")])

    def value_check(self, name: str, severity: str, path: str, focus: str, pairs: str,
                    conditions: list[tuple[str, str, str]], message: str | None, *,
                    value_is_focus: bool = False) -> Check:
        """One query for every value constraint of a shape: ?fN is true where the Nth
        constraint fails."""
        binds = " ".join(f"BIND (!({cond}) AS ?f{i})"
                         for i, (_param, cond, _generic) in enumerate(conditions))
        failed = " || ".join(f"?f{i}" for i in range(len(conditions)))
        value = "?this" if value_is_focus else "?value"
        flags = " ".join(f"?f{i}" for i in range(len(conditions)))
        query = (f"SELECT DISTINCT ?this {'' if value_is_focus else '?value '}{flags} "
                 f"WHERE {{ {focus} {pairs} {binds} FILTER ({failed}) }}")
        findings = [Finding(param, message or f"Value {{{value}}} {generic}")
                    for param, _cond, generic in conditions]
        return Check(name, severity, path, query, findings, value_is_focus=value_is_focus)

    # -- value constraints as boolean expressions (never an error: COALESCE(…, false))

    def class_checks(self, shape: Term, name: str, severity: str, path: str, focus: str,
                     pairs: str, message: str | None) -> Iterator[Check]:
        """sh:class on the value nodes, by MINUS: at 10⁷ a hash anti-join over the class's
        instances took 5.6 s where an EXISTS look-up per value took 17 s (scan: 4.7 s)."""
        value = "?value" if pairs else "?this"
        for cls in self.shapes.objects(shape, _sh("class")):
            if not isinstance(cls, ox.NamedNode):
                raise self.shapes.error(shape, "has a sh:class that is not an IRI")
            types = " ".join(f"<{c}>" for c in self.subclasses(cls.value))
            query = (f"SELECT DISTINCT ?this {value if pairs else ''} WHERE {{ {focus} {pairs} "
                     f"MINUS {{ {value} a ?type . VALUES ?type {{ {types} }} }} }}")
            yield Check(name, severity, path, query,
                        [Finding("class", message or f"Value {{{value}}} does not satisfy "
                                                     f"sh:class {cls}")],
                        value_is_focus=not pairs)

    def value_conditions(self, shape: Term, v: str,
                         skip: tuple[str, ...] = ()) -> Iterator[tuple[str, str, str]]:
        """(parameter, SPARQL expression true where ``v`` satisfies it, generic message)."""
        s = self.shapes
        for param in VALUE_PARAMS:
            if param in skip:
                continue
            for value in s.objects(shape, _sh(param)):
                cond = self.condition(shape, param, value, v)
                yield param, f"COALESCE({cond}, false)", f"does not satisfy sh:{param} {value}"

    def condition(self, shape: Term, param: str, value: Term, v: str) -> str:
        s = self.shapes
        if param == "class":
            if not isinstance(value, ox.NamedNode):
                raise s.error(shape, "has a sh:class that is not an IRI")
            t = self.var()
            types = " ".join(f"<{c}>" for c in self.subclasses(value.value))
            return f"EXISTS {{ {v} a {t} . VALUES {t} {{ {types} }} }}"
        if param == "datatype":
            if not isinstance(value, ox.NamedNode):
                raise s.error(shape, "has a sh:datatype that is not an IRI")
            cond = f"(isLiteral({v}) && sameTerm(datatype({v}), <{value.value}>)"
            if value.value == RDF + "langString":
                cond += f" && lang({v}) != \"\""
            elif value.value in CASTABLE:
                cond += f" && COALESCE(isLiteral(<{value.value}>(STR({v}))), false)"
            return cond + ")"
        if param == "nodeKind":
            kind = value.value.removeprefix(SH) if isinstance(value, ox.NamedNode) else ""
            if kind not in NODE_KINDS:
                raise s.error(shape, f"has sh:nodeKind {value}, which is not a SHACL node kind")
            return NODE_KINDS[kind].format(v=v)
        if param == "pattern":
            flags = s.one(shape, _sh("flags"))
            flag_text = f", {sparql_string(flags.value)}" if isinstance(flags, ox.Literal) else ""
            if not isinstance(value, ox.Literal):
                raise s.error(shape, "has a sh:pattern that is not a literal")
            return f"(!isBlank({v}) && REGEX(STR({v}), {sparql_string(value.value)}{flag_text}))"
        if param == "languageIn":
            tags = [t.value for t in s.items(value) if isinstance(t, ox.Literal)]
            matches = " || ".join(f"langMatches(lang({v}), {sparql_string(t)})" for t in tags)
            return f"(isLiteral({v}) && ({matches or 'false'}))"
        if param == "in":
            members = [sparql_term(s, m, shape) for m in s.items(value)]
            return "(" + (" || ".join(f"sameTerm({v}, {m})" for m in members) or "false") + ")"
        if param == "minLength":
            n = _int(s, shape, "minLength", value)
            return f"(!isBlank({v}) && STRLEN(STR({v})) >= {n})"
        if param == "node":
            return self.conforms(value, v)
        if param == "not":
            return f"!({self.conforms(value, v)})"
        if param == "or":
            return "(" + (" || ".join(self.conforms(m, v) for m in s.items(value))
                          or "false") + ")"
        raise s.unsupported(shape, f"sh:{param}")  # pragma: no cover - VALUE_PARAMS only

    def conforms(self, shape: Term, v: str) -> str:
        """An expression true where node ``v`` conforms to ``shape`` (sh:node, sh:or, …)."""
        s = self.shapes
        if shape in self._stack:
            raise s.unsupported(shape, "a recursive shape reference")
        if self.deactivated(shape):
            return "true"
        self._stack.append(shape)
        try:
            if s.one(shape, _sh("path")) is not None:
                parts = [self.nested_property(shape, v)]
            else:
                self.check_params(shape, NODE_SHAPE_PARAMS, "shape used by sh:node/sh:or/sh:not")
                if s.objects(shape, _sh("sparql")):
                    raise s.unsupported(shape, "sh:sparql",
                                        " in a shape used by sh:node/sh:or/sh:not")
                parts = [cond for _p, cond, _g in self.value_conditions(shape, v)]
                parts += [f"sameTerm({v}, {sparql_term(s, h, shape)})"
                          for h in s.objects(shape, _sh("hasValue"))]
                parts += [self.nested_property(p, v) for p in s.objects(shape, _sh("property"))
                          if not self.deactivated(p)]
        finally:
            self._stack.pop()
        return "(" + (" && ".join(parts) or "true") + ")"

    def nested_property(self, prop: Term, v: str) -> str:
        s = self.shapes
        allowed = frozenset(("path", "minCount", "maxCount", "hasValue", "message", "severity",
                             "deactivated", "name", "description", "order", "group",
                             "defaultValue", "flags", *VALUE_PARAMS))
        self.check_params(prop, allowed, "property shape used by sh:node/sh:or/sh:not")
        path_node = s.one(prop, _sh("path"))
        assert path_node is not None
        path = s.path(path_node)
        parts: list[str] = []
        min_count = s.one(prop, _sh("minCount"))
        if min_count is not None:
            low = _int(s, prop, "minCount", min_count)
            if low > 1:
                raise s.unsupported(prop, f"sh:minCount {low}",
                                    " in a shape used by sh:node/sh:or/sh:not")
            if low == 1:
                parts.append(f"EXISTS {{ {v} {path} {self.var()} }}")
        max_count = s.one(prop, _sh("maxCount"))
        if max_count is not None:
            high = _int(s, prop, "maxCount", max_count)
            a, b = self.var(), self.var()
            if high == 0:
                parts.append(f"NOT EXISTS {{ {v} {path} {a} }}")
            elif high == 1:
                parts.append(f"NOT EXISTS {{ {v} {path} {a}, {b} . "
                             f"FILTER (!sameTerm({a}, {b})) }}")
            else:
                raise s.unsupported(prop, f"sh:maxCount {high}",
                                    " in a shape used by sh:node/sh:or/sh:not")
        for value in s.objects(prop, _sh("hasValue")):
            parts.append(f"EXISTS {{ {v} {path} {sparql_term(s, value, prop)} }}")
        x = self.var()
        conditions = [cond for _p, cond, _g in self.value_conditions(prop, x)]
        if conditions:
            parts.append(f"NOT EXISTS {{ {v} {path} {x} . "
                         f"FILTER (!({' && '.join(conditions)})) }}")
        return "(" + (" && ".join(parts) or "true") + ")"

    # -- SHACL-SPARQL constraints

    def sparql_check(self, shape: Term, constraint: Term, focus: str, severity: str,
                     shape_message: str | None) -> Check:
        s = self.shapes
        self.check_params(constraint, SPARQL_CONSTRAINT_PARAMS, "SPARQL constraint")
        select = s.one(constraint, _sh("select"))
        if not isinstance(select, ox.Literal):
            if s.objects(constraint, _sh("ask")):
                raise s.unsupported(shape, "sh:ask")
            raise s.error(shape, "has a sh:sparql constraint without sh:select")
        text = select.value
        prefixes = self.prefixes(constraint)
        head = re.search(r"\bWHERE\s*\{", text, re.IGNORECASE)
        if head is None:
            raise s.error(shape, "has a sh:select whose WHERE group the validator cannot find "
                          "(write SELECT … WHERE { … })")
        if re.search(r"\$PATH\b|\$currentShape\b|\$shapesGraph\b", text):
            raise s.unsupported(shape, "$PATH, $currentShape or $shapesGraph",
                                " in a SPARQL constraint")
        # Pre-bind $this: the focus nodes head the WHERE group, so every filter of the
        # group (NOT EXISTS included) sees ?this bound, as it does in pySHACL.
        query = f"{prefixes}{text[:head.end()]} {focus} {text[head.end():]}"
        message = self.message(constraint) or shape_message or \
            "SPARQL constraint not satisfied"
        focus_query = f"SELECT DISTINCT ?this WHERE {{ {focus} }} LIMIT {PER_FOCUS_LIMIT + 1}"
        return Check(s.name(shape), severity, "", query, [Finding("sparql", message)],
                     sparql=True, select=prefixes + text, focus_query=focus_query)

    def prefixes(self, constraint: Term) -> str:
        s = self.shapes
        lines: list[str] = []
        for source in s.objects(constraint, _sh("prefixes")):
            for declaration in s.objects(source, _sh("declare")):
                prefix = s.one(declaration, _sh("prefix"))
                namespace = s.one(declaration, _sh("namespace"))
                if not isinstance(prefix, ox.Literal) or not isinstance(namespace, ox.Literal):
                    raise s.error(source, "has a sh:declare without sh:prefix and "
                                  "sh:namespace literals")
                lines.append(f"PREFIX {prefix.value}: <{namespace.value}>\n")
        return "".join(sorted(set(lines)))


# --- running the checks -----------------------------------------------------------------


def subclass_map(store: ox.Store, **options: object) -> Callable[[str], list[str]]:
    """C → [C, every subclass of C] from ``rdfs:subClassOf`` in the data (as pySHACL)."""
    below: dict[str, set[str]] = {}
    query = f"SELECT ?sub ?sup WHERE {{ ?sub <{RDFS}subClassOf>+ ?sup }}"
    for row in store.query(query, **options):  # type: ignore[arg-type, union-attr]
        sub, sup = row[0], row[1]
        if isinstance(sub, ox.NamedNode) and isinstance(sup, ox.NamedNode):
            below.setdefault(sup.value, set()).add(sub.value)

    def subclasses(cls: str) -> list[str]:
        return [cls, *sorted(below.get(cls, set()) - {cls})]

    return subclasses


def compile_checks(shapes: ShapesGraph, store: ox.Store, **options: object) -> list[Check]:
    """The checks of every targeted shape, for the data in ``store``."""
    return Translator(shapes, subclass_map(store, **options)).checks()


def _text(term: object) -> str:
    if isinstance(term, ox.NamedNode | ox.BlankNode | ox.Literal):
        return term.value
    return "" if term is None else str(term)


def _fill(message: str, bindings: dict[str, str]) -> str:
    """``{?var}`` and ``{$var}`` in a SPARQL constraint's message, as pySHACL fills them."""
    for name, value in bindings.items():
        message = message.replace("{?" + name + "}", value).replace("{$" + name + "}", value)
    return message


QUOTED = re.compile(r'"""(?:[^\\]|\\.)*?"""|\'\'\'(?:[^\\]|\\.)*?\'\'\''
                    r'|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|#[^\n]*', re.DOTALL)


def bind_this(select: str, node: ox.NamedNode | ox.Literal) -> str | None:
    """``select`` with ``$this``/``?this`` in its WHERE group (outside strings and comments)
    written as ``node``; None where the group cannot be found."""
    head = re.search(r"\bWHERE\s*\{", select, re.IGNORECASE)
    if head is None:
        return None
    pieces: list[str] = []
    depth, i, plain = 1, head.end(), head.end()
    while i < len(select):
        quoted = QUOTED.match(select, i)
        if quoted:
            pieces += [_this_as(select[plain:i], node), quoted.group()]
            i = plain = quoted.end()
            continue
        depth += {"{": 1, "}": -1}.get(select[i], 0)
        if depth == 0:
            pieces.append(_this_as(select[plain:i], node))
            return select[:head.end()] + "".join(pieces) + select[i:]
        i += 1
    return None


def _this_as(text: str, node: ox.NamedNode | ox.Literal) -> str:
    return re.sub(r"[?$]this\b", lambda _m: str(node), text)


def run_check(check: Check, store: ox.Store, **options: object) -> list[ShaclResult]:
    if check.select:
        found = store.query(check.focus_query, **options)  # type: ignore[arg-type]
        assert isinstance(found, ox.QuerySolutions)
        focus_nodes = [row[0] for row in found]
        if len(focus_nodes) <= PER_FOCUS_LIMIT:
            queries = [(node, bind_this(check.select, node)) for node in focus_nodes
                       if isinstance(node, ox.NamedNode | ox.Literal)]
            if len(queries) == len(focus_nodes):
                try:
                    return [result for node, query in queries if query is not None
                            for result in _results(check, store, query, node, options)]
                except SyntaxError:
                    pass  # e.g. a sub-select that projects $this: all focus nodes at once
    try:
        return _results(check, store, check.query, None, options)
    except SyntaxError as exc:
        raise ShaclError(f"{check.shape}: its {check.components} check is not valid SPARQL "
                         f"({exc}):\n{check.query}") from exc


def _results(check: Check, store: ox.Store, query: str, this: ox.NamedNode | ox.Literal | None,
             options: dict[str, object]) -> list[ShaclResult]:
    """Run one query of ``check``; ``this``: the focus node it was written for, if any."""
    solutions = store.query(query, **options)  # type: ignore[arg-type]
    assert isinstance(solutions, ox.QuerySolutions)
    names = [v.value for v in solutions.variables]
    results: list[ShaclResult] = []
    for row in solutions:
        values = {name: row[name] for name in names}
        if this is not None:
            values["this"] = this
        focus = _text(values.get("this"))
        if check.sparql:
            texts = {name: _text(term) for name, term in values.items() if term is not None}
            path_term = values.get("path")
            path = f"<{path_term.value}>" if isinstance(path_term, ox.NamedNode) else ""
            value = texts.get("value", focus)
            message = _fill(check.findings[0].message, texts)
            results.append(ShaclResult(check.severity, focus, path, message, value))
            continue
        value = focus if check.value_is_focus else _text(values.get("value"))
        bindings = {"this": focus, "value": value}
        for i, finding in enumerate(check.findings):
            flag = values.get(f"f{i}", TRUE)
            if flag != TRUE:  # a check of several constraints: not this one
                continue
            results.append(ShaclResult(check.severity, focus, check.path,
                                       _fill(finding.message, bindings), value))
    return results


def validate_store(store: ox.Store, shapes: ShapesGraph, *,
                   timings: list[Timing] | None = None,
                   **options: object) -> list[ShaclResult]:
    """Every result of the shapes over ``store`` (by default the union of its graphs)."""
    options = options or {"use_default_graph_as_union": True}
    results: set[ShaclResult] = set()
    for check in compile_checks(shapes, store, **options):
        started = time.perf_counter()
        found = run_check(check, store, **options)
        if timings is not None:
            timings.append(Timing(check, time.perf_counter() - started, len(found)))
        results.update(found)
    return sorted(results, key=lambda r: (r.severity, r.focus, r.path, r.message, r.value))


def validate_quads(quads: Sequence[ox.Quad], shapes: ShapesGraph, *,
                   timings: list[Timing] | None = None,
                   on_disk: bool | None = None) -> list[ShaclResult]:
    """Load ``quads`` into a store of their own and validate the union of their graphs.

    The store is in memory up to IN_MEMORY_QUADS quads (``on_disk`` None), else a
    temporary one on disk, compacted before the queries run, removed after.
    """
    if on_disk is None:
        on_disk = len(quads) > IN_MEMORY_QUADS
    if not on_disk:
        store = ox.Store()
        store.bulk_extend(quads)
        return validate_store(store, shapes, timings=timings)
    with tempfile.TemporaryDirectory(prefix="sasci-kg-shacl-") as folder:
        store = ox.Store(folder)
        try:
            store.bulk_extend(quads)
            store.optimize()
            return validate_store(store, shapes, timings=timings)
        finally:
            del store  # closes the store before its folder goes
