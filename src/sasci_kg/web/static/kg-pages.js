// The funders' pages: entity pickers fed by /search, and the network pictures made
// interactive (pan, zoom, click a node to open its page, mark a traced connection).
// Plain JavaScript over the SVG the package draws; no library, nothing from elsewhere.
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("kg-config").textContent);

  function localUrl(iri) {
    return iri.startsWith(config.base) ? config.root + "/" + iri.slice(config.base.length) : iri;
  }

  // The SVG writer's node ids: "n-" and the ref with anything odd turned into "-".
  function nodeId(ref) {
    return "n-" + ref.replace(/[^A-Za-z0-9_.-]/g, "-");
  }

  // ------------------------------------------------------------------------------------
  // Entity pickers: a datalist of the best search hits for what is being typed. Each
  // option's value is a ref (org/wcs-care), which every form here accepts.

  function setupPicker(input) {
    const list = document.getElementById(input.getAttribute("list"));
    if (!list) return;
    const kinds = input.dataset.picker;
    let timer = null;
    let asked = "";
    let controller = null;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const text = input.value.trim();
        if (text.length < 2 || text === asked || text.includes("/")) return;
        asked = text;
        if (controller) controller.abort();
        controller = new AbortController();
        const params = new URLSearchParams({ q: text, format: "json", limit: "8" });
        if (kinds) params.set("kind", kinds);
        try {
          const response = await fetch(`${config.root}/search?${params}`, {
            headers: { Accept: "application/json" }, signal: controller.signal,
          });
          if (!response.ok) return;
          const data = await response.json();
          list.replaceChildren(...data.hits.map((hit) => {
            const option = document.createElement("option");
            option.value = hit.ref;
            option.label = `${hit.label} (${hit.kind})`;
            option.textContent = `${hit.label} (${hit.kind})`;
            return option;
          }));
        } catch (error) {
          if (error.name !== "AbortError") list.replaceChildren();
        }
      }, 150);
    });
  }

  // ------------------------------------------------------------------------------------
  // Network pictures.

  function setupNetwork(figure) {
    const view = figure.querySelector(".network-view");
    const svg = view && view.querySelector("svg");
    if (!svg) return;
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    const box = svg.viewBox.baseVal;
    const home = { x: box.x, y: box.y, w: box.width, h: box.height };
    let current = { ...home };

    function apply() {
      svg.setAttribute("viewBox", `${current.x} ${current.y} ${current.w} ${current.h}`);
    }

    function toSvg(clientX, clientY) {
      const point = svg.createSVGPoint();
      point.x = clientX;
      point.y = clientY;
      return point.matrixTransform(svg.getScreenCTM().inverse());
    }

    function zoom(factor, cx, cy) {
      const width = Math.min(home.w * 4, Math.max(home.w / 25, current.w * factor));
      const f = width / current.w;
      current = { x: cx - (cx - current.x) * f, y: cy - (cy - current.y) * f, w: width, h: current.h * f };
      apply();
    }

    function zoomCentre(factor) {
      zoom(factor, current.x + current.w / 2, current.y + current.h / 2);
    }

    figure.querySelectorAll("[data-zoom]").forEach((button) => {
      button.addEventListener("click", () => {
        const how = button.dataset.zoom;
        if (how === "in") zoomCentre(1 / 1.4);
        else if (how === "out") zoomCentre(1.4);
        else { current = { ...home }; apply(); }
      });
    });

    view.addEventListener("wheel", (event) => {
      event.preventDefault();
      const p = toSvg(event.clientX, event.clientY);
      zoom(event.deltaY > 0 ? 1.15 : 1 / 1.15, p.x, p.y);
    }, { passive: false });

    // Drag to pan; a drag is not a click.
    let drag = null;
    let dragged = false;
    view.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      drag = { x: event.clientX, y: event.clientY, start: { ...current }, scale: 1 / svg.getScreenCTM().a };
      dragged = false;
    });
    view.addEventListener("pointermove", (event) => {
      if (!drag) return;
      const dx = event.clientX - drag.x;
      const dy = event.clientY - drag.y;
      if (!dragged && Math.hypot(dx, dy) < 4) return;
      if (!dragged) {
        dragged = true;
        view.classList.add("dragging");
        view.setPointerCapture(event.pointerId);
      }
      current = { ...drag.start, x: drag.start.x - dx * drag.scale, y: drag.start.y - dy * drag.scale };
      apply();
    });
    function endDrag() {
      drag = null;
      view.classList.remove("dragging");
    }
    view.addEventListener("pointerup", endDrag);
    view.addEventListener("pointercancel", endDrag);

    // Nodes open their pages: by click, or Enter when focused.
    svg.querySelectorAll("g.node").forEach((node) => {
      const title = node.querySelector("title");
      node.setAttribute("tabindex", "0");
      node.setAttribute("role", "link");
      if (title) node.setAttribute("aria-label", title.textContent);
      const open = () => { window.location.href = localUrl(node.dataset.iri); };
      node.addEventListener("click", (event) => {
        if (dragged) { event.preventDefault(); dragged = false; return; }
        open();
      });
      node.addEventListener("keydown", (event) => {
        if (event.key === "Enter") open();
      });
    });

    const initial = JSON.parse(figure.dataset.highlight || "[]");
    if (initial.length) highlight(svg, initial);
  }

  // Mark a path (refs in order) in a picture: its nodes, and the lines between
  // consecutive ones (a line's ends sit exactly on its nodes' centres).
  function highlight(svg, refs) {
    const at = new Map();
    const nodes = [...svg.querySelectorAll("g.node")];
    nodes.forEach((node) => {
      const circle = node.querySelector("circle");
      if (circle) at.set(`${circle.getAttribute("cx")},${circle.getAttribute("cy")}`, node.id);
    });
    const ids = refs.map(nodeId);
    const marked = new Set(ids);
    const pairs = new Set();
    for (let i = 1; i < ids.length; i += 1) {
      pairs.add(`${ids[i - 1]}|${ids[i]}`);
      pairs.add(`${ids[i]}|${ids[i - 1]}`);
    }
    nodes.forEach((node) => {
      node.classList.remove("faded");
      node.classList.toggle("hl", marked.has(node.id));
      node.classList.toggle("dim", ids.length > 0 && !marked.has(node.id));
    });
    svg.querySelectorAll("line.edge").forEach((line) => {
      const a = at.get(`${line.getAttribute("x1")},${line.getAttribute("y1")}`);
      const b = at.get(`${line.getAttribute("x2")},${line.getAttribute("y2")}`);
      const on = pairs.has(`${a}|${b}`);
      line.classList.remove("faded");
      line.classList.toggle("hl", on);
      line.classList.toggle("dim", ids.length > 0 && !on);
    });
    return ids.every((id) => svg.getElementById(id));
  }

  // The tracing page: "Show in the picture" marks another of the connections found.
  function setupPathButtons() {
    const figure = document.querySelector("figure.network");
    const svg = figure && figure.querySelector("svg");
    if (!svg) return;
    document.querySelectorAll(".path .show-path").forEach((button) => {
      button.addEventListener("click", () => {
        const refs = JSON.parse(button.closest(".path").dataset.nodes);
        highlight(svg, refs);
        figure.scrollIntoView({ behavior: "smooth", block: "nearest" });
      });
    });
  }

  // The network page: mark a connection in place (the server draws it when the
  // picture lacks some of its nodes, or without JavaScript).
  function setupHighlightForm() {
    const form = document.getElementById("highlight-form");
    const svg = document.querySelector("figure.network svg");
    const status = document.getElementById("highlight-status");
    if (!form || !svg || !status) return;
    form.addEventListener("submit", async (event) => {
      const from = form.elements.from.value.trim();
      const to = form.elements.to.value.trim();
      if (!from || !to) return;
      event.preventDefault();
      const params = new URLSearchParams({ from, to, paths: "1" });
      if (config.networkKinds.length) params.set("links", config.networkKinds.join(","));
      status.textContent = "Tracing…";
      let data;
      try {
        const response = await fetch(`${config.root}/api/trace?${params}`, { headers: { Accept: "application/json" } });
        data = await response.json();
        if (!response.ok) {
          showProblem(status, data, form);
          return;
        }
      } catch (error) {
        form.submit();
        return;
      }
      if (!data.paths.length) {
        highlight(svg, []);
        status.textContent = data.headline + ".";
        return;
      }
      const refs = data.paths[0].nodes.map((n) => n.ref);
      if (!highlight(svg, refs)) {
        form.submit(); // some of the path is outside this picture: let the server draw it
        return;
      }
      status.textContent = `${data.headline}. ${data.paths[0].explanation}`;
      const url = new URL(window.location.href);
      url.searchParams.set("from", from);
      url.searchParams.set("to", to);
      window.history.replaceState(null, "", url);
    });
  }

  function showProblem(status, problem, form) {
    status.replaceChildren(document.createTextNode(problem.detail || problem.title || "Not found"));
    const suggestions = problem.suggestions || [];
    if (!suggestions.length) return;
    const list = document.createElement("ul");
    list.className = "suggestions";
    suggestions.forEach((s) => {
      const item = document.createElement("li");
      const pick = document.createElement("button");
      pick.type = "button";
      pick.className = "pick";
      pick.textContent = `${s.label} (${s.kind})`;
      pick.addEventListener("click", () => {
        form.elements[problem.parameter].value = s.ref;
        form.requestSubmit();
      });
      item.append(pick);
      list.append(item);
    });
    status.append(list);
  }

  document.querySelectorAll("input[data-picker]").forEach(setupPicker);
  document.querySelectorAll("figure.network").forEach(setupNetwork);
  setupPathButtons();
  setupHighlightForm();
})();
