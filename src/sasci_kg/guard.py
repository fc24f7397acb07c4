"""Policy checks on SPARQL text, done before anything is parsed: size, nesting, form, SERVICE/LOAD.

Takes the raw query or update string and gives a :class:`Checked` summary (form, dataset clause,
remote IRIs), or raises a :class:`~sasci_kg.errors.QueryRefusedError`. A small tokenizer that
follows the SPARQL 1.1 terminals (strings incl. long strings, IRIs, comments, prefixed names) does
the work, so a keyword inside an IRI, a string or a comment never counts; for the usual query, a
single regular expression over the same terminals does it faster (see _check_fast).
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, repeat
from typing import NamedTuple
from urllib.parse import SplitResult, urljoin, urlsplit

from .errors import QueryError, QueryRefusedError

QUERY_FORMS = frozenset({"SELECT", "CONSTRUCT", "DESCRIBE", "ASK"})
UPDATE_FORMS = frozenset(
    {"INSERT", "DELETE", "LOAD", "CLEAR", "CREATE", "DROP", "COPY", "MOVE", "ADD", "WITH"}
)
# Functions whose value changes from one evaluation to the next (SPARQL 1.1 §17.4): a query
# that calls one has no single answer to keep, and neither has one that reaches a SERVICE.
VOLATILE = frozenset({"RAND", "NOW", "UUID", "STRUUID", "BNODE", "SERVICE"})

# ---------------------------------------------------------------------------------------
# Errors (subclasses of the library tree in errors.py).


class QuerySyntaxError(QueryError):
    """A query or update that is not valid SPARQL; carries the 1-based line and column."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.line = line
        self.column = column


class QueryTooLargeError(QueryRefusedError):
    """A query or update longer than the configured byte limit."""

    def __init__(self, size: int, limit: int):
        super().__init__(
            f"the query is {size} bytes long; this endpoint accepts at most {limit} bytes. "
            "Shorten it (for example, move long VALUES lists into the data)"
        )
        self.size = size
        self.limit = limit


class QueryTooDeepError(QueryRefusedError):
    """A query nested deeper than the configured bracket depth (it could crash the parser)."""

    def __init__(self, depth: int, limit: int, line: int, column: int):
        super().__init__(
            f"brackets, braces or parentheses are nested more than {limit} deep "
            f"(at line {line}, column {column}); flatten the query"
        )
        self.depth = depth
        self.limit = limit
        self.line = line
        self.column = column


class QueryChainTooLongError(QueryRefusedError):
    """A query with more clauses that nest its algebra, or more operators, than the engine
    can evaluate without overflowing its stack (see :data:`MAX_CLAUSES`)."""

    def __init__(self, what: str, count: int, limit: int, fix: str):
        super().__init__(
            f"the query has {count} {what}; this endpoint takes at most {limit}, because "
            f"longer chains crash the query engine. {fix}"
        )
        self.count = count
        self.limit = limit


class RemoteAccessRefusedError(QueryRefusedError):
    """A SERVICE call or LOAD that would make the server fetch a URL the policy does not allow."""

    def __init__(self, keyword: str, iri: str | None, reason: str):
        target = f" <{iri}>" if iri else ""
        super().__init__(f"{keyword}{target} refused: {reason}")
        self.keyword = keyword
        self.iri = iri
        self.reason = reason


class WrongOperationError(QueryRefusedError):
    """An update sent where a query is expected, or a query where an update is expected."""


# ---------------------------------------------------------------------------------------
# Tokenizer. Terminals from SPARQL 1.1 Query §19.8 (plus the 1.2 triple-term brackets).
# pyoxigraph 0.5.13 does not apply \u escapes to the whole text before parsing (only inside
# IRIs, strings and local names), so neither do we: `\u0053ERVICE` is a syntax error in both.

_PN_CHARS_BASE = (
    "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u037d\u037f-\u1fff\u200c-\u200d"
    "\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd\U00010000-\U000effff"
)
_PN_CHARS_U = _PN_CHARS_BASE + "_"
_PN_CHARS = _PN_CHARS_U + r"\-0-9\u00b7\u0300-\u036f\u203f-\u2040"
_PN_PREFIX = f"[{_PN_CHARS_BASE}](?:[{_PN_CHARS}.]*[{_PN_CHARS}])?"
_PLX = r"%[0-9A-Fa-f]{2}|\\[_~.\-!$&'()*+,;=/?#@%]"
# As pyoxigraph reads a local name: at most one run of dots inside it. SPARQL allows any
# number, and read so, `ex:a.b.SERVICE<…>{}` was one name here while the engine read the
# name ex:a.b, the end of a triple and a live SERVICE (a bypass hunt's find).
_PN_LOCAL = (
    f"(?:[{_PN_CHARS_U}:0-9]|{_PLX})"
    f"(?:[{_PN_CHARS}:]|{_PLX})*(?:\\.+(?:[{_PN_CHARS}:]|{_PLX})+)?"
)
_VARNAME = f"[{_PN_CHARS_U}0-9][{_PN_CHARS_U}0-9\u00b7\u0300-\u036f\u203f-\u2040]*"
_UCHAR = r"\\u[0-9A-Fa-f]{4}|\\U[0-9A-Fa-f]{8}"
_EXP = r"[eE][+-]?[0-9]+"

# A backslash in a string starts ECHAR or UCHAR only, as the engine reads it: read as "any
# character", a backslash before a line break carried a short string on to the next line,
# where the engine had ended it (or read a comment), and text the engine ran went unchecked.
_ESCAPE = r"\\[tbnrf\"'\\]|\\u[0-9A-Fa-f]{4}|\\U[0-9A-Fa-f]{8}"
_LONG_STRINGS = (
    rf"'''(?:(?:'|'')?(?:[^'\\]|{_ESCAPE}))*'''"
    rf'|"""(?:(?:"|"")?(?:[^"\\]|{_ESCAPE}))*"""'
)
# The terminals by kind (a group name of the tokenizer), in the order it tries them.
_TERMINALS = {
    "ws": r"[ \t\r\n]+",
    "comment": r"\#[^\r\n]*",
    "iri": rf"<(?:[^<>\"{{}}|^`\\\x00-\x20]|{_UCHAR})*>",
    "string": _LONG_STRINGS + rf"|'(?:[^'\\\n\r]|{_ESCAPE})*'" rf'|"(?:[^"\\\n\r]|{_ESCAPE})*"',
    "var": rf"[?$]{_VARNAME}",
    "bnode": rf"_:[{_PN_CHARS_U}0-9](?:[{_PN_CHARS}.]*[{_PN_CHARS}])?",
    "pname": rf"(?:{_PN_PREFIX})?:(?:{_PN_LOCAL})?",
    "langtag": r"@[a-zA-Z]+(?:-[a-zA-Z0-9]+)*(?:--[a-zA-Z]+)?",
    "number": rf"[0-9]*\.[0-9]+(?:{_EXP})?|[0-9]+\.[0-9]*{_EXP}|[0-9]+(?:{_EXP})?",
    "word": r"[A-Za-z][A-Za-z0-9_]*",
    "punct": r"\^\^|<<\(|\)>>|<<|>>|\{\||\|\}|&&|\|\||!=|<=|>=|[{}()\[\];,.=<>!+\-*/^|?~]",
}

# The same languages written so that the engine never backtracks into a token: possessive
# where that changes nothing, because a character can be read in one way only. (":" is no
# PN_CHARS, so a prefix can only end just before it, and the look-behind refuses a final "." as
# the final [PN_CHARS] did; a local name or a long string is a sequence of pieces that split in
# one way only, and the last piece is the last one that can be read, as the greedy original
# reads it.) On a 100 KB token the backtracking forms cost up to 20 ms: the engine keeps a
# state per repetition, in case it has to go back.
_IRIREF_FAST = rf"<(?:[^<>\"{{}}|^`\\\x00-\x20]++|{_UCHAR})*+>"
_STRING_FAST = (
    rf"'''(?:(?:''|')?(?:[^'\\]++|{_ESCAPE}))*+'''"
    rf'|"""(?:(?:""|")?(?:[^"\\]++|{_ESCAPE}))*+"""'
    rf"|'(?:[^'\\\n\r]++|{_ESCAPE})*+'"
    rf'|"(?:[^"\\\n\r]++|{_ESCAPE})*+"'
)
_PN_PREFIX_FAST = rf"(?:[{_PN_CHARS_BASE}][{_PN_CHARS}.]*+(?<!\.))?:"
_PN_LOCAL_START = rf"[{_PN_CHARS_U}:0-9]|{_PLX}"
_PN_LOCAL_FAST = (
    rf"(?:{_PN_LOCAL_START})(?:[{_PN_CHARS}:]++|{_PLX})*+(?:\.++(?:[{_PN_CHARS}:]++|{_PLX})++)?+"
)
_PNAME_FAST = rf"{_PN_PREFIX_FAST}(?:{_PN_LOCAL_FAST})?"
_LANGTAG_FAST = r"@[a-zA-Z]++(?:-[a-zA-Z0-9]++)*+(?:--[a-zA-Z]++)?"
_FASTER = {"iri": _IRIREF_FAST, "string": _STRING_FAST, "pname": _PNAME_FAST,
           "langtag": _LANGTAG_FAST}

# And in time linear in the text. A prefixed name's ":" comes right after its prefix, which
# holds only name characters and dots; so from a letter, only the end of the run of [PN_CHARS.]
# there tells whether a prefixed name starts. Tried first at every letter, "pname" looked that
# far from each letter of a run like `a.a.a…` before "word" read one letter: quadratic, 1.1 s
# at 16 KB (40 s at the 100 KiB limit), in the web process. Here, from an ASCII letter, one of
# three reads on: "word" when neither a name character, "." nor ":" follows the word (the usual
# word), "pname" when the run ends just before ":" and not with ".", or else "run": the whole
# run, in which no prefixed name can start (its ":" would have to follow a name character of
# the run). tokenize() reads that run with _IN_RUN, the terminals but "pname": words, numbers,
# "." and "-" (a number may go on past the run, as `1e+5` does after `a.1e`). And "error" takes
# the first character that no terminal reads: finditer used to search on from there, trying
# "pname" at each letter after it (`SELECT éé…é`: 0.44 s at 6 KB).
_WORD_ALONE = rf"[A-Za-z][A-Za-z0-9_]*+(?![{_PN_CHARS}.:])"


def _alternatives(terminals: Mapping[str, str]) -> re.Pattern[str]:
    return re.compile(
        "|".join(f"(?P<{kind}>{pattern})" for kind, pattern in terminals.items()), re.DOTALL
    )


_TOKEN = _alternatives(
    {
        **{kind: _FASTER.get(kind, _TERMINALS[kind])
           for kind in ("ws", "comment", "iri", "string", "var", "bnode")},
        "word": _WORD_ALONE,
        "pname": _PNAME_FAST,
        "run": rf"[A-Za-z][{_PN_CHARS}.]*+",
        **{kind: _FASTER.get(kind, _TERMINALS[kind]) for kind in ("langtag", "number", "punct")},
        "error": ".",
    }
)
_IN_RUN = _alternatives(
    {**{kind: pattern for kind, pattern in _TERMINALS.items() if kind != "pname"}, "error": "."}
)

_IRIREF_AT = re.compile(_IRIREF_FAST)
_OPENERS = frozenset({"{", "(", "[", "<<", "<<(", "{|"})
_CLOSERS = frozenset({"}", ")", "]", ">>", ")>>", "|}"})


class Token(NamedTuple):
    """One significant token: its kind (a group name of the tokenizer), text and offset.

    A named tuple, not a dataclass: the guard makes one per token of every query, and a
    tuple is made in C (a frozen dataclass's __init__ goes through object.__setattr__).
    """

    kind: str
    text: str
    offset: int

    @property
    def keyword(self) -> str | None:
        """The upper-cased word if this token is a bare word (a keyword or function name)."""
        return self.text.upper() if self.kind == "word" else None


class _Lines:
    """Offset → 1-based (line, column), computed only when an error needs it."""

    def __init__(self, text: str):
        self._starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]

    def position(self, offset: int) -> tuple[int, int]:
        index = bisect.bisect_right(self._starts, offset) - 1
        return index + 1, offset - self._starts[index] + 1


def tokenize(text: str) -> Iterator[Token]:
    """Yield the significant tokens of ``text`` (no whitespace, no comments).

    Raises :class:`QuerySyntaxError` at the first character no SPARQL terminal can start with
    (an unterminated string, a stray backslash, a non-breaking space, …).
    """
    pos = 0
    restart = True
    while restart:
        restart = False
        for m in _TOKEN.finditer(text, pos):
            kind = m.lastgroup
            if kind == "run":  # words, numbers, "." and "-", or a character no terminal reads
                end = m.end()
                for m in _IN_RUN.finditer(text, pos):
                    kind = m.lastgroup
                    if kind == "error":
                        break
                    yield Token(kind, m.group(), pos)  # type: ignore[arg-type]
                    pos = m.end()
                    if pos >= end:
                        break
                if pos == end:
                    continue
                restart = pos > end  # a number read on past the run (`a.1e+5`); else an error
                break
            if kind == "error":
                break
            if kind == "punct" and m.group()[:2] == "<<" and _IRIREF_AT.match(text, pos + 1):
                # `1<<http://e/#>` is 1 < <http://e/#> to the engine (no triple term starts
                # with an IRI's body): read as "<<", the IRI's # or ' hid what followed from
                # these checks (a bypass hunt's find).
                yield Token("punct", "<", pos)
                pos += 1
                restart = True
                break
            if kind != "ws" and kind != "comment":
                yield Token(kind, m.group(), pos)  # type: ignore[arg-type]
            pos = m.end()
    if pos < len(text):
        line, column = _Lines(text).position(pos)
        char = text[pos]
        what = "an unterminated string" if char in "'\"" else f"unexpected character {char!r}"
        raise QuerySyntaxError(
            f"syntax error at line {line}, column {column}: {what}", line=line, column=column
        )


# ---------------------------------------------------------------------------------------
# The checks.


@dataclass(frozen=True)
class Policy:
    """The limits a query or update must respect.

    ``service_allow`` holds IRI prefixes that SERVICE and LOAD may reach (empty: none);
    ``resolve`` maps a host name to its addresses (a seam for tests; default: DNS).
    """

    max_bytes: int = 100 * 1024
    max_depth: int = 64
    service_allow: tuple[str, ...] = ()
    default_prefixes: Mapping[str, str] | None = None
    resolve: Callable[[str, int], Sequence[str]] | None = None


@dataclass(frozen=True)
class Checked:
    """What the checks learned: the operation's form and what it reaches out to."""

    form: str  # SELECT, CONSTRUCT, DESCRIBE, ASK, or UPDATE
    has_dataset_clause: bool  # the query names FROM / FROM NAMED graphs itself
    remote_iris: tuple[str, ...] = ()  # allowed SERVICE / LOAD targets
    volatile: bool = False  # calls RAND, NOW, UUID, STRUUID or BNODE, or reaches a SERVICE
    # False when the prefix of every prefixed name is declared by a PREFIX in the text itself
    # (wherever in the text), so that the engine needs no default prefixes. True is always
    # safe: it only costs the time to pass them.
    needs_default_prefixes: bool = True

    @property
    def is_update(self) -> bool:
        return self.form == "UPDATE"

    @property
    def returns_graph(self) -> bool:
        """CONSTRUCT and DESCRIBE give RDF; SELECT and ASK give a results table or boolean."""
        return self.form in ("CONSTRUCT", "DESCRIBE")


# BASE declarations a query or update may make (one is usual).
MAX_BASES = 64


def check_query(text: str, policy: Policy) -> Checked:
    """Check a query for the query endpoint; an update is refused."""
    checked = _check(text, policy)
    if checked.is_update:
        raise WrongOperationError(
            "this is a SPARQL Update, and this endpoint only answers queries; "
            "send updates to /update (with its token, if updates are enabled)"
        )
    return checked


def check_update(text: str, policy: Policy) -> Checked:
    """Check an update for the update endpoint; a query is refused."""
    checked = _check(text, policy)
    if not checked.is_update:
        raise WrongOperationError(
            f"this is a {checked.form} query, and this endpoint only runs updates; "
            "send queries to /sparql"
        )
    return checked


def _check(text: str, policy: Policy) -> Checked:
    checked = (None if _may_read_two_ways(text) or _holds_remote_letters(text)
               else _check_fast(text, policy))
    return checked if checked is not None else _check_full(text, policy)


def _holds_remote_letters(text: str) -> bool:
    """Whether SERVICE or LOAD stands anywhere in the text, in any case. (On every query:
    upper() and `in` take ~0.6 µs for a 330-character one, the case-blind search ~8 µs.)"""
    upper = text.upper()
    return "SERVICE" in upper or "LOAD" in upper


# pyoxigraph reads a keyword wherever its letters stand where one may, whatever comes right
# after or before: SERVICESILENT<…> is SERVICE SILENT <…>, SERVICEex:x is SERVICE ex:x, and
# `?s ?p trueSERVICE <…> {…}` is true, then SERVICE. The tokenizer read each as one word or
# prefixed name, and no SERVICE (an independent hunt's finds). A word holding the letters of
# SERVICE or LOAD, or a prefix holding them, is refused; the text from a place where the
# readings part (below) is searched for them anywhere.
_REMOTE_LETTERS = re.compile(r"SERVICE|LOAD", re.IGNORECASE)
_SERVICE_LETTERS = re.compile(r"SERVICE", re.IGNORECASE)


def _check_glued_keyword(token: Token, *, update: bool) -> None:
    """403 for a word (other than SERVICE or LOAD itself) or a prefix holding SERVICE (or
    LOAD, in an update: a query has no LOAD), which the engine may read as that keyword and
    what follows."""
    if token.kind == "word" and token.keyword not in ("SERVICE", "LOAD"):
        name = token.text
    elif token.kind == "pname":
        name = token.text[:token.text.index(":")]
    else:
        return
    glued = (_REMOTE_LETTERS if update else _SERVICE_LETTERS).search(name)
    if glued is not None:
        raise RemoteAccessRefusedError(
            glued.group().upper(), None,
            f"{token.text[:40]} holds {glued.group()}, which the engine reads as that keyword "
            "even with no space after or before it; write it apart (or rename the prefix)")


# "<" after an operand in an expression is "less than" to the engine, while the tokenizer reads
# an IRI wherever <…> can be one. Inside such a token only a ' (where the engine starts a
# string) or a # (a comment) makes the engine's reading run on past its ">": in
# `FILTER(?a<?b&&'>'!=?a) SERVICE <…> {…} #'` the engine reads ?a < ?b && '>' != ?a, a live
# SERVICE and a comment, where the tokenizer read the IRI <?b&&'> and then a string holding
# the SERVICE. Which reading the engine takes depends on a context this check does not follow
# (and tried to, and missed `}` and `)>>` as ends of operands). So wherever the readings may
# part, the text from there on is taken as the engine may read it: the word SERVICE or LOAD
# anywhere in it is refused, and its answer is never cached (a hidden RAND()). A # parts them
# only if the tokenizer then starts a long string on that line (the engine skips the line).
_IRI_WITH_QUOTE = re.compile(r"<[^<>\"{}|^`\x00-\x20]*'")
_LESS_THAN_IRI = re.compile(rf"<(?={_IRIREF_FAST})")  # "<<" whose second "<" starts an IRI
_IRI_WITH_HASH = re.compile(r"<[^<>\"{}|^`\x00-\x20]*#")


def _may_read_two_ways(text: str) -> bool:
    """Whether the text may hold an IRI token that the engine may read otherwise, or "<<"
    before an IRI (for :func:`_check_full` to decide)."""
    return bool(_IRI_WITH_QUOTE.search(text) or _LESS_THAN_IRI.search(text)) or (
        ("'''" in text or '"""' in text) and bool(_IRI_WITH_HASH.search(text)))


def _where_readings_part(text: str, tokens: Sequence[Token]) -> Token | None:
    """The first IRI token after which the engine may read the text otherwise, if any."""
    for token in tokens:
        if token.kind == "iri" and ("'" in token.text or "#" in token.text
                                    and _long_string_on_its_line(text, token)):
            return token
    return None


def _long_string_on_its_line(text: str, iri: Token) -> bool:
    end = iri.offset + len(iri.text)
    line_end = min((i for i in (text.find("\n", end), text.find("\r", end)) if i >= 0),
                   default=len(text))
    rest = text[end:line_end]
    return "'''" in rest or '"""' in rest


# Tokens after which "<" starts an operand (an IRI, a triple term), never "less than": an
# operator, an opening bracket, a separator, a keyword. After anything else (a variable, a
# literal, a name, ")" or "}" or ")>>" that may end an operand) it may be "less than".
_BEFORE_AN_OPERAND = frozenset({
    "(", ",", "{", ".", ";", "[", "^^", "||", "&&", "=", "!=", "<", ">", "<=", ">=", "+", "-",
    "*", "/", "?", "|", "^", "!", "<<", "<<(", "{|", "~"})


def _check_iri_bodies(tokens: Sequence[Token], *, update: bool) -> None:
    """403 for SERVICE (or LOAD, in an update) letters in an IRI token holding # where "<"
    may be "less than": the engine reads its body as query text up to the # (then a comment
    to the end of the line), so `FILTER(1<2)SERVICEex:#>` with `{}` on the next line was a
    live SERVICE inside what the guard read as one IRI (a fourth bypass hunt's find)."""
    previous: Token | None = None
    for token in tokens:
        if (token.kind == "iri" and "#" in token.text and previous is not None
                and previous.text not in _BEFORE_AN_OPERAND
                and not (previous.kind == "word" and previous.keyword not in ("TRUE", "FALSE"))):
            letters = (_REMOTE_LETTERS if update else _SERVICE_LETTERS).search(
                token.text, 0, token.text.index("#"))
            if letters is not None:
                raise RemoteAccessRefusedError(
                    letters.group().upper(), None,
                    f"{token.text[:40]} holds {letters.group()} before its #: the engine may "
                    f"read that as \"less than\", then {letters.group()} and a comment; write "
                    "the IRI as a prefixed name, or put a space after < if it is \"less than\"")
        previous = token


def _check_after_parting(text: str, parting: Token) -> None:
    """403 for the word SERVICE or LOAD anywhere after ``parting``."""
    word = _REMOTE_LETTERS.search(text, parting.offset)  # (glued to anything, too)
    if word is not None:
        line, column = _Lines(text).position(word.start())
        raise RemoteAccessRefusedError(
            word.group().upper(), None,
            f"the {word.group()} at line {line}, column {column} comes after "
            f"{parting.text[:40]}, which the engine may read as \"less than\" and then a "
            "string or comment, so what it calls cannot be checked; write that IRI as a "
            "prefixed name (PREFIX; a ' as \\'), or put a space after < if it is \"less than\"")


def _check_size(text: str, policy: Policy) -> None:
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > policy.max_bytes:
        raise QueryTooLargeError(size, policy.max_bytes)
    if size >= _CHAINS_FROM:  # (shorter texts cannot hold the chains: see there)
        _check_chains(text)


# Chains the engine cannot take, though within the size limit and at bracket depth 1: each
# BIND, MINUS, VALUES or OPTIONAL of a group nests the algebra one level deeper, and each
# operator an expression's tree, and pyoxigraph 0.5.13 evaluates them recursively. It
# overflowed its stack (SIGSEGV, the worker lost) at 4,000 BINDs, MINUS or VALUES in a group
# and at 8,000 "+" in one expression (2,000 and 4,000 ran); a review's find, probed here.
MAX_CLAUSES = 1_000
MAX_OPERATORS = 3_000
_NESTING_CLAUSES = ("BIND", "MINUS", "VALUES", "OPTIONAL")
_OPERATORS = frozenset({"+", "-", "*", "/", "||", "&&", "=", "!=", "<", ">", "<=", ">=", "!",
                        "^", "|"})
# No shorter text can hold more than those: a clause takes 6 characters at least, an operator 2
# with its operand. (So usual queries pay nothing for this check.)
_CHAINS_FROM = min(6 * MAX_CLAUSES, 2 * MAX_OPERATORS)


def _check_chains(text: str) -> None:
    """Refuse a query with more nesting clauses or operators than the engine can take."""
    # Counted in C first, wherever they stand (strings, IRIs, comments and longer words too):
    # an upper bound, enough for almost every text.
    upper = text.upper()
    clauses = sum(map(upper.count, _NESTING_CLAUSES))
    operators = sum(map(text.count, "+-*/|&=<>!^"))
    if clauses <= MAX_CLAUSES and operators <= MAX_OPERATORS:
        return
    clauses = operators = 0
    try:
        for token in tokenize(text):
            if token.kind == "punct":
                operators += token.text in _OPERATORS
            elif token.kind == "word":
                clauses += token.text.upper() in _NESTING_CLAUSES
    except QuerySyntaxError:
        return  # (the checks after this one say where)
    if clauses > MAX_CLAUSES:
        raise QueryChainTooLongError(
            "BIND, MINUS, VALUES and OPTIONAL clauses", clauses, MAX_CLAUSES,
            "Put the values in one VALUES block, or split the query.")
    if operators > MAX_OPERATORS:
        raise QueryChainTooLongError(
            "operators (+, -, *, /, ||, &&, comparisons, path steps)", operators, MAX_OPERATORS,
            "Write a long chain of || as IN (…), or split the query.")


def _check_full(text: str, policy: Policy) -> Checked:
    """The checks, token by token: the reference for :func:`_check_fast`, and its fallback."""
    _check_size(text, policy)
    tokens = list(tokenize(text))
    _check_depth(text, tokens, policy.max_depth)
    parting = _where_readings_part(text, tokens)
    if parting is not None:
        _check_after_parting(text, parting)
    if not tokens:
        raise QuerySyntaxError("the query is empty", line=1, column=1)

    # Each prefix with the base it was declared under, resolved only when a SERVICE or LOAD
    # names it: resolved at once, 4,000 relative PREFIX lines under a 40 KB BASE cost this
    # check 4.6 s (before any time limit runs).
    prefixes: dict[str, tuple[str, str | None]] = {
        name: (iri, None) for name, iri in (policy.default_prefixes or {}).items()}
    base: str | None = None
    bases = 0
    form: str | None = None
    has_dataset = False
    volatile = False
    remote: list[str] = []
    used: set[str] = set()  # the prefixes of prefixed names, and the names declared, with ":"
    declared: set[str] = set()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        keyword = token.keyword
        if keyword == "PREFIX" and i + 2 < len(tokens) and tokens[i + 2].kind == "iri":
            name = tokens[i + 1].text
            if name.endswith(":"):
                prefixes[name[:-1]] = (_iri_value(tokens[i + 2].text), base)
            declared.add(name)  # (used holds only prefixes and ":", so `ex:a` changes nothing)
            i += 3
            continue
        _check_glued_keyword(token, update=form == "UPDATE")
        if token.kind == "pname":
            used.add(token.text[: token.text.index(":") + 1])
        if keyword == "BASE" and i + 1 < len(tokens) and tokens[i + 1].kind == "iri":
            bases += 1
            if bases > MAX_BASES:
                # Each relative BASE is resolved against the last, which grows: 10,000 of
                # `BASE <a/>` (100 KB) took this check 3.4 s, before any time limit runs.
                line, column = _Lines(text).position(token.offset)
                raise QuerySyntaxError(
                    f"syntax error at line {line}, column {column}: more than {MAX_BASES} "
                    "BASE declarations; one is enough", line=line, column=column)
            base = _resolve(_iri_value(tokens[i + 1].text), base)
            i += 2
            continue
        if form is None and keyword is not None and keyword != "VERSION":
            if keyword in QUERY_FORMS:
                form = keyword
            elif keyword in UPDATE_FORMS:
                form = "UPDATE"
            else:
                line, column = _Lines(text).position(token.offset)
                raise QuerySyntaxError(
                    f"syntax error at line {line}, column {column}: expected SELECT, "
                    f"CONSTRUCT, DESCRIBE or ASK (or an update), found {token.text!r}",
                    line=line,
                    column=column,
                )
        if keyword in VOLATILE:
            volatile = True
        if keyword == "FROM":
            has_dataset = True
        elif keyword in ("SERVICE", "LOAD"):
            iri = _target(keyword, tokens, i + 1, prefixes, base)
            check_remote_iri(keyword, iri, policy)
            remote.append(iri)
        i += 1
    if form is None:
        line, column = _Lines(text).position(tokens[-1].offset)
        raise QuerySyntaxError(
            f"syntax error at line {line}, column {column}: the text ends before "
            "SELECT, CONSTRUCT, DESCRIBE or ASK",
            line=line,
            column=column,
        )
    _check_iri_bodies(tokens, update=form == "UPDATE")
    return Checked(form=form, has_dataset_clause=has_dataset, remote_iris=tuple(remote),
                   volatile=volatile or parting is not None,
                   needs_default_prefixes=not used <= declared)


# ---------------------------------------------------------------------------------------
# The fast path. _check_full makes a Token per token and walks them in Python: ~60 µs for a
# typical 440-character query with seven PREFIX lines (as long as the engine then takes to
# answer it), 750 µs at 5 KiB, 13 ms at 90 KiB. Most queries need little of that: no SERVICE,
# LOAD or BASE, shallow brackets, their form keyword first. For them the re engine does the
# scanning in C and hands back only the words, brackets, prefixes and names declared: ~11 µs,
# 100 µs, 1.8 ms. Anything else, every error included, goes on to _check_full, which stays the
# reference: tests/test_guard.py checks on generated texts that both give the same answer or
# error.

# The punctuation in two: brackets, and the rest, read as "punct" reads it (it takes "<<", ">>"
# and "|}" as brackets before "<", ">", "|" and "||").
_PUNCT_OTHER = r"\^\^?|<(?!<)=?|>(?!>)=?|\|(?!\})\|?|&&|!=?|[;,.=+\-*/?~]"
_BRACKET = r"<<\(|\)>>|<<|>>|\{\||\|\}|[{}()\[\]]"
_SEPARATOR = rf"(?:{_TERMINALS['ws']}|{_TERMINALS['comment']})*+"
# The word PREFIX alone (no prefixed name starts there), a prefixed name (in group 1), an IRI.
_PREFIX_DECL = (
    rf"[Pp][Rr][Ee][Ff][Ii][Xx](?![{_PN_CHARS}.:])"
    rf"{_SEPARATOR}(?>({_PNAME_FAST})){_SEPARATOR}(?>{_IRIREF_FAST})"
)
# A run of [PN_CHARS.] in which no prefixed name starts (one did not match just before) and
# made of words and "." and "-" only, which tokenize() cuts into just those (see "run" there; no
# digit follows a ".", so there is no number).
_WORDS_RUN = (
    rf"[A-Za-z][A-Za-z0-9_]*+(?:[.\-]++[A-Za-z][A-Za-z0-9_]*+)*+[.\-]*+(?![{_PN_CHARS}.])"
)
_STEPPED_OVER = "|".join(
    _FASTER.get(kind, pattern) for kind, pattern in _TERMINALS.items()
    if kind not in ("pname", "word", "punct")
) + f"|{_PUNCT_OTHER}"
# One match: a run of the tokens that _check_full only steps over (the tokenizer's terminals
# in its order but for prefixed names, words and brackets, each atomic, so the run is cut into
# tokens as tokenize() cuts it), then one of: a `PREFIX p: <iri>` declaration (_check_full
# skips its name and IRI); in group 2 a word, the prefix of a prefixed name with its ":" (the
# local name follows only a ":", which no word or bracket ends with) or a bracket; the end of
# the text; or in group 3 a run of words, dots and hyphens, or else the rest of the text (from
# a character that no terminal reads, or from any other run of [PN_CHARS.]). Only prefixed
# names and words start with a letter or ":", so trying the other terminals first changes
# nothing, and _WORD_ALONE is no prefixed name. After a letter where no prefixed name starts, a
# word alone, a run or the rest reads on to the end of the run of [PN_CHARS.], so each letter
# is looked at a bounded number of times (as in tokenize(), where "word" is _WORD_ALONE too).
_FAST = re.compile(
    rf"(?>{_STEPPED_OVER})*+"
    rf"(?:{_PREFIX_DECL}"
    rf"|({_WORD_ALONE}|{_PN_PREFIX_FAST}|{_BRACKET})(?:(?<=:)(?:{_PN_LOCAL_FAST}))?"
    rf"|\Z|({_WORDS_RUN}|.+))",
    re.DOTALL,
)
_GROUPS = 4  # the parts of _FAST.split per match: the text skipped before it (none), groups 1-3
_WORDS_RUN_ALONE = re.compile(_WORDS_RUN)
_RUN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_DEPTH_STEP = {**dict.fromkeys(_OPENERS, 1), **dict.fromkeys(_CLOSERS, -1)}
_BRACKETS = _OPENERS | _CLOSERS
# PREFIX here is one that does not start a `PREFIX p: <iri>` declaration.
_NOT_FAST = frozenset({"PREFIX", "BASE", "SERVICE", "LOAD"})


def _check_fast(text: str, policy: Policy) -> Checked | None:
    """The checks for a usual query, or None when :func:`_check_full` has to decide.

    That is on any error, and for a SERVICE, LOAD or BASE, a PREFIX without a prefixed name
    and an IRI after it, or brackets that may nest deeper than the limit.
    """
    _check_size(text, policy)
    declared, at = _prologue(text)
    # Each match starts where the last one ended (where nothing else matches, \Z or "(.+)" does),
    # so the text skipped before a match, parts[0::_GROUPS], is always "".
    parts = _FAST.split(text[at:] if at else text)
    # The words, prefixes and brackets (none from PREFIX declarations), and the words of runs.
    words: list[str] | None = list(filter(None, parts[2::_GROUPS]))
    if any(parts[3::_GROUPS]):
        words = _with_runs(parts)
    if words is None:
        return None
    form = None
    for word in words:
        keyword = word.upper()
        if keyword in QUERY_FORMS:
            form = keyword
            break
        if keyword in UPDATE_FORMS:
            form = "UPDATE"
            break
        if keyword != "VERSION" and keyword not in _BRACKETS:
            return None
    if form is None:
        return None
    distinct = set(words)
    keywords = set(map(str.upper, distinct))
    if not keywords.isdisjoint(_NOT_FAST):
        return None
    limit = policy.max_depth  # the depth is at most the number of brackets
    if len(words) > limit and max(accumulate(map(_DEPTH_STEP.get, words, repeat(0)))) > limit:
        return None
    # Of the words, prefixes and brackets, only the prefixes hold a ":": one that is left once
    # the names declared are taken away is a prefix that no PREFIX declares.
    needs_default_prefixes = ":" in "".join(distinct.difference(declared, parts[1::_GROUPS]))
    return _usual_checked(
        form, "FROM" in keywords, not keywords.isdisjoint(VOLATILE), needs_default_prefixes
    )


# The declarations a query starts with: only `PREFIX p: <iri>`, with white space and comments.
# _FAST reads each as one match (PREFIX declarations come first in it), so the text after
# them reads the same on its own: its first token starts after the IRI's ">", and the
# look-behinds there see no ":" or "." either way.
_PROLOGUE = re.compile(rf"(?:(?>{_SEPARATOR}){_PREFIX_DECL})++")
# Prologues seen lately, with the names they declare, newest first. Clients send the same
# PREFIX lines before every query, most of a typical query's text: found here by comparing
# strings, they are not scanned again (the scan is the guard's cost: ~100 µs of a light
# query's, cold). A tuple, replaced whole, so that threads may read it as it changes.
_PROLOGUES: tuple[tuple[str, frozenset[str]], ...] = ()
_PROLOGUES_KEPT = 16
_PROLOGUE_WORTH_KEEPING = 64  # characters


def _prologue(text: str) -> tuple[frozenset[str], int]:
    """The names a prologue of PREFIX declarations at the start of ``text`` declares, and
    where it ends (0: none is known or worth keeping; the text is read whole)."""
    global _PROLOGUES
    for prologue, declared in _PROLOGUES:
        if text.startswith(prologue):
            return declared, len(prologue)
    if text[:1] not in ("P", "p", " ", "\t", "\r", "\n", "#"):
        return frozenset(), 0
    found = _PROLOGUE.match(text)
    if found is None or found.end() < _PROLOGUE_WORTH_KEEPING:
        return frozenset(), 0
    prologue = found.group()
    declared = frozenset(filter(None, _FAST.split(prologue)[1::_GROUPS]))
    _PROLOGUES = ((prologue, declared), *_PROLOGUES[:_PROLOGUES_KEPT - 1])
    return declared, len(prologue)


def _with_runs(parts: list[str | None]) -> list[str] | None:
    """The words, prefixes and brackets, with the words of runs like `a.b-c`; None if group 3
    holds the rest of the text, which no run can be: it would have matched as one before."""
    words: list[str] = []
    for one, run in zip(parts[2::_GROUPS], parts[3::_GROUPS], strict=True):
        if one:
            words.append(one)
        elif run:
            if not _WORDS_RUN_ALONE.fullmatch(run):
                return None
            words += _RUN_WORD.findall(run)
    return words


@functools.cache
def _usual_checked(
    form: str, has_dataset_clause: bool, volatile: bool, needs_default_prefixes: bool
) -> Checked:
    """One shared (frozen) Checked per outcome: making one costs more than a cache lookup."""
    return Checked(form=form, has_dataset_clause=has_dataset_clause, volatile=volatile,
                   needs_default_prefixes=needs_default_prefixes)


def _check_depth(text: str, tokens: Sequence[Token], limit: int) -> None:
    depth = 0
    for token in tokens:
        if token.kind != "punct":
            continue
        if token.text in _OPENERS:
            depth += 1
            if depth > limit:
                line, column = _Lines(text).position(token.offset)
                raise QueryTooDeepError(depth, limit, line, column)
        elif token.text in _CLOSERS:
            depth -= 1


def _target(
    keyword: str, tokens: Sequence[Token], i: int,
    prefixes: Mapping[str, tuple[str, str | None]], base: str | None
) -> str:
    """The IRI a SERVICE or LOAD names, or a refusal if it cannot be known before running."""
    if i < len(tokens) and tokens[i].keyword == "SILENT":
        i += 1
    if i >= len(tokens):
        raise RemoteAccessRefusedError(keyword, None, "no target IRI follows")
    token = tokens[i]
    if token.kind == "var":
        raise RemoteAccessRefusedError(
            keyword, None, f"the target is the variable {token.text}, which cannot be checked "
            "before the query runs; name the endpoint IRI"
        )
    if token.kind == "iri":
        return _resolve(_iri_value(token.text), base)
    if token.kind == "pname":
        prefix, _, local = token.text.partition(":")
        if prefix in prefixes:
            return _resolve(*prefixes[prefix]) + _unescape_local(local)
        raise RemoteAccessRefusedError(keyword, None, f"unknown prefix {prefix!r}")
    raise RemoteAccessRefusedError(keyword, None, f"expected an IRI, found {token.text!r}")


def _iri_value(iriref: str) -> str:
    body = iriref[1:-1]
    if "\\" in body:
        body = re.sub(
            r"\\u([0-9A-Fa-f]{4})|\\U([0-9A-Fa-f]{8})",
            lambda m: chr(int(m.group(1) or m.group(2), 16)),
            body,
        )
    return body


def _unescape_local(local: str) -> str:
    return re.sub(r"\\(.)", r"\1", local)


def _resolve(iri: str, base: str | None) -> str:
    try:
        return urljoin(base, iri) if base and not urlsplit(iri).scheme else iri
    except ValueError as exc:  # urllib refuses it (e.g. "http://[x": an unclosed IPv6 host)
        raise QuerySyntaxError(
            f"the IRI <{iri}> cannot be resolved against the base <{base}> ({exc}); "
            "correct the IRI or the BASE"
        ) from None


# ---------------------------------------------------------------------------------------
# Remote IRIs (SERVICE, LOAD): refused unless allowed, and never to internal addresses.

# Cloud metadata services, including the few that sit on globally routable addresses.
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254", "169.254.170.2", "169.254.169.123", "100.100.100.200",
        "192.0.0.192", "168.63.129.16", "fd00:ec2::254", "fd00:ec2::23",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_forbidden_address(address: str) -> bool:
    """True for loopback, private, link-local, multicast, unspecified, reserved, metadata.

    IPv6 forms that carry an IPv4 address (mapped, 6to4, Teredo, NAT64) are judged by it.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if ip.ipv4_mapped:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour:
            embedded.append(ip.sixtofour)
        if ip.teredo:
            embedded.extend(ip.teredo)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(is_forbidden_address(str(v4)) for v4 in embedded):
            return True
    return (
        ip in _METADATA
        or ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or not ip.is_global
    )


def _default_resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def check_remote_iri(keyword: str, iri: str, policy: Policy) -> None:
    """Refuse a SERVICE or LOAD target unless it is allowed and resolves to public addresses.

    Residual risk (DNS rebinding): pyoxigraph resolves the host again when it connects, so a
    host whose DNS answer changes between this check and that connection can still reach an
    internal address. The allow-list is the real control: list only hosts you trust to keep
    their DNS honest. The service description says so too.
    """
    if not policy.service_allow:
        raise RemoteAccessRefusedError(
            keyword, iri, "this endpoint does not call other services or fetch URLs "
            "(an operator can allow IRI prefixes with SASCI_KG_SERVICE_ALLOW)"
        )
    try:  # urllib refuses some IRIs outright: an unclosed IPv6 host, a port out of range
        parts = urlsplit(iri)
        hostname, port = parts.hostname, parts.port
        allowed = any(_matches_allowed(iri, parts, prefix) for prefix in policy.service_allow)
    except ValueError as exc:
        raise RemoteAccessRefusedError(keyword, iri, f"it is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise RemoteAccessRefusedError(keyword, iri, "only http and https IRIs can be allowed")
    if "@" in parts.netloc:
        raise RemoteAccessRefusedError(keyword, iri, "IRIs with user information are refused")
    if not allowed:
        raise RemoteAccessRefusedError(keyword, iri, "the IRI is not on this endpoint's allow-list")
    port = port or (443 if parts.scheme == "https" else 80)
    resolve = policy.resolve or _default_resolve
    try:
        addresses = resolve(hostname, port)
    except (OSError, UnicodeError) as exc:
        raise RemoteAccessRefusedError(keyword, iri, f"its host does not resolve ({exc})") from exc
    if not addresses:
        raise RemoteAccessRefusedError(keyword, iri, "its host does not resolve")
    bad = [a for a in addresses if is_forbidden_address(a)]
    if bad:
        raise RemoteAccessRefusedError(
            keyword, iri, f"its host resolves to an internal address ({bad[0]})"
        )


def _matches_allowed(iri: str, parts: SplitResult, allowed: str) -> bool:
    """A prefix match that cannot be fooled by `http://good.example@evil/` or `…example.evil`."""
    if not iri.startswith(allowed):
        return False
    allowed_parts = urlsplit(allowed)
    return (
        parts.scheme == allowed_parts.scheme
        and parts.hostname == allowed_parts.hostname
        and parts.port == allowed_parts.port
    )


def validate_allow_entry(entry: str) -> str:
    """Check one allow-list entry (an absolute http(s) IRI prefix with a host); return it."""
    parts = urlsplit(entry)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise ValueError(
            f"{entry!r} is not an absolute http(s) IRI prefix with a host "
            "(for example https://query.wikidata.org/sparql)"
        )
    if parts.path in ("",):
        # Without a path, `https://example.org` would also match `https://example.org.evil/`;
        # the host comparison stops that, but a slash makes the intent plain.
        return entry + "/"
    return entry
