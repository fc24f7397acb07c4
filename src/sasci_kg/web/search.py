"""``/search?q=``: ranked full-text search over names, labels, definitions and quotes, as a
page for people and as JSON for scripts and the pages' entity pickers.

Parameters: ``q`` (the words), ``kind`` (comma-separated or repeated: organisation, person,
session, quote, …), ``limit`` (1–100), ``format=json|html`` (else ``Accept`` decides).
"""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from ..search import HIT_KINDS, MAX_LIMIT
from .funders import current_graph, int_arg, render_page
from .negotiation import Format, choose_format
from .problems import BadRequestError
from .tracing import json_response

bp = Blueprint("search", __name__, template_folder="templates")

HTML = Format("html", "text/html", "html", "HTML", "")
JSON = Format("json", "application/json", "json", "JSON", "")


def wants_json() -> bool:
    """JSON for scripts (and a client with no preference), HTML for browsers; ``format=``
    decides first."""
    overrides = [v for v in request.args.getlist("format") if v.strip()]
    return choose_format(request.headers.get("Accept"), overrides, (JSON, HTML)) is JSON


def kinds_arg() -> list[str] | None:
    kinds = [k.strip() for value in request.args.getlist("kind") for k in value.split(",")
             if k.strip()]
    unknown = [k for k in kinds if k not in HIT_KINDS]
    if unknown:
        raise BadRequestError(f"kind: unknown kind(s) {', '.join(unknown)}; choose from "
                              f"{', '.join(HIT_KINDS)}")
    return kinds or None


@bp.get("/search")
def search() -> ResponseReturnValue:
    """Search results: JSON ``{"query", "hits": [...]}`` or the search page."""
    as_json = wants_json()
    text = request.args.get("q", "").strip()
    kinds = kinds_arg()
    limit = int_arg("limit", 20, 1, MAX_LIMIT)
    hits = current_graph().search_index().search(text, kinds=kinds, limit=limit) \
        if text else []
    if as_json:
        return json_response({"query": text, "kinds": kinds, "count": len(hits),
                              "hits": [h.to_dict() for h in hits]})
    return render_page("search.html", query=text, hits=hits, kinds=kinds or [],
                       all_kinds=HIT_KINDS)
