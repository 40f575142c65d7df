// weightscope view: the page. Plain JavaScript, no libraries; every figure comes from the server's JSON API.
"use strict";

// The token comes in the address once; the server has answered it with a cookie, so the
// address is rewritten without it (out of the address bar, the history and bookmarks).
const TOKEN = new URLSearchParams(location.search).get("token") || "";
if (TOKEN) {
  const rest = new URLSearchParams(location.search);
  rest.delete("token");
  const query = rest.toString();
  history.replaceState(history.state, "", location.pathname + (query ? `?${query}` : "") + location.hash);
}
const ROW = 22; // pixels per tree row
const VALUES_PAGE = 50;
const COLOURS = ["#1f77b4", "#ff7f0e"];

const state = {
  files: [],
  compare: false,
  file: 0,
  tensors: [],
  tree: [], // root nodes
  rows: [], // visible rows, flattened
  filter: "",
  selected: null, // tensor name
  detail: null, // /api/tensor answer of the selected tensor
  valuesOffset: 0,
  sequence: 0, // a newer selection makes older answers stale
  diff: null,
  diffSelected: null,
  spectrum: null, // /api/spectrum answer of the selected tensor
  anatomy: null,
  anatomySort: { key: "relative_change", descending: true },
};

const $ = (id) => document.getElementById(id);

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// A lone surrogate cannot travel in a URL (it would arrive as U+FFFD): such a name is sent as
// the command line prints it (weightscope.output.safe_text: \xNN for U+DC80..U+DCFF, which
// stand for bytes that were not UTF-8, else \uXXXX), which the server resolves to the tensor.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

function urlText(text) {
  return String(text).replace(LONE_SURROGATE, (char) => {
    const code = char.charCodeAt(0);
    if (code >= 0xdc80 && code <= 0xdcff) return `\\x${(code - 0xdc00).toString(16).padStart(2, "0")}`;
    return `\\u${code.toString(16)}`;
  });
}

async function api(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) query.set(key, urlText(value));
  const headers = TOKEN ? { "X-Weightscope-Token": TOKEN } : {}; // else the cookie, after a reload
  const response = await fetch(`/api/${path}?${query}`, { headers, credentials: "same-origin" });
  let document_ = null;
  try {
    document_ = await response.json();
  } catch (error) {
    throw new Error(`${path}: HTTP ${response.status}`);
  }
  if (!response.ok) throw new Error(document_.error || `${path}: HTTP ${response.status}`);
  return document_;
}

function showError(error) {
  const box = $("error");
  if (!error) {
    box.hidden = true;
    return;
  }
  box.textContent = String(error.message || error);
  box.hidden = false;
}

// -- numbers -----------------------------------------------------------------------------------

function fmt(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "string") return value; // "NaN", "Infinity"
  if (typeof value === "boolean") return String(value);
  if (Array.isArray(value)) return `(${value.map(fmt).join(", ")})`; // complex: [real, imag]
  if (typeof value === "object") {
    // a structured element: {field: value}
    return `{${Object.entries(value).map(([field, item]) => `${field}: ${fmt(item)}`).join(", ")}}`;
  }
  if (Number.isInteger(value) && Math.abs(value) < 1e15) return value.toLocaleString("en-US");
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e6 || magnitude < 1e-4) return value.toExponential(4);
  return String(Number(value.toPrecision(6)));
}

function fmtBytes(count) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let size = count;
  for (const unit of units) {
    if (size < 1024 || unit === "TiB") return unit === "B" ? `${count} B` : `${size.toFixed(1)} ${unit}`;
    size /= 1024;
  }
  return `${count} B`;
}

const shapeText = (shape) => `[${shape.join(", ")}]`;

function niceTicks(low, high, count) {
  if (!(high > low)) return [low];
  const raw = (high - low) / Math.max(1, count);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * power).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let tick = Math.ceil(low / step) * step; tick <= high + step * 1e-9; tick += step) {
    ticks.push(Math.abs(tick) < step * 1e-9 ? 0 : tick);
  }
  return ticks;
}

function tickText(value) {
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e5 || magnitude < 1e-3) return value.toExponential(1);
  return String(Number(value.toPrecision(4)));
}

// -- the tree: layers, optimizer state and bookkeeping, drawn lazily (only the rows in view) -------

function buildTree(tensors) {
  const branches = {
    parameter: { label: "Layers", groups: new Map(), loose: [] },
    optimizer: { label: "Optimizer state", groups: new Map(), loose: [] },
    bookkeeping: { label: "Bookkeeping", groups: new Map(), loose: [] },
  };
  for (const tensor of tensors) {
    tensor.lower = tensor.name.toLowerCase();
    const branch = branches[tensor.kind] || branches.bookkeeping;
    let key = null;
    if (tensor.kind === "parameter") key = tensor.layer;
    else if (tensor.kind === "optimizer") key = tensor.owner;
    if (key === null || key === undefined) {
      branch.loose.push(tensor);
      continue;
    }
    if (!branch.groups.has(key)) branch.groups.set(key, []);
    branch.groups.get(key).push(tensor);
  }
  const roots = [];
  for (const [kind, branch] of Object.entries(branches)) {
    const children = [];
    const many = branch.groups.size > 40;
    for (const [key, members] of branch.groups) {
      children.push({
        group: true,
        label: key,
        open: !many,
        children: members.map((tensor) => ({ tensor, label: leafLabel(tensor, key) })),
      });
    }
    for (const tensor of branch.loose) children.push({ tensor, label: tensor.name });
    const count = branch.loose.length + [...branch.groups.values()].reduce((sum, list) => sum + list.length, 0);
    if (!count) continue;
    const what = `${count.toLocaleString("en-US")} tensor${count === 1 ? "" : "s"}`;
    roots.push({ group: true, branch: true, kind, label: `${branch.label} · ${what}`, open: kind !== "optimizer" || count < 60, children });
  }
  return roots;
}

function leafLabel(tensor, key) {
  if (tensor.kind === "optimizer") {
    // Grouped under its variable (role.owner): the slot alone, without the variable's name that Keras 3 repeats in
    // it (adam/dense_kernel_momentum of dense/kernel is "momentum").
    let last = tensor.name.split(/[/.]/).pop();
    const flat = `${key.replace(/[/.]/g, "_")}_`;
    if (last.startsWith(flat) && last.length > flat.length) last = last.slice(flat.length);
    return tensor.role && tensor.role !== last ? `${last} (${tensor.role})` : last;
  }
  if (tensor.name.startsWith(key)) return tensor.name.slice(key.length).replace(/^[/.]/, "") || tensor.name;
  const at = tensor.name.lastIndexOf(key);
  if (at >= 0) return tensor.name.slice(at + key.length).replace(/^[/.]/, "") || tensor.name;
  return tensor.name;
}

function flatten() {
  const terms = state.filter.toLowerCase().split(/\s+/).filter(Boolean);
  const matches = (tensor) => terms.every((term) => tensor.lower.includes(term));
  const rows = [];
  let shown = 0;
  const walk = (node, depth) => {
    if (node.tensor) {
      if (terms.length && !matches(node.tensor)) return;
      rows.push({ node, depth });
      shown += 1;
      return;
    }
    const at = rows.length;
    rows.push({ node, depth });
    const before = shown;
    if (node.open || terms.length) {
      for (const child of node.children) walk(child, depth + 1);
    }
    if (terms.length && shown === before) rows.length = at; // no match below: hide the group
  };
  for (const root of state.tree) walk(root, 0);
  state.rows = rows;
  $("tree-count").textContent = terms.length
    ? `${shown.toLocaleString("en-US")} of ${state.tensors.length.toLocaleString("en-US")} tensors match`
    : `${state.tensors.length.toLocaleString("en-US")} tensors`;
  $("tree-spacer").style.height = `${rows.length * ROW}px`;
  renderTree(true);
}

let drawnRange = null;

function renderTree(force) {
  const tree = $("tree");
  const first = Math.max(0, Math.floor(tree.scrollTop / ROW) - 10);
  const last = Math.min(state.rows.length, Math.ceil((tree.scrollTop + tree.clientHeight) / ROW) + 10);
  if (!force && drawnRange && drawnRange[0] === first && drawnRange[1] === last) return;
  drawnRange = [first, last];
  const spacer = $("tree-spacer");
  const fragment = document.createDocumentFragment();
  for (let index = first; index < last; index += 1) {
    const { node, depth } = state.rows[index];
    const row = el("div", { class: "row", role: "treeitem" });
    row.style.top = `${index * ROW}px`;
    row.style.paddingLeft = `${6 + depth * 14}px`;
    row.dataset.index = index;
    if (node.tensor) {
      const tensor = node.tensor;
      row.dataset.name = tensor.name;
      row.title = `${tensor.name}  ${tensor.dtype} ${shapeText(tensor.shape)}`;
      if (tensor.name === state.selected) row.classList.add("selected");
      row.append(el("span", { class: "caret" }), node.label, " ", el("span", { class: "dim", text: `${tensor.dtype} ${shapeText(tensor.shape)}` }));
      if (state.filter && node.label !== tensor.name) row.append(" ", el("span", { class: "dim", text: tensor.name }));
    } else {
      row.classList.add("group");
      if (node.branch) row.classList.add("branch");
      row.dataset.group = node.label;
      row.setAttribute("aria-expanded", String(Boolean(node.open || state.filter)));
      row.append(el("span", { class: "caret", text: node.open || state.filter ? "▾" : "▸" }), node.label);
      if (!node.branch) row.append(" ", el("span", { class: "dim", text: `${node.children.length}` }));
    }
    fragment.append(row);
  }
  spacer.replaceChildren(fragment);
}

function onTreeClick(event) {
  const row = event.target.closest(".row");
  if (!row) return;
  const { node } = state.rows[Number(row.dataset.index)];
  if (node.tensor) {
    selectTensor(node.tensor.name);
  } else if (!state.filter) {
    node.open = !node.open;
    flatten();
  }
}

function revealInTree(name) {
  // Open the groups holding the tensor and scroll it into view.
  for (const root of state.tree) {
    for (const child of root.children) {
      const holds = child.tensor ? child.tensor.name === name : child.children.some((leaf) => leaf.tensor.name === name);
      if (holds) {
        root.open = true;
        if (!child.tensor) child.open = true;
      }
    }
  }
  flatten();
  const index = state.rows.findIndex((row) => row.node.tensor && row.node.tensor.name === name);
  if (index >= 0) {
    const tree = $("tree");
    if (index * ROW < tree.scrollTop || (index + 1) * ROW > tree.scrollTop + tree.clientHeight) {
      tree.scrollTop = Math.max(0, index * ROW - tree.clientHeight / 3);
    }
    renderTree(true);
  }
}

function debounce(action, wait) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => action(...args), wait);
  };
}

// -- views --------------------------------------------------------------------------------------

function showView(which) {
  for (const name of ["summary", "tensor", "diff", "anatomy"]) {
    $(`view-${name}`).hidden = name !== which;
    $(`tab-${name}`).classList.toggle("active", name === which);
  }
  document.body.dataset.view = which;
  if (which === "diff") loadDiff();
  if (which === "anatomy") loadAnatomy();
  if (which === "tensor" && state.detail) requestAnimationFrame(drawTensorPlots);
}

function kv(table, pairs) {
  table.replaceChildren(...pairs.map(([key, value]) => el("tr", null, el("th", { text: key }), el("td", { text: value, "data-key": key }))));
}

async function loadSummary() {
  const view = $("view-summary");
  const file = state.files[state.file];
  view.replaceChildren(el("p", { class: "muted", text: "Inferring the network…" }));
  const summary = await api("summary", { file: state.file });
  const totals = summary.totals;
  const rows = summary.layers;
  const table = el("table", { class: "grid selectable", id: "s-layers" });
  table.append(
    el("thead", null, el("tr", null, el("th", { text: "layer" }), el("th", { text: "kind" }), el("th", { class: "num", text: "parameters" }), el("th", { class: "num", text: "buffers" }), el("th", { class: "num", text: "optimizer values" })))
  );
  const body = el("tbody");
  table.append(body);
  let shown = 0;
  const more = el("button", { type: "button", class: "more" });
  const showMore = () => {
    const next = rows.slice(shown, shown + 500);
    for (const layer of next) {
      body.append(
        el(
          "tr",
          { onclick: () => selectLayer(layer.name) },
          el("td", { text: layer.name }),
          el("td", { text: layer.description }),
          el("td", { class: "num", text: fmt(layer.parameters) }),
          el("td", { class: "num", text: fmt(layer.buffers) }),
          el("td", { class: "num", text: fmt(layer.optimizer_state) })
        )
      );
    }
    shown += next.length;
    more.hidden = shown >= rows.length;
    more.textContent = `show more (${(rows.length - shown).toLocaleString("en-US")} more layers)`;
  };
  more.addEventListener("click", showMore);
  showMore();
  const totalsTable = el("table", { class: "kv" });
  kv(totalsTable, [
    ["layers", fmt(totals.layers)],
    ["parameters (trainable)", fmt(totals.parameters)],
    ["buffers (non-trainable)", fmt(totals.buffers)],
    ["optimizer slot values", fmt(totals.optimizer_slots)],
    ["other optimizer values", fmt(totals.optimizer_other)],
    ["bookkeeping values", fmt(totals.bookkeeping)],
    ["values in all", fmt(totals.in_all)],
    ["string tensors", fmt(totals.string_tensors)],
  ]);
  const bytesTable = el("table", { class: "kv" });
  kv(bytesTable, Object.entries(summary.bytes_by_dtype).map(([dtype, count]) => [dtype, fmtBytes(count)]));
  const fileTable = el("table", { class: "kv" });
  kv(fileTable, [
    ["path", file.path],
    ["format", file.format],
    ["tensors", fmt(file.tensors)],
    ...Object.entries(file.metadata || {}).slice(0, 8).map(([key, value]) => [key, value.length > 200 ? `${value.slice(0, 200)}…` : value]),
  ]);
  view.replaceChildren(
    el("h2", { text: "Summary" }),
    el("div", { class: "totals" }, el("div", { class: "card" }, el("h3", { text: "File" }), fileTable), el("div", { class: "card" }, el("h3", { text: "Totals" }), totalsTable), el("div", { class: "card" }, el("h3", { text: "Bytes by dtype" }), bytesTable)),
    el("h3", { text: `Layers (${rows.length.toLocaleString("en-US")})` }),
    table,
    more
  );
}

function selectLayer(layer) {
  const members = state.tensors.filter((tensor) => tensor.kind === "parameter" && tensor.layer === layer);
  const weight = members.find((tensor) => tensor.role === "weight") || members[0];
  if (weight) selectTensor(weight.name);
}

async function selectTensor(name) {
  state.selected = name;
  state.valuesOffset = 0;
  const sequence = ++state.sequence;
  // Until this tensor's answer comes, there is no tensor to draw: a redraw meanwhile (showView's, a resize)
  // must not draw the previous one's plots under the new sequence, nor cache its spectrum as this one's.
  state.detail = null;
  revealInTree(name);
  showView("tensor");
  $("t-empty").hidden = true;
  $("t-body").hidden = false;
  $("t-name").textContent = name;
  $("t-info").replaceChildren();
  $("t-stats").replaceChildren(el("tr", null, el("td", { class: "muted", text: "computing…" })));
  clearCanvas($("hist"));
  clearCanvas($("heat"));
  clearCanvas($("spec"));
  $("hist-note").textContent = "";
  $("heat-note").textContent = "";
  $("spec-note").textContent = "";
  $("spec-figures").replaceChildren();
  $("spec-part-box").hidden = true;
  state.spectrum = null;
  $("values").replaceChildren();
  let detail;
  try {
    detail = await api("tensor", { file: state.file, name });
  } catch (error) {
    if (sequence === state.sequence) showError(error);
    return;
  }
  if (sequence !== state.sequence) return;
  showError(null);
  state.detail = detail;
  const info = [
    ["name", detail.name],
    ["dtype", detail.dtype],
    ["shape", shapeText(detail.shape)],
    ["size", `${fmt(detail.size)} values`],
    ["bytes", fmtBytes(detail.nbytes)],
    ["kind", detail.kind === "optimizer" ? "optimizer state" : detail.kind],
    ["role", detail.role || "–"],
  ];
  if (detail.layer) info.push(["layer", detail.layer]);
  if (detail.owner) info.push(["of variable", detail.owner]);
  if (detail.key !== detail.name) info.push(["stored as", detail.key]);
  kv($("t-info"), info);
  const stats = detail.stats;
  kv(
    $("t-stats"),
    ["count", "min", "max", "mean", "std", "l2", "zeros", "nans", "infs"].map((key) => [key, fmt(stats[key])])
  );
  const channelBox = $("heat-channel-box");
  const channel = $("heat-channel");
  channel.replaceChildren(el("option", { value: "", text: "all (as a matrix)" }));
  if (detail.channels) {
    const count = Math.min(detail.channels.count, 4096);
    for (let index = 0; index < count; index += 1) channel.append(el("option", { value: index, text: String(index) }));
  }
  channelBox.hidden = !detail.channels;
  $("hist-panel").hidden = !detail.plottable;
  $("heat-panel").hidden = !(detail.plottable && detail.shape.length >= 2);
  $("spec-panel").hidden = !hasSpectrum(detail);
  drawTensorPlots();
  loadValues();
}

function drawTensorPlots() {
  const detail = state.detail;
  if (!detail || $("view-tensor").hidden) return;
  if (detail.plottable) loadHistogram();
  if (detail.plottable && detail.shape.length >= 2) loadHeatmap();
  if (hasSpectrum(detail)) loadSpectrum();
}

// A matrix or a convolution kernel: the server says why, if it has no spectrum after all (a vector-like
// matrix, an embedding, NaN...).
const hasSpectrum = (detail) => detail.plottable && (detail.shape.length === 2 || detail.shape.length === 4);

async function loadHistogram() {
  const detail = state.detail;
  const sequence = state.sequence;
  const canvas = $("hist");
  try {
    const chosen = $("hist-bins").value;
    const bins = chosen === "auto" ? autoBins(detail.size) : chosen;
    const answer = await api("histogram", { file: state.file, name: detail.name, bins });
    if (sequence !== state.sequence) return;
    drawHistogram(canvas, answer.edges, [{ counts: answer.counts, colour: COLOURS[0] }], $("hist-log").checked);
    canvas.dataset.ready = "1";
    const width = (answer.edges[answer.edges.length - 1] - answer.edges[0]) / answer.bins;
    let note = `${answer.bins} bins of width ${tickText(width)} from ${fmt(answer.edges[0])} to ${fmt(answer.edges[answer.edges.length - 1])}`;
    if (answer.nans || answer.infs) note += `; left out: ${fmt(answer.nans)} NaN, ${fmt(answer.infs)} infinite`;
    $("hist-note").textContent = note;
  } catch (error) {
    if (sequence === state.sequence) $("hist-note").textContent = String(error.message || error);
  }
}

async function loadHeatmap() {
  const detail = state.detail;
  const sequence = state.sequence;
  const canvas = $("heat");
  const size = plotSize(canvas);
  const params = { file: state.file, name: detail.name, rows: Math.max(1, Math.floor(size.height - 60)), cols: Math.max(1, Math.floor(size.width - 130)) };
  const channel = $("heat-channel").value;
  if (channel !== "") params.channel = channel;
  try {
    const answer = await api("heatmap", params);
    if (sequence !== state.sequence) return;
    drawHeatmap(canvas, answer);
    canvas.dataset.ready = "1";
    const [rows, columns] = answer.matrix;
    let note = channel !== "" ? `output channel ${channel}: [${answer.shape.join(", ")}] as ${rows}×${columns} (input channel × kernel position); ` : "";
    if (answer.shape.length > 2 && channel === "") note += `[${answer.shape.join(", ")}] as ${rows}×${columns} (first dimension × the rest); `;
    note += answer.downsampled
      ? `each cell is the mean of a ${answer.block[0]}×${answer.block[1]} block of values (${answer.grid[0]}×${answer.grid[1]} cells)`
      : "each cell is one value";
    if (answer.left_out) note += `; ${fmt(answer.left_out)} NaN or infinite values left out (grey: no finite value)`;
    $("heat-note").textContent = note;
  } catch (error) {
    if (sequence === state.sequence) $("heat-note").textContent = String(error.message || error);
  }
}

async function loadValues() {
  const detail = state.detail;
  const sequence = state.sequence;
  const offset = state.valuesOffset;
  const table = $("values");
  try {
    const answer = await api("values", { file: state.file, name: detail.name, offset, limit: VALUES_PAGE });
    if (sequence !== state.sequence) return;
    const head = el("thead", null, el("tr", null, el("th", { class: "num", text: "flat index" }), el("th", { text: "index" }), el("th", { class: "num", text: "value" })));
    const body = el("tbody");
    answer.values.forEach((value, position) => {
      const flat = answer.offset + position;
      body.append(el("tr", null, el("td", { class: "num", text: flat.toLocaleString("en-US") }), el("td", { text: shapeText(unravel(flat, answer.shape)) }), el("td", { class: "num", text: fmt(value) })));
    });
    table.replaceChildren(head, body);
    const end = answer.offset + answer.values.length;
    $("v-range").textContent = answer.total ? `${fmt(answer.offset)}–${fmt(end - 1)} of ${fmt(answer.total)}` : "no values";
    $("v-prev").disabled = answer.offset <= 0;
    $("v-next").disabled = end >= answer.total;
    $("v-offset").value = answer.offset;
    $("v-offset").max = Math.max(0, answer.total - 1);
  } catch (error) {
    if (sequence === state.sequence) table.replaceChildren(el("tr", null, el("td", { text: String(error.message || error) })));
  }
}

// Enough bins to show a shape, not so many that a small tensor's values stand alone: sqrt(n), 10 to 100.
function autoBins(count) {
  return Math.max(10, Math.min(100, Math.ceil(Math.sqrt(count))));
}

function unravel(flat, shape) {
  const index = new Array(shape.length).fill(0);
  for (let axis = shape.length - 1; axis >= 0; axis -= 1) {
    index[axis] = flat % shape[axis];
    flat = Math.floor(flat / shape[axis]);
  }
  return index;
}

function pageValues(offset) {
  if (!state.detail) return;
  const total = state.detail.size;
  state.valuesOffset = Math.max(0, Math.min(Number.isFinite(offset) ? offset : 0, Math.max(0, total - 1)));
  loadValues();
}

// -- the spectrum: the ESD on log-log axes with its power-law fit (as plot --kind spectrum draws it) -----

async function loadSpectrum() {
  const detail = state.detail;
  const sequence = state.sequence;
  try {
    let answer = state.spectrum && state.spectrum.name === detail.name ? state.spectrum : null; // a resize: as it was
    if (!answer) {
      answer = await api("spectrum", { file: state.file, name: detail.name });
      if (sequence !== state.sequence) return;
      state.spectrum = answer;
      $("spec-part").replaceChildren(...answer.parts.map((part, index) => el("option", { value: index, text: part.name })));
    }
    const box = $("spec-part-box");
    if (answer.skipped !== null) {
      box.hidden = true;
      $("spec-figures").replaceChildren();
      const { context } = prepare($("spec"));
      context.fillStyle = "#8390a5";
      context.fillText(`no spectrum: ${answer.skipped}`, 12, 20);
      $("spec").dataset.ready = "skipped";
      $("spec-note").textContent = `no spectrum: ${answer.skipped}`;
      return;
    }
    box.hidden = answer.parts.length < 2;
    showSpectrumPart();
  } catch (error) {
    if (sequence === state.sequence) $("spec-note").textContent = String(error.message || error);
  }
}

function showSpectrumPart() {
  const part = state.spectrum.parts[Number($("spec-part").value) || 0];
  const canvas = $("spec");
  drawSpectrum(canvas, part);
  canvas.dataset.ready = "1";
  const figures = [
    ["alpha", fmt(part.alpha)],
    ["alpha error", fmt(part.alpha_error)],
    ["xmin", fmt(part.xmin)],
    ["KS distance", fmt(part.ks_distance)],
    ["spectral norm", fmt(part.spectral_norm)],
    ["stable rank", fmt(part.stable_rank)],
    ["effective rank", fmt(part.effective_rank)],
    ["MP spikes", part.mp_spikes === null ? "– (randomized SVD)" : fmt(part.mp_spikes)],
    ["entropy", fmt(part.entropy)],
    ["matrix", `${part.n}×${part.m}${part.matrices > 1 ? `, ${part.matrices} pooled` : ""}`],
    ["SVD", part.method === "exact" ? "exact" : `randomized, each value ±${fmt(part.error_bound)}`],
  ];
  kv($("spec-figures"), figures);
  const esd = part.esd;
  let note = `${fmt(esd.eigenvalues)} eigenvalues of WᵀW on ${esd.density.length} logarithmic bins (density)`;
  note += part.fit ? `; power law p(x) ~ x^−${fmt(part.alpha)} fitted to the ${fmt(part.tail)} from xmin (dotted)` : "; no power-law fit";
  if (part.method !== "exact") note += `; the largest ${fmt(esd.eigenvalues)} only (a large matrix: randomized SVD)`;
  $("spec-note").textContent = note;
}

// Ticks of a log10 axis from low to high (log10 values): the decades, or finer steps within one.
function logTicks(low, high, count) {
  const decades = [];
  for (let power = Math.ceil(low); power <= high + 1e-9; power += 1) decades.push(power);
  return decades.length >= 2 ? decades : niceTicks(low, high, count);
}

function drawSpectrum(canvas, part) {
  const { context, width, height } = prepare(canvas);
  const margin = { left: 64, right: 14, top: 26, bottom: 36 };
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  const { edges, density } = part.esd;
  if (!edges.length) {
    context.fillStyle = "#8390a5";
    context.fillText("no positive eigenvalue: a matrix of zeros", 12, 20);
    return;
  }
  const xs = [...edges, ...(part.fit ? part.fit.x : [])].map(Math.log10);
  const ys = [...density, ...(part.fit ? part.fit.density : [])].filter((value) => value > 0).map(Math.log10);
  let [left, right] = [Math.min(...xs), Math.max(...xs)];
  let [bottom, top] = [Math.min(...ys), Math.max(...ys)];
  const padX = (right - left || 1) * 0.03;
  const padY = (top - bottom || 1) * 0.06;
  [left, right, bottom, top] = [left - padX, right + padX, bottom - padY, top + padY];
  const x = (value) => margin.left + ((Math.log10(value) - left) / (right - left)) * plotWidth;
  const y = (value) => margin.top + plotHeight - ((Math.log10(value) - bottom) / (top - bottom)) * plotHeight;
  const label = (power) => (Number.isInteger(power) ? `1e${power}` : tickText(Math.pow(10, power)));
  drawAxes(
    context,
    { margin, plotWidth, plotHeight, height },
    logTicks(bottom, top, 4).map((power) => [y(Math.pow(10, power)), label(power)]),
    logTicks(left, right, Math.max(2, Math.floor(plotWidth / 90))).map((power) => [x(Math.pow(10, power)), label(power)]),
    "eigenvalue of WᵀW (log)",
    "density (log)"
  );
  context.save();
  context.beginPath();
  context.rect(margin.left, margin.top, plotWidth, plotHeight);
  context.clip();
  context.fillStyle = COLOURS[0];
  context.globalAlpha = 0.6;
  density.forEach((value, bin) => {
    if (!(value > 0)) return;
    const barLeft = x(edges[bin]);
    const barTop = y(value);
    context.fillRect(barLeft, barTop, Math.max(1, x(edges[bin + 1]) - barLeft), margin.top + plotHeight - barTop);
  });
  context.globalAlpha = 1;
  const legend = [[COLOURS[0], "ESD", []]];
  if (part.fit) {
    context.strokeStyle = "#d62728";
    context.lineWidth = 2;
    context.beginPath();
    context.moveTo(x(part.fit.x[0]), y(part.fit.density[0]));
    context.lineTo(x(part.fit.x[1]), y(part.fit.density[1]));
    context.stroke();
    context.setLineDash([4, 4]);
    context.lineWidth = 1.5;
    context.beginPath();
    context.moveTo(x(part.xmin), margin.top);
    context.lineTo(x(part.xmin), margin.top + plotHeight);
    context.stroke();
    context.setLineDash([]);
    legend.push(["#d62728", `power law, α ${fmt(part.alpha)}`, []], ["#d62728", "xmin", [4, 4]]);
  }
  context.restore();
  context.strokeStyle = "#8390a5";
  context.strokeRect(margin.left, margin.top, plotWidth, plotHeight);
  context.textAlign = "left";
  context.textBaseline = "middle";
  let legendX = margin.left;
  for (const [colour, text, dash] of legend) {
    context.strokeStyle = colour;
    context.fillStyle = colour;
    if (text === "ESD") context.fillRect(legendX, 8, 14, 10);
    else {
      context.setLineDash(dash);
      context.lineWidth = 2;
      context.beginPath();
      context.moveTo(legendX, 13);
      context.lineTo(legendX + 14, 13);
      context.stroke();
      context.setLineDash([]);
    }
    context.fillStyle = "#1d2330";
    context.fillText(text, legendX + 18, 13);
    legendX += 28 + context.measureText(text).width;
  }
}

// -- the anatomy of the change (diff --anatomy): per weight, how much and of what rank -----------------

const ANATOMY_COLUMNS = [
  ["tensor", "name"],
  ["shape", "shape"],
  ["rel. change", "relative_change"],
  ["cosine", "cosine"],
  ["rank", "rank"],
  ["90%", "rank_90"],
  ["99%", "rank_99"],
  ["intruders", "intruders"],
];
const UNMEASURED = { shape: "shapes differ", "not real": "not real", "not finite": "not finite" };

async function loadAnatomy() {
  if (state.anatomy) return;
  state.anatomy = "loading";
  try {
    state.anatomy = await api("anatomy", {});
    renderAnatomy();
  } catch (error) {
    state.anatomy = null;
    $("a-head").textContent = String(error.message || error);
  }
}

function anatomyValue(layer, key) {
  if (key === "shape") return layer.shape.reduce((product, length) => product * length, 1);
  if (key === "relative_change" && layer.status === "changed" && layer.relative_change === null) return Infinity; // of zeros
  return layer[key];
}

function renderAnatomy() {
  const anatomy = state.anatomy;
  const changed = anatomy.layers.filter((layer) => layer.status === "changed");
  $("a-head").replaceChildren(
    el("div", null, "A (base): ", el("code", { text: anatomy.base })),
    el("div", null, "B (tuned): ", el("code", { text: anatomy.tuned })),
    el("div", { id: "a-counts" }, `${changed.length} of ${anatomy.layers.length} weights changed`)
  );
  const verdict = $("a-verdict");
  verdict.hidden = anatomy.lora_rank === null;
  if (anatomy.lora_rank !== null) {
    const matrices = changed.filter((layer) => layer.rank !== null);
    const side = (layer) => Math.min(layer.shape[0], layer.shape.slice(1).reduce((product, length) => product * length, 1));
    const full = matrices.filter((layer) => layer.rank === side(layer));
    const held = changed.every((layer) => layer.shape.length === 2);
    const what = matrices.length === 1 ? "The change of the one matrix" : `The changes of the ${matrices.length} matrices`;
    verdict.dataset.rank = anatomy.lora_rank;
    verdict.textContent = full.length
      ? `A full-rank change in ${full.length} of the ${matrices.length} changed matrices: no LoRA of a smaller rank holds it exactly (90% of each one's energy is in at most ${Math.max(...matrices.map((layer) => layer.rank_90))} directions).`
      : `${what} could have been a rank-${anatomy.lora_rank} LoRA (${matrices.length === 1 ? "its" : "their largest"} rank above float rounding)${held ? "" : "; other changed tensors (biases, norms, kernels) a LoRA does not hold"}.`;
  }
  const { key, descending } = state.anatomySort;
  const rows = anatomy.layers.filter((layer) => $("a-equal").checked || layer.status !== "equal");
  const order = (layer) => (layer.status === "changed" ? 0 : layer.status === "equal" ? 2 : 1);
  rows.sort((a, b) => {
    if (key === "relative_change" && order(a) !== order(b)) return order(a) - order(b);
    const [first, second] = [anatomyValue(a, key), anatomyValue(b, key)];
    if (first === second) return 0;
    if (first === null || first === undefined) return 1; // unmeasured last, either way
    if (second === null || second === undefined) return -1;
    const compared = typeof first === "string" ? first.localeCompare(second) : first - second;
    return descending ? -compared : compared;
  });
  const head = el("tr");
  ANATOMY_COLUMNS.forEach(([label, column], index) => {
    const arrow = column === key ? (descending ? " ▼" : " ▲") : "";
    head.append(
      el("th", {
        class: `sortable${index > 1 ? " num" : ""}`,
        "data-key": column,
        text: label + arrow,
        onclick: () => {
          state.anatomySort = { key: column, descending: column === key ? !descending : column !== "name" };
          renderAnatomy();
        },
      })
    );
  });
  const body = el("tbody");
  for (const layer of rows.slice(0, 2000)) {
    const measured = layer.status === "changed" || layer.status === "equal";
    const cells = measured
      ? [
          fmt(layer.relative_change),
          fmt(layer.cosine),
          fmt(layer.rank),
          fmt(layer.rank_90),
          fmt(layer.rank_99),
          layer.intruders === null ? "–" : `${layer.intruders}/${layer.similarity.length}`,
        ]
      : [UNMEASURED[layer.status] || layer.status, "–", "–", "–", "–", "–"];
    body.append(
      el(
        "tr",
        { "data-name": layer.name, "data-status": layer.status, onclick: () => selectTensor(layer.name) },
        el("td", { text: layer.name }),
        el("td", { text: shapeText(layer.shape) }),
        ...cells.map((text, index) => el("td", { class: `num${index === 0 && !measured ? " status-shape" : ""}`, "data-key": ANATOMY_COLUMNS[index + 2][1], text }))
      )
    );
  }
  $("a-table").replaceChildren(el("thead", null, head), body);
  const only = [];
  if (anatomy.only_base.length) only.push(el("div", null, `only in A (${anatomy.only_base.length}): ${anatomy.only_base.slice(0, 50).join(", ")}`));
  if (anatomy.only_tuned.length) only.push(el("div", null, `only in B (${anatomy.only_tuned.length}): ${anatomy.only_tuned.slice(0, 50).join(", ")}`));
  $("a-only").replaceChildren(...only);
}

// -- the diff --------------------------------------------------------------------------------

async function loadDiff() {
  if (state.diff) return;
  state.diff = "loading";
  const head = $("d-head");
  try {
    const diff = await api("diff", {});
    state.diff = diff;
    const counts = {};
    for (const tensor of diff.tensors) counts[tensor.status] = (counts[tensor.status] || 0) + 1;
    const countText = Object.entries(counts).map(([status, count]) => `${count} ${status}`).join(", ") || "none";
    head.replaceChildren(
      el("div", null, "A: ", el("code", { text: diff.a })),
      el("div", null, "B: ", el("code", { text: diff.b })),
      el("div", { id: "d-counts" }, `${diff.tensors.length} tensors compared (matched by ${diff.matched_by}): ${countText}${diff.equal ? " — the weights are equal" : ""}`)
    );
    const table = $("d-table");
    table.replaceChildren(
      el("thead", null, el("tr", null, ...["tensor", "status", "rel. L2 change", "max |a−b|", "cosine", "elements off"].map((text, index) => el("th", { class: index > 1 ? "num" : null, text }))))
    );
    const body = el("tbody");
    for (const tensor of diff.tensors.slice(0, 2000)) {
      let status = tensor.status;
      if (status === "shape") status += ` ${shapeText(tensor.shape[0])} vs ${shapeText(tensor.shape[1])}`;
      if (status === "dtype") status += ` ${tensor.dtype[0]} vs ${tensor.dtype[1]}`;
      const name = tensor.other === tensor.name ? tensor.name : `${tensor.name} ~ ${tensor.other}`;
      const row = el(
        "tr",
        { "data-name": tensor.name, onclick: () => selectDiff(tensor, row) },
        el("td", { text: name }),
        el("td", { class: `status-${tensor.status}`, text: status }),
        el("td", { class: "num", text: fmt(tensor.relative_l2) }),
        el("td", { class: "num", text: fmt(tensor.max_abs) }),
        el("td", { class: "num", text: fmt(tensor.cosine) }),
        el("td", { class: "num", text: fmt(tensor.mismatched) })
      );
      body.append(row);
    }
    table.append(body);
    const only = [];
    if (diff.only_a.length) only.push(el("div", null, `only in A (${diff.only_a.length}): ${diff.only_a.slice(0, 50).join(", ")}`));
    if (diff.only_b.length) only.push(el("div", null, `only in B (${diff.only_b.length}): ${diff.only_b.slice(0, 50).join(", ")}`));
    $("d-only").replaceChildren(...only);
    const first = diff.tensors.find((tensor) => tensor.status === "different") || diff.tensors[0];
    if (first) selectDiff(first, body.querySelector("tr"));
  } catch (error) {
    state.diff = null;
    head.textContent = String(error.message || error);
  }
}

async function selectDiff(tensor, row) {
  state.diffSelected = tensor;
  for (const other of $("d-table").querySelectorAll("tr.selected")) other.classList.remove("selected");
  if (row) row.classList.add("selected");
  const panel = $("d-hist-panel");
  panel.hidden = false;
  $("d-hist-title").textContent = `Histograms: ${tensor.name}`;
  const canvas = $("d-hist");
  canvas.dataset.ready = "";
  clearCanvas(canvas);
  try {
    const size = Math.max(...tensor.shape.map((shape) => shape.reduce((product, length) => product * length, 1)));
    const answer = await api("histogram", { file: 0, name: tensor.name, compare: 1, other: tensor.other, bins: autoBins(size) });
    if (state.diffSelected !== tensor) return;
    drawHistogram(canvas, answer.edges, [
      { counts: answer.counts, colour: COLOURS[0], label: `A: ${answer.name}` },
      { counts: answer.compare.counts, colour: COLOURS[1], label: `B: ${answer.compare.name}` },
    ], false);
    canvas.dataset.ready = "1";
    $("d-hist-note").textContent = `A (blue) and B (orange) counted in the same ${answer.bins} bins, from ${fmt(answer.edges[0])} to ${fmt(answer.edges[answer.edges.length - 1])}`;
  } catch (error) {
    if (state.diffSelected === tensor) $("d-hist-note").textContent = String(error.message || error);
  }
}

// -- drawing on canvases ---------------------------------------------------------------------

function plotSize(canvas) {
  const width = Math.max(200, canvas.clientWidth || canvas.parentElement.clientWidth - 24);
  const height = Number(canvas.dataset.height || 240);
  return { width, height };
}

function prepare(canvas) {
  const { width, height } = plotSize(canvas);
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.height = `${height}px`;
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  context.font = "11px system-ui, sans-serif";
  return { context, width, height };
}

function clearCanvas(canvas) {
  canvas.dataset.ready = "";
  const { context, width, height } = prepare(canvas);
  context.fillStyle = "#8390a5";
  context.fillText("computing…", 12, 20);
  return { context, width, height };
}

// A plot's grid and axes: a line and a label at each [position, text] of the y and x ticks, and the axes' titles.
function drawAxes(context, frame, yTicks, xTicks, xTitle, yTitle) {
  const { margin, plotWidth, plotHeight, height } = frame;
  context.strokeStyle = "#e3e7ee";
  context.fillStyle = "#55627a";
  context.lineWidth = 1;
  context.textAlign = "right";
  context.textBaseline = "middle";
  for (const [position, text] of yTicks) {
    context.beginPath();
    context.moveTo(margin.left, position);
    context.lineTo(margin.left + plotWidth, position);
    context.stroke();
    context.fillText(text, margin.left - 6, position);
  }
  context.textAlign = "center";
  context.textBaseline = "top";
  for (const [position, text] of xTicks) {
    context.beginPath();
    context.moveTo(position, margin.top);
    context.lineTo(position, margin.top + plotHeight);
    context.stroke();
    context.fillText(text, position, margin.top + plotHeight + 5);
  }
  context.fillText(xTitle, margin.left + plotWidth / 2, height - 14);
  context.save();
  context.translate(12, margin.top + plotHeight / 2);
  context.rotate(-Math.PI / 2);
  context.fillText(yTitle, 0, -6);
  context.restore();
}

function drawHistogram(canvas, edges, series, log) {
  const { context, width, height } = prepare(canvas);
  const margin = { left: 64, right: 14, top: series.length > 1 ? 26 : 10, bottom: 34 };
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  const low = edges[0];
  const high = edges[edges.length - 1];
  const scaleCount = (count) => (log ? Math.log10(1 + count) : count);
  let top = 1;
  for (const item of series) for (const count of item.counts) top = Math.max(top, scaleCount(count));
  top *= 1.05; // room above the highest bar
  const x = (value) => margin.left + ((value - low) / (high - low || 1)) * plotWidth;
  const y = (scaled) => margin.top + plotHeight - (scaled / top) * plotHeight;
  const countTicks = niceTicks(0, top, 4).filter((tick) => Number.isInteger(tick));
  const countText = (tick) => (log ? (tick === 0 ? "0" : `1e${tick}`) : tick.toLocaleString("en-US"));
  drawAxes(
    context,
    { margin, plotWidth, plotHeight, height },
    countTicks.map((tick) => [y(tick), countText(tick)]),
    niceTicks(low, high, Math.max(2, Math.floor(plotWidth / 90))).map((tick) => [x(tick), tickText(tick)]),
    "value",
    log ? "count (log)" : "count"
  );
  // bars
  series.forEach((item, index) => {
    context.fillStyle = item.colour;
    context.globalAlpha = series.length > 1 ? 0.45 : 0.85;
    item.counts.forEach((count, bin) => {
      if (!count) return;
      const left = x(edges[bin]);
      const right = x(edges[bin + 1]);
      const barTop = y(scaleCount(count));
      context.fillRect(left, barTop, Math.max(1, right - left - (right - left > 3 ? 0.5 : 0)), margin.top + plotHeight - barTop);
    });
    context.globalAlpha = 1;
    if (series.length > 1) {
      context.strokeStyle = item.colour;
      context.lineWidth = 1.2;
      context.beginPath();
      context.moveTo(x(edges[0]), y(0));
      item.counts.forEach((count, bin) => {
        context.lineTo(x(edges[bin]), y(scaleCount(count)));
        context.lineTo(x(edges[bin + 1]), y(scaleCount(count)));
      });
      context.lineTo(x(edges[edges.length - 1]), y(0));
      context.stroke();
      context.fillStyle = item.colour;
      context.textAlign = "left";
      context.textBaseline = "middle";
      const legendX = margin.left + index * Math.min(360, plotWidth / 2);
      context.fillRect(legendX, 8, 12, 10);
      context.fillStyle = "#1d2330";
      context.fillText(item.label, legendX + 16, 13);
    }
  });
  context.strokeStyle = "#8390a5";
  context.strokeRect(margin.left, margin.top, plotWidth, plotHeight);
}

// A diverging blue-white-red map (as matplotlib's RdBu_r), centred on 0.
const DIVERGING = [
  [5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240], [247, 247, 247],
  [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31],
];

function colourOf(fraction) {
  const position = Math.max(0, Math.min(1, fraction)) * (DIVERGING.length - 1);
  const index = Math.min(DIVERGING.length - 2, Math.floor(position));
  const t = position - index;
  const [a, b] = [DIVERGING[index], DIVERGING[index + 1]];
  return [0, 1, 2].map((channel) => Math.round(a[channel] + (b[channel] - a[channel]) * t));
}

function drawHeatmap(canvas, answer) {
  const { context, width, height } = prepare(canvas);
  const [gridRows, gridColumns] = answer.grid;
  const [rows, columns] = answer.matrix;
  const limit = Math.max(Math.abs(answer.min || 0), Math.abs(answer.max || 0)) || 1;
  const margin = { left: 56, right: 84, top: 10, bottom: 40 };
  const areaWidth = width - margin.left - margin.right;
  const areaHeight = height - margin.top - margin.bottom;
  const cellWidth = areaWidth / gridColumns;
  const cellHeight = areaHeight / gridRows;
  const side = Math.min(cellWidth, cellHeight);
  const drawWidth = gridColumns * Math.min(cellWidth, side * 4);
  const drawHeight = gridRows * Math.min(cellHeight, side * 4);
  const image = new ImageData(gridColumns, gridRows);
  answer.means.forEach((line, row) => {
    line.forEach((value, column) => {
      const at = (row * gridColumns + column) * 4;
      const colour = typeof value === "number" ? colourOf(0.5 + value / (2 * limit)) : [150, 150, 150];
      image.data[at] = colour[0];
      image.data[at + 1] = colour[1];
      image.data[at + 2] = colour[2];
      image.data[at + 3] = 255;
    });
  });
  const cells = document.createElement("canvas");
  cells.width = gridColumns;
  cells.height = gridRows;
  cells.getContext("2d").putImageData(image, 0, 0);
  context.imageSmoothingEnabled = false;
  context.drawImage(cells, margin.left, margin.top, drawWidth, drawHeight);
  context.strokeStyle = "#8390a5";
  context.strokeRect(margin.left, margin.top, drawWidth, drawHeight);
  // values in the cells, where there is room
  const shownWidth = drawWidth / gridColumns;
  const shownHeight = drawHeight / gridRows;
  if (shownWidth >= 44 && shownHeight >= 16) {
    context.textAlign = "center";
    context.textBaseline = "middle";
    answer.means.forEach((line, row) => {
      line.forEach((value, column) => {
        const strong = typeof value === "number" && Math.abs(value) / limit > 0.6;
        context.fillStyle = strong ? "#fff" : "#1d2330";
        context.fillText(typeof value === "number" ? tickText(value) : "–", margin.left + (column + 0.5) * shownWidth, margin.top + (row + 0.5) * shownHeight);
      });
    });
  }
  // index ticks: matrix rows and columns
  context.fillStyle = "#55627a";
  context.textAlign = "center";
  context.textBaseline = "top";
  const columnTicks = columns <= 16 && !answer.downsampled ? [...Array(columns).keys()] : niceTicks(0, columns, Math.max(2, Math.floor(drawWidth / 80)));
  for (const tick of columnTicks) {
    const centre = columns <= 16 && !answer.downsampled ? 0.5 : 0;
    context.fillText(String(tick), margin.left + ((tick + centre) / columns) * drawWidth, margin.top + drawHeight + 4);
  }
  let columnLabel = answer.shape.length > 2 ? "column (dimensions 1… flattened)" : "column";
  if (answer.channel !== null) columnLabel = "kernel position (flattened)";
  context.fillText(columnLabel, margin.left + drawWidth / 2, margin.top + drawHeight + 20);
  context.textAlign = "right";
  context.textBaseline = "middle";
  const rowTicks = rows <= 16 && !answer.downsampled ? [...Array(rows).keys()] : niceTicks(0, rows, Math.max(2, Math.floor(drawHeight / 40)));
  for (const tick of rowTicks) {
    const centre = rows <= 16 && !answer.downsampled ? 0.5 : 0;
    context.fillText(String(tick), margin.left - 6, margin.top + ((tick + centre) / rows) * drawHeight);
  }
  context.save();
  context.translate(14, margin.top + drawHeight / 2);
  context.rotate(-Math.PI / 2);
  context.textAlign = "center";
  context.fillText(answer.channel !== null ? "input channel" : "row", 0, 0);
  context.restore();
  // colour bar
  const barLeft = margin.left + drawWidth + 16;
  const barHeight = Math.max(60, Math.min(drawHeight, areaHeight));
  for (let step = 0; step < barHeight; step += 1) {
    const [r, g, b] = colourOf(1 - step / barHeight);
    context.fillStyle = `rgb(${r},${g},${b})`;
    context.fillRect(barLeft, margin.top + step, 14, 1.5);
  }
  context.strokeRect(barLeft, margin.top, 14, barHeight);
  context.fillStyle = "#55627a";
  context.textAlign = "left";
  context.textBaseline = "middle";
  context.fillText(tickText(limit), barLeft + 18, margin.top + 4);
  context.fillText("0", barLeft + 18, margin.top + barHeight / 2);
  context.fillText(tickText(-limit), barLeft + 18, margin.top + barHeight - 4);
  canvas.dataset.cells = `${gridRows}x${gridColumns}`;
}

// -- start ---------------------------------------------------------------------------------------

async function openFile(index) {
  state.file = index;
  state.selected = null;
  state.detail = null;
  const answer = await api("tensors", { file: index });
  state.tensors = answer.tensors;
  state.tree = buildTree(state.tensors);
  $("tree").scrollTop = 0;
  flatten();
  $("t-empty").hidden = false;
  $("t-body").hidden = true;
  await loadSummary();
}

async function start() {
  const tree = $("tree");
  tree.addEventListener("scroll", () => renderTree(false), { passive: true });
  tree.addEventListener("click", onTreeClick);
  window.addEventListener("resize", debounce(() => {
    renderTree(true);
    if (!$("view-tensor").hidden) drawTensorPlots();
  }, 200));
  $("search").addEventListener("input", debounce((event) => {
    state.filter = event.target.value.trim();
    $("tree").scrollTop = 0;
    flatten();
  }, 150));
  $("tab-summary").addEventListener("click", () => showView("summary"));
  $("tab-tensor").addEventListener("click", () => showView("tensor"));
  $("tab-diff").addEventListener("click", () => showView("diff"));
  $("tab-anatomy").addEventListener("click", () => showView("anatomy"));
  $("spec-part").addEventListener("change", () => state.spectrum && showSpectrumPart());
  $("a-equal").addEventListener("change", () => state.anatomy && renderAnatomy());
  $("hist-bins").addEventListener("change", () => state.detail && loadHistogram());
  $("hist-log").addEventListener("change", () => state.detail && loadHistogram());
  $("heat-channel").addEventListener("change", () => state.detail && loadHeatmap());
  $("v-prev").addEventListener("click", () => pageValues(state.valuesOffset - VALUES_PAGE));
  $("v-next").addEventListener("click", () => pageValues(state.valuesOffset + VALUES_PAGE));
  $("v-offset").addEventListener("change", (event) => pageValues(Math.floor(Number(event.target.value))));
  $("file-select").addEventListener("change", (event) => openFile(Number(event.target.value)).catch(showError));
  try {
    const files = await api("files", {});
    state.files = files.files;
    state.compare = files.compare;
    $("files").textContent = files.files.map((file) => `${files.compare ? (file.file ? "B: " : "A: ") : ""}${file.path}`).join("   ");
    document.title = `weightscope view · ${files.files.map((file) => file.label).join(" vs ")}`;
    $("tab-diff").hidden = !files.compare;
    $("tab-anatomy").hidden = !files.compare;
    $("file-switch").hidden = !files.compare;
    $("file-select").replaceChildren(...files.files.map((file) => el("option", { value: file.file, text: `${file.file ? "B" : "A"}: ${file.label}` })));
    await openFile(0);
    document.body.dataset.ready = "1";
  } catch (error) {
    showError(error);
  }
}

document.addEventListener("DOMContentLoaded", start);
