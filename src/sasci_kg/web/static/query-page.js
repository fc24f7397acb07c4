// The sasci-kg query page: editor, named-query examples, running queries against the
// endpoint, rendering results, share and download links. Hand-written, no dependencies;
// every address it needs comes from the page's JSON config, none is written here.
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("sasci-config").textContent);
  const formatsByKey = new Map(config.formats.map((f) => [f.key, f]));
  // Longest namespace first, so `organisation:` wins over a shorter enclosing namespace.
  const prefixList = Object.entries(config.prefixes).sort((a, b) => b[1].length - a[1].length);
  const XSD = config.prefixes.xsd;
  const RDF = config.prefixes.rdf;
  const RESULTS_JSON = "application/sparql-results+json";
  const TURTLE = "text/turtle";
  const MAX_TEXT = 2000000; // characters of raw text the page shows (downloads have it all)

  const $ = (id) => document.getElementById(id);
  const textarea = $("query");
  const highlight = $("highlight").firstElementChild;
  const highlightPre = $("highlight");
  const gutter = $("gutter");
  const form = $("query-form");
  const formatSelect = $("format");
  const runButton = $("run");
  const stopButton = $("stop");
  const statusLine = $("status");
  const resultBody = $("result-body");
  const shareInput = $("share-url");
  const copyButton = $("copy-share");

  // ------------------------------------------------------------------------------------
  // Small helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child);
    }
    return node;
  }

  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  function plural(n, word) {
    return `${n.toLocaleString("en")} ${word}${n === 1 ? "" : "s"}`;
  }

  function formatMs(ms) {
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
  }

  // ------------------------------------------------------------------------------------
  // IRIs: compact names with the default prefixes, and links (our own IRIs stay local)

  const PN_LOCAL = /^[A-Za-z0-9_\u00C0-\uFFFF](?:[A-Za-z0-9_\-.\u00B7-\uFFFF]*[A-Za-z0-9_\-\u00B7-\uFFFF])?$/;

  function compactIri(iri) {
    for (const [prefix, namespace] of prefixList) {
      if (iri.startsWith(namespace)) {
        const local = iri.slice(namespace.length);
        if (local === "" || PN_LOCAL.test(local)) return `${prefix}:${local}`;
      }
    }
    return `<${iri}>`;
  }

  // The server answers for every IRI under the base at the same path under its root.
  function iriHref(iri) {
    if (iri.startsWith(config.base)) return config.root + iri.slice(config.base.length);
    return iri;
  }

  function iriLink(iri, text) {
    const link = el("a", { href: iriHref(iri), class: "iri", title: iri, text: text || compactIri(iri) });
    if (!iri.startsWith(config.base)) link.rel = "noopener noreferrer";
    return link;
  }

  // ------------------------------------------------------------------------------------
  // Syntax highlighting: one regular expression, token classes by capture group

  const SPARQL_TOKENS = new RegExp(
    [
      /(#[^\n]*)/.source, // 1 comment
      /("""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?)/.source, // 2 string
      /(<[^<>"{}|^`\\\s]*>)/.source, // 3 IRI
      /([?$][A-Za-z0-9_\u00B7-\uFFFF]+)/.source, // 4 variable
      /((?:[A-Za-z\u00C0-\uFFFF][\w\-\u00B7-\uFFFF]*)?:(?:[\w\-%:\u00B7-\uFFFF]|\.(?=[\w\-%:]))*)/.source, // 5 prefixed name
      /(@[A-Za-z]+(?:-[A-Za-z0-9]+)*)/.source, // 6 language tag
      /([A-Za-z_][\w]*)/.source, // 7 word
      /(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)/.source, // 8 number
    ].join("|"),
    "g",
  );

  const KEYWORDS = new Set(
    ("select distinct reduced as construct describe ask from named where order by asc desc limit offset " +
      "values optional union minus graph service silent filter bind group having prefix base not exists in " +
      "undef a true false load clear drop create add move copy insert delete data with using default all to into")
      .split(" "),
  );
  const FUNCTIONS = new Set(
    ("count sum min max avg sample group_concat separator str lang langmatches datatype bound iri uri bnode " +
      "rand abs ceil floor round concat strlen ucase lcase encode_for_uri contains strstarts strends strbefore " +
      "strafter year month day hours minutes seconds timezone tz now uuid struuid md5 sha1 sha256 sha384 sha512 " +
      "coalesce if strlang strdt sameterm isiri isuri isblank isliteral isnumeric regex substr replace")
      .split(" "),
  );

  function highlightSparql(text) {
    let html = "";
    let last = 0;
    SPARQL_TOKENS.lastIndex = 0;
    for (let m = SPARQL_TOKENS.exec(text); m; m = SPARQL_TOKENS.exec(text)) {
      if (m[0] === "") {
        SPARQL_TOKENS.lastIndex++;
        continue;
      }
      html += escapeHtml(text.slice(last, m.index));
      last = m.index + m[0].length;
      let cls = null;
      if (m[1] !== undefined) cls = "comment";
      else if (m[2] !== undefined) cls = "string";
      else if (m[3] !== undefined) cls = "iri";
      else if (m[4] !== undefined) cls = "variable";
      else if (m[5] !== undefined) cls = "pname";
      else if (m[6] !== undefined) cls = "lang";
      else if (m[7] !== undefined) {
        const word = m[7].toLowerCase();
        cls = KEYWORDS.has(word) ? "keyword" : FUNCTIONS.has(word) ? "function" : null;
      } else if (m[8] !== undefined) cls = "number";
      const escaped = escapeHtml(m[0]);
      html += cls ? `<span class="tok-${cls}">${escaped}</span>` : escaped;
    }
    return html + escapeHtml(text.slice(last));
  }

  // ------------------------------------------------------------------------------------
  // Editor

  let errorLine = 0;
  let lineCount = 0;

  function renderEditor() {
    const text = textarea.value;
    // A trailing newline needs a character after it, or the copy is one line short.
    highlight.innerHTML = highlightSparql(text) + (text.endsWith("\n") || text === "" ? " " : "");
    const lines = text.split("\n").length;
    if (lines !== lineCount || gutter.dataset.errorLine !== String(errorLine)) {
      lineCount = lines;
      gutter.dataset.errorLine = String(errorLine);
      const frag = document.createDocumentFragment();
      for (let i = 1; i <= lines; i++) {
        frag.append(el("span", { class: i === errorLine ? "error-line" : null, text: String(i) }));
      }
      gutter.replaceChildren(frag);
    }
    syncScroll();
  }

  function syncScroll() {
    highlightPre.scrollTop = textarea.scrollTop;
    highlightPre.scrollLeft = textarea.scrollLeft;
    gutter.scrollTop = textarea.scrollTop;
  }

  // Insert text at the selection, keeping the browser's undo history where it can.
  function replaceSelection(text, selectInserted) {
    const start = textarea.selectionStart;
    textarea.focus();
    const done = document.execCommand && document.execCommand("insertText", false, text);
    if (!done) {
      textarea.setRangeText(text, textarea.selectionStart, textarea.selectionEnd, "end");
      textarea.dispatchEvent(new Event("input", { bubbles: true }));
    }
    if (selectInserted) textarea.setSelectionRange(start, start + text.length);
  }

  const INDENT = "  ";
  let escapePressed = false;

  function indent(outdent) {
    const value = textarea.value;
    const start = textarea.selectionStart;
    const end = textarea.selectionEnd;
    const multiLine = value.slice(start, end).includes("\n");
    if (!outdent && !multiLine) {
      replaceSelection(INDENT, false);
      return;
    }
    const lineStart = value.lastIndexOf("\n", start - 1) + 1;
    const blockEnd = end > start && value[end - 1] === "\n" ? end - 1 : end;
    const block = value.slice(lineStart, blockEnd);
    const changed = block
      .split("\n")
      .map((line) => (outdent ? line.replace(/^( {1,2}|\t)/, "") : INDENT + line))
      .join("\n");
    if (changed === block) return;
    textarea.setSelectionRange(lineStart, blockEnd);
    replaceSelection(changed, true);
  }

  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      run();
      return;
    }
    if (event.key === "Escape") {
      // Esc, then Tab, moves focus on instead of indenting: the editor is no keyboard trap.
      escapePressed = true;
      return;
    }
    if (event.key === "Tab" && !event.ctrlKey && !event.altKey && !event.metaKey) {
      if (escapePressed) {
        escapePressed = false;
        return;
      }
      event.preventDefault();
      indent(event.shiftKey);
      return;
    }
    if (event.key !== "Shift") escapePressed = false;
  });

  textarea.addEventListener("input", () => {
    if (errorLine) errorLine = 0;
    renderEditor();
    scheduleLinks();
  });
  textarea.addEventListener("scroll", syncScroll);

  function goTo(line, column) {
    const lines = textarea.value.split("\n");
    const l = Math.min(Math.max(line, 1), lines.length);
    let offset = 0;
    for (let i = 0; i < l - 1; i++) offset += lines[i].length + 1;
    offset += Math.min(Math.max((column || 1) - 1, 0), lines[l - 1].length);
    textarea.focus();
    textarea.setSelectionRange(offset, Math.min(offset + 1, offset + lines[l - 1].length));
    // Bring the line into view: the textarea scrolls to the caret only on some browsers.
    const lineHeight = parseFloat(getComputedStyle(textarea).lineHeight) || 21;
    const top = (l - 1) * lineHeight;
    if (top < textarea.scrollTop || top > textarea.scrollTop + textarea.clientHeight - lineHeight * 2) {
      textarea.scrollTop = Math.max(0, top - textarea.clientHeight / 3);
    }
    syncScroll();
  }

  // ------------------------------------------------------------------------------------
  // Share and download links: always for the query in the editor

  function pageUrl(query, format) {
    const params = new URLSearchParams({ query });
    if (format) params.set("format", format);
    return `${config.root}?${params}`;
  }

  function downloadUrl(query, format) {
    const params = new URLSearchParams({ query, format, download: "1" });
    return `${config.endpoint}?${params}`;
  }

  function updateLinks() {
    const query = textarea.value;
    shareInput.value = new URL(pageUrl(query, formatSelect.value), document.baseURI).href;
    for (const link of document.querySelectorAll("a.download")) {
      link.href = downloadUrl(query, link.dataset.format);
    }
  }

  let linksTimer = 0;
  function scheduleLinks() {
    clearTimeout(linksTimer);
    linksTimer = setTimeout(updateLinks, 150);
  }

  function markKind(kind) {
    for (const group of document.querySelectorAll(".download-group")) {
      group.toggleAttribute("data-inactive", Boolean(kind) && group.dataset.kind !== kind);
    }
  }

  copyButton.addEventListener("click", async () => {
    updateLinks();
    try {
      await navigator.clipboard.writeText(shareInput.value);
    } catch {
      shareInput.select();
      document.execCommand("copy");
    }
    copyButton.textContent = "Copied";
    setTimeout(() => (copyButton.textContent = "Copy link"), 1500);
  });
  shareInput.addEventListener("focus", () => shareInput.select());
  formatSelect.addEventListener("change", updateLinks);

  // ------------------------------------------------------------------------------------
  // Rendering results

  function setStatus(text, running) {
    statusLine.textContent = text;
    statusLine.classList.toggle("running", Boolean(running));
  }

  function renderTerm(term) {
    if (!term) return el("span", { class: "unbound", title: "unbound", text: "—" });
    switch (term.type) {
      case "uri":
        return iriLink(term.value);
      case "bnode":
        return el("span", { class: "bnode", text: `_:${term.value}` });
      case "triple": {
        const t = term.value;
        return el("span", { class: "triple" }, "<< ", renderTerm(t.subject), " ", renderTerm(t.predicate), " ",
          renderTerm(t.object), " >>");
      }
      default: {
        // "literal", and "typed-literal" from older servers
        const span = el("span", { class: "literal-term" }, el("span", { class: "literal", text: term.value }));
        const lang = term["xml:lang"];
        if (lang) {
          span.append(el("span", { class: "term-meta", title: "language", text: `@${lang}` }));
        } else if (term.datatype && term.datatype !== `${XSD}string` && term.datatype !== `${RDF}langString`) {
          const meta = el("span", { class: "term-meta", title: term.datatype }, "^^");
          meta.append(iriLink(term.datatype));
          span.append(meta);
        }
        return span;
      }
    }
  }

  function renderTable(data) {
    const vars = data.head.vars || [];
    const rows = data.results.bindings;
    const shown = rows.slice(0, config.renderLimit);
    const headRow = el("tr", {}, el("th", { scope: "col", class: "row-number", text: "#" }));
    for (const v of vars) headRow.append(el("th", { scope: "col", text: `?${v}` }));
    const tbody = el("tbody");
    shown.forEach((row, i) => {
      const tr = el("tr", {}, el("td", { class: "row-number", text: String(i + 1) }));
      for (const v of vars) tr.append(el("td", {}, renderTerm(row[v])));
      tbody.append(tr);
    });
    const table = el("table", { class: "result-table" }, el("thead", {}, headRow), tbody);
    const wrap = el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Result table" }, table);
    resultBody.replaceChildren(wrap);
    if (rows.length > shown.length) {
      resultBody.append(el("p", { class: "truncated",
        text: `Showing the first ${shown.length.toLocaleString("en")} of ${plural(rows.length, "row")}; ` +
          "the download links below carry them all." }));
    }
    return rows.length;
  }

  function renderBoolean(value) {
    resultBody.replaceChildren(el("p", { class: `boolean ${value}`, text: String(value) }));
  }

  // Turtle as text, with IRIs and prefixed names linked.
  const TURTLE_TOKENS = /(#[^\n]*)|("""[\s\S]*?"""|'''[\s\S]*?'''|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|<([^<>"{}|^`\\\s]*)>|((?:[A-Za-z\u00C0-\uFFFF][\w\-\u00B7-\uFFFF]*)?):((?:[\w\-%\u00B7-\uFFFF]|\\.|:|\.(?=[\w\-%:]))*)|(@[A-Za-z]+(?:-[A-Za-z0-9]+)*)/g;
  const TURTLE_PREFIX = /^\s*(?:@prefix|PREFIX)\s+([\w\-.\u00B7-\uFFFF]*):\s*<([^>]*)>/gim;

  function linkedTurtle(text) {
    const declared = new Map(Object.entries(config.prefixes));
    for (const m of text.matchAll(TURTLE_PREFIX)) declared.set(m[1], m[2]);
    let html = "";
    let last = 0;
    TURTLE_TOKENS.lastIndex = 0;
    for (let m = TURTLE_TOKENS.exec(text); m; m = TURTLE_TOKENS.exec(text)) {
      html += escapeHtml(text.slice(last, m.index));
      last = m.index + m[0].length;
      const escaped = escapeHtml(m[0]);
      if (m[1] !== undefined) html += `<span class="tok-comment">${escaped}</span>`;
      else if (m[2] !== undefined) html += `<span class="tok-string">${escaped}</span>`;
      else if (m[3] !== undefined) html += `<a class="tok-iri" href="${escapeHtml(iriHref(m[3]))}" title="${escapeHtml(m[3])}">${escaped}</a>`;
      else if (m[4] !== undefined && declared.has(m[4]) && !/^\s*(?:@prefix|PREFIX)\s+$/i.test(text.slice(text.lastIndexOf("\n", m.index - 1) + 1, m.index))) {
        const iri = declared.get(m[4]) + m[5].replace(/\\(.)/g, "$1");
        html += `<a class="tok-pname" href="${escapeHtml(iriHref(iri))}" title="${escapeHtml(iri)}">${escaped}</a>`;
      } else if (m[6] !== undefined) html += `<span class="tok-lang">${escaped}</span>`;
      else html += escaped;
    }
    return html + escapeHtml(text.slice(last));
  }

  function renderText(text, linked) {
    const truncated = text.length > MAX_TEXT;
    const shown = truncated ? text.slice(0, MAX_TEXT) : text;
    const pre = el("pre", { class: linked ? "rdf-text" : "raw-text", tabindex: "0" });
    if (linked) pre.innerHTML = linkedTurtle(shown);
    else pre.textContent = shown;
    resultBody.replaceChildren(pre);
    if (truncated) {
      resultBody.append(el("p", { class: "truncated", text: "The result is long: the page shows its start; the download links below carry it all." }));
    }
  }

  function renderProblem(problem, query) {
    const box = el("div", { class: "problem", role: "alert" });
    box.append(el("h3", { text: problem.title || "The query failed" }));
    if (problem.detail) box.append(el("p", { class: "detail", text: problem.detail }));
    const line = Number(problem.line);
    if (line > 0) {
      const column = Number(problem.column) > 0 ? Number(problem.column) : 0;
      box.append(el("p", { class: "where", text: column ? `Line ${line}, column ${column}` : `Line ${line}` }));
      const source = query.split("\n")[line - 1];
      if (source !== undefined) {
        const marker = column ? `\n${" ".repeat(Math.max(column - 1, 0))}^` : "";
        box.append(el("pre", { class: "excerpt", text: `${source}${marker}` }));
      }
      const button = el("button", { type: "button", text: "Show in the editor" });
      button.addEventListener("click", () => goTo(line, column));
      box.append(button);
      errorLine = line;
      renderEditor();
    }
    resultBody.replaceChildren(box);
  }

  // ------------------------------------------------------------------------------------
  // Running a query

  let controller = null;

  function acceptFor(format) {
    if (format && formatsByKey.has(format)) return formatsByKey.get(format).mediaType;
    // Let the endpoint pick by query form: result sets as JSON, graphs as Turtle.
    return `${RESULTS_JSON}, ${TURTLE};q=0.9`;
  }

  function parseProblem(response, body) {
    const type = (response.headers.get("Content-Type") || "").toLowerCase();
    if (type.includes("json")) {
      try {
        const data = JSON.parse(body);
        if (data && typeof data === "object") return data;
      } catch {
        // not JSON after all: fall through to the plain text
      }
    }
    return { title: `${response.status} ${response.statusText}`.trim(), detail: body.slice(0, 4000) };
  }

  async function run() {
    const query = textarea.value;
    const format = formatSelect.value;
    errorLine = 0;
    renderEditor();
    updateLinks();
    history.replaceState(null, "", pageUrl(query, format));
    if (!query.trim()) {
      setStatus("Write a query first.");
      resultBody.replaceChildren();
      return;
    }
    if (controller) controller.abort();
    const current = (controller = new AbortController());
    runButton.disabled = true;
    stopButton.hidden = false;
    setStatus("Running…", true);
    resultBody.setAttribute("aria-busy", "true");
    const started = performance.now();
    let response;
    let body;
    try {
      response = await fetch(config.endpoint, {
        method: "POST",
        headers: { Accept: acceptFor(format) },
        body: new URLSearchParams({ query }),
        signal: current.signal,
      });
      body = await response.text();
    } catch (error) {
      if (current !== controller) return; // a newer run took over
      finish();
      if (error.name === "AbortError") {
        setStatus("Stopped.");
      } else {
        setStatus("The query failed.");
        renderProblem({ title: "Could not reach the endpoint", detail: String(error.message || error) }, query);
      }
      return;
    }
    if (current !== controller) return;
    finish();
    const elapsed = formatMs(performance.now() - started);
    const type = (response.headers.get("Content-Type") || "").split(";")[0].trim().toLowerCase();
    if (!response.ok) {
      setStatus(`Failed after ${elapsed} (HTTP ${response.status}).`);
      renderProblem(parseProblem(response, body), query);
      markKind(null);
      return;
    }
    const kind = config.formats.find((f) => f.mediaType === type)?.kind || null;
    markKind(kind);
    try {
      if (!format && type === RESULTS_JSON) {
        const data = JSON.parse(body);
        if (typeof data.boolean === "boolean") {
          renderBoolean(data.boolean);
          setStatus(`ASK answered ${data.boolean} in ${elapsed}.`);
        } else {
          const rows = renderTable(data);
          setStatus(`${plural(rows, "row")} in ${elapsed}.`);
        }
      } else {
        renderText(body, type === TURTLE || type === "application/trig");
        // The endpoint counts what it sent (rows, or triples for a graph).
        const counted = Number.parseInt(response.headers.get("X-Result-Rows") || "", 10);
        const size = Number.isNaN(counted)
          ? plural(body.length, "character")
          : plural(counted, kind === "graph" ? "triple" : "row");
        const label = format ? formatsByKey.get(format)?.label || type : kind === "graph" ? "Graph as Turtle" : type;
        setStatus(`${label}, ${size} in ${elapsed}.`);
      }
    } catch (error) {
      setStatus(`Could not read the result (${elapsed}).`);
      renderProblem({ title: "The result could not be read", detail: String(error.message || error) }, query);
    }
  }

  function finish() {
    controller = null;
    runButton.disabled = false;
    stopButton.hidden = true;
    resultBody.removeAttribute("aria-busy");
  }

  stopButton.addEventListener("click", () => {
    if (controller) controller.abort();
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });

  // Named queries: one click loads and runs; a modified click still opens a new tab.
  for (const link of document.querySelectorAll("a.example")) {
    link.addEventListener("click", (event) => {
      if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      const query = new URL(link.href).searchParams.get("query") || "";
      textarea.value = query;
      textarea.scrollTop = 0;
      for (const other of document.querySelectorAll("a.example[aria-current]")) other.removeAttribute("aria-current");
      link.setAttribute("aria-current", "true");
      renderEditor();
      run();
      document.getElementById("results").scrollIntoView({ block: "nearest" });
    });
  }

  // ------------------------------------------------------------------------------------
  // Start

  document.getElementById("editor").classList.add("enhanced");
  for (const link of document.querySelectorAll("a.example")) {
    if (new URL(link.href).searchParams.get("query") === textarea.value) link.setAttribute("aria-current", "true");
  }
  renderEditor();
  updateLinks();
  if (config.autorun) run();
})();
