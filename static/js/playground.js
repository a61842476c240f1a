// Page "/playground": edit a pipeline of layers, see every stage live, step through one layer's arithmetic.
// The state lives in the URL hash (#s=<JSON>), so a shared link reproduces the page exactly.
import { api, postJSON, showError, uploadImage } from "./api.js";

const $ = (id) => document.getElementById(id);
const root = document.querySelector(".playground");
const MAX_KERNEL = Number(root.dataset.maxKernel);
const MAX_LAYERS = Number(root.dataset.maxLayers);
const CLASSIC = "3 3 2 1 0\n0 0 1 3 1\n3 1 2 2 3\n2 0 0 2 2\n2 0 0 0 1";
const SOBEL_X = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]];

let presets = [];
let state = defaultState();
let requestId = 0;
let timer = null;
let steps = null; // the last /api/convolve/steps answer
let stepIndex = 0;
let playing = null;

function defaultState() {
  return {
    image: { sample: "astronaut" },
    grayscale: false,
    render: "abs",
    max_side: 512,
    layers: [newLayer("conv")],
    matrix: CLASSIC,
    steps_layer: 0,
  };
}

function newLayer(type) {
  if (type === "conv") {
    return { type, kernel: SOBEL_X.map((r) => [...r]), stride: 1, padding: 1, padding_mode: "zeros", dilation: 1, bias: 0 };
  }
  if (type === "activation") return { type, fn: "relu" };
  return { type: "pool", mode: "max", kernel_size: 2, stride: 2, padding: 0, ceil_mode: false };
}

// --- URL state -------------------------------------------------------------------------------------------

function readHash() {
  const match = location.hash.match(/^#s=(.*)$/);
  if (!match) return null;
  try {
    const parsed = JSON.parse(decodeURIComponent(match[1]));
    return parsed && Array.isArray(parsed.layers) && parsed.layers.length && parsed.layers.every(editable)
      ? { ...defaultState(), ...parsed }
      : null;
  } catch {
    return null;
  }
}

// A link edited by hand may hold anything: only layers the editor can show are taken, else the defaults.
function editable(layer) {
  if (!layer || typeof layer !== "object") return false;
  if (layer.type === "conv") {
    return Array.isArray(layer.kernel) && layer.kernel.length > 0 && layer.kernel.every((row) => Array.isArray(row) && row.length === layer.kernel[0].length && row.length > 0 && row.every((v) => typeof v === "number"));
  }
  if (layer.type === "pool") return typeof layer.mode === "string";
  return layer.type === "activation";
}

function writeHash() {
  history.replaceState(null, "", `#s=${encodeURIComponent(JSON.stringify(state))}`);
}

// --- small DOM helpers -----------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function numberInput(value, attrs, onChange) {
  const input = el("input", { type: "number", value, ...attrs });
  input.addEventListener("input", () => {
    if (input.value === "" || !Number.isFinite(Number(input.value))) return;
    onChange(Number(input.value));
  });
  return input;
}

function select(options, value, attrs, onChange) {
  const node = el("select", attrs, ...options.map(([v, label]) => el("option", { value: v, selected: String(v) === String(value) }, label)));
  node.addEventListener("change", () => onChange(node.value));
  return node;
}

function labelled(text, control) {
  return el("label", {}, `${text} `, control);
}

const fmt = (v) => (v === null || v === undefined ? "·" : Number.isInteger(v) ? String(v) : v.toFixed(3).replace(/\.?0+$/, ""));

// --- the layer editor -------------------------------------------------------------------------------------

function matchingPreset(kernel) {
  return presets.find((p) => JSON.stringify(p.kernel) === JSON.stringify(kernel));
}

function resizeKernel(kernel, rows, cols) {
  return Array.from({ length: rows }, (_, r) => Array.from({ length: cols }, (_, c) => (kernel[r] && kernel[r][c] !== undefined ? kernel[r][c] : 0)));
}

function convEditor(layer, index) {
  const preset = matchingPreset(layer.kernel);
  const description = el("span", { class: "hint preset-description" }, preset ? preset.description : "your own kernel");
  const presetSelect = select(
    [["", "custom"], ...presets.map((p) => [p.name, p.name.replace(/_/g, " ")])],
    preset ? preset.name : "",
    { class: "preset", "aria-label": "preset" },
    (name) => {
      const chosen = presets.find((p) => p.name === name);
      if (chosen) update(index, { kernel: chosen.kernel.map((r) => [...r]) }, true);
    },
  );
  const rows = layer.kernel.length;
  const cols = layer.kernel[0].length;
  const size = el(
    "span",
    { class: "kernel-size" },
    numberInput(rows, { min: 1, max: MAX_KERNEL, class: "kernel-rows", "aria-label": "kernel rows" }, (v) =>
      update(index, { kernel: resizeKernel(layer.kernel, clamp(v, 1, MAX_KERNEL), cols) }, true)),
    "×",
    numberInput(cols, { min: 1, max: MAX_KERNEL, class: "kernel-cols", "aria-label": "kernel columns" }, (v) =>
      update(index, { kernel: resizeKernel(layer.kernel, rows, clamp(v, 1, MAX_KERNEL)) }, true)),
  );
  const grid = el("div", { class: "kernel", style: `grid-template-columns: repeat(${cols}, 3.6rem)` });
  layer.kernel.forEach((row, r) =>
    row.forEach((value, c) =>
      grid.append(numberInput(value, { step: "any", "aria-label": `kernel row ${r + 1} column ${c + 1}`, "data-r": r, "data-c": c }, (v) => {
        layer.kernel[r][c] = v;
        const match = matchingPreset(layer.kernel);
        presetSelect.value = match ? match.name : "";
        description.textContent = match ? match.description : "your own kernel";
        changed();
      })),
    ),
  );
  const padKind = typeof layer.padding === "string" ? layer.padding : "number";
  const padNumber = numberInput(typeof layer.padding === "number" ? layer.padding : 0, { min: 0, max: 64, class: "padding", "aria-label": "padding", disabled: padKind !== "number" }, (v) => update(index, { padding: v }));
  return el(
    "div",
    { class: "layer-body" },
    el("div", { class: "row" }, labelled("preset", presetSelect), description),
    el("div", { class: "row" }, labelled("kernel", size), grid),
    el(
      "div",
      { class: "row" },
      labelled("stride", numberInput(layer.stride, { min: 1, max: 16, class: "stride" }, (v) => update(index, { stride: v }))),
      labelled("padding", select([["number", "number"], ["valid", "valid"], ["same", "same"], ["full", "full"]], padKind, { class: "padding-kind", "aria-label": "padding kind" },
        (kind) => update(index, { padding: kind === "number" ? 0 : kind }, true))),
      padNumber,
      labelled("mode", select([["zeros", "zeros"], ["reflect", "reflect"], ["replicate", "replicate"], ["circular", "circular"]], layer.padding_mode, { class: "padding-mode" },
        (v) => update(index, { padding_mode: v }))),
      labelled("dilation", numberInput(layer.dilation, { min: 1, max: 8, class: "dilation" }, (v) => update(index, { dilation: v }))),
      labelled("bias", numberInput(layer.bias, { step: "any", class: "bias" }, (v) => update(index, { bias: v }))),
    ),
  );
}

function activationEditor(layer, index) {
  const fns = ["relu", "leaky_relu", "sigmoid", "tanh", "abs"].map((f) => [f, f]);
  return el("div", { class: "layer-body row" }, labelled("function", select(fns, layer.fn, { class: "fn" }, (v) => update(index, { fn: v }))));
}

function poolEditor(layer, index) {
  const modes = [["max", "max"], ["avg", "average"], ["global_avg", "global average"], ["global_max", "global max"]];
  const local = !layer.mode.startsWith("global");
  return el(
    "div",
    { class: "layer-body row" },
    labelled("mode", select(modes, layer.mode, { class: "pool-mode" }, (v) => update(index, { mode: v }, true))),
    local ? labelled("kernel", numberInput(layer.kernel_size, { min: 1, max: 31, class: "kernel-size" }, (v) => update(index, { kernel_size: v }))) : null,
    local ? labelled("stride", numberInput(layer.stride ?? layer.kernel_size, { min: 1, max: 16, class: "stride" }, (v) => update(index, { stride: v }))) : null,
    local ? labelled("padding", numberInput(layer.padding, { min: 0, max: 15, class: "padding" }, (v) => update(index, { padding: v }))) : null,
    local ? el("label", {}, el("input", { type: "checkbox", class: "ceil-mode", checked: layer.ceil_mode, onchange: (e) => update(index, { ceil_mode: e.target.checked }) }), " ceil mode") : null,
  );
}

function renderLayers() {
  const list = $("layers");
  list.replaceChildren(
    ...state.layers.map((layer, index) => {
      const title = { conv: "convolution", activation: "activation", pool: "pooling" }[layer.type];
      const editor = layer.type === "conv" ? convEditor(layer, index) : layer.type === "activation" ? activationEditor(layer, index) : poolEditor(layer, index);
      return el(
        "li",
        { class: `layer layer-${layer.type}`, "data-index": index },
        el(
          "div",
          { class: "layer-head" },
          el("strong", {}, `${index + 1}. ${title}`),
          el("span", { class: "layer-shape shape" }),
          el("button", { type: "button", class: "move-up", "aria-label": "move up", disabled: index === 0, onclick: () => move(index, -1) }, "↑"),
          el("button", { type: "button", class: "move-down", "aria-label": "move down", disabled: index === state.layers.length - 1, onclick: () => move(index, 1) }, "↓"),
          el("button", { type: "button", class: "remove", "aria-label": "remove", disabled: state.layers.length === 1, onclick: () => remove(index) }, "✕"),
        ),
        editor,
      );
    }),
  );
  for (const type of ["conv", "activation", "pool"]) $(`add-${type}`).disabled = state.layers.length >= MAX_LAYERS;
  renderStepsLayerChoice();
}

function clamp(v, low, high) {
  return Math.max(low, Math.min(high, Math.round(v)));
}

function update(index, patch, rerender = false) {
  Object.assign(state.layers[index], patch);
  if (rerender) renderLayers();
  changed();
}

function move(index, delta) {
  const [layer] = state.layers.splice(index, 1);
  state.layers.splice(index + delta, 0, layer);
  renderLayers();
  changed();
}

function remove(index) {
  state.layers.splice(index, 1);
  state.steps_layer = Math.min(state.steps_layer, state.layers.length - 1);
  renderLayers();
  changed();
}

// --- running the pipeline ---------------------------------------------------------------------------------

function changed() {
  writeHash();
  clearTimeout(timer);
  timer = setTimeout(() => {
    convolve();
    loadSteps();
  }, 250);
}

function requestBody() {
  return { ...state.image, grayscale: state.grayscale, max_side: state.max_side, layers: state.layers, render: { mode: state.render } };
}

async function convolve() {
  const id = ++requestId;
  document.body.classList.add("busy");
  try {
    const result = await postJSON("/api/convolve", requestBody());
    if (id !== requestId) return; // a newer edit already asked again
    showError($("error"), null);
    showStages(result);
  } catch (error) {
    if (id === requestId) showError($("error"), error);
  } finally {
    if (id === requestId) document.body.classList.remove("busy");
  }
}

function showStages(result) {
  $("input-shape").textContent = result.input_shape.join("×");
  const stages = $("stages");
  [...stages.querySelectorAll(".pg-stage.output")].forEach((node) => node.remove());
  const heads = document.querySelectorAll("#layers .layer-shape");
  result.layers.forEach((layer, index) => {
    const s = layer.stats;
    stages.append(
      el(
        "figure",
        { class: "pg-stage output", "data-index": index },
        el("img", { src: layer.image, alt: `output of layer ${index + 1}`, width: layer.image_size[0], height: layer.image_size[1] }),
        el(
          "figcaption",
          {},
          el("strong", {}, `${index + 1}. ${layer.type} `),
          el("span", { class: "shape" }, layer.output_shape.join("×")),
          el("span", { class: "formula" }, layer.formula),
          el("span", { class: "stats hint" }, `min ${fmt(s.min)} · max ${fmt(s.max)} · mean ${fmt(s.mean)} · std ${fmt(s.std)}`),
        ),
      ),
    );
    if (heads[index]) heads[index].textContent = `→ ${layer.output_shape.join("×")}`;
  });
  const t = result.timings_ms;
  $("timing").textContent = `(${t.total.toFixed(0)} ms: compute ${t.compute.toFixed(0)}, render ${t.render.toFixed(0)}, encode ${t.encode.toFixed(0)})`;
}

function showInputImage() {
  const img = $("input-image");
  if (state.image.sample) {
    const button = document.querySelector(`button.sample[data-sample="${state.image.sample}"] img`);
    img.src = button ? button.src : "";
  } else {
    img.src = `/api/images/${state.image.image_id}`;
  }
  for (const b of document.querySelectorAll("button.sample")) b.classList.toggle("chosen", b.dataset.sample === state.image.sample);
}

// --- step-through -----------------------------------------------------------------------------------------

function renderStepsLayerChoice() {
  const choice = $("steps-layer");
  choice.replaceChildren(...state.layers.map((layer, i) => el("option", { value: i, selected: i === state.steps_layer }, `${i + 1}. ${layer.type}`)));
}

function parseMatrix(text) {
  return text.trim().split(/\n+/).map((line) => line.trim().split(/[\s,;]+/).map(Number));
}

async function loadSteps() {
  stopPlaying();
  const layer = state.layers[state.steps_layer] || state.layers[0];
  try {
    steps = await postJSON("/api/convolve/steps", { input: parseMatrix(state.matrix), layer });
    showError($("steps-error"), null);
    stepIndex = Math.min(stepIndex, steps.steps.length - 1);
    $("steps-shape").textContent = steps.output_shape.join("×");
    $("steps-formula").textContent = steps.formula;
    showStep();
  } catch (error) {
    steps = null;
    $("padded").replaceChildren();
    $("steps-output").replaceChildren();
    $("step-text").textContent = "";
    showError($("steps-error"), error);
  }
}

function gridTable(table, rows, cellClass) {
  table.replaceChildren(...rows.map((row, r) => el("tr", {}, ...row.map((v, c) => el("td", { class: cellClass(r, c) }, fmt(v))))));
}

function showStep() {
  if (!steps) return;
  const step = steps.steps[stepIndex];
  const inRows = new Set(step.rows);
  const inCols = new Set(step.cols);
  gridTable($("padded"), steps.padded, (r, c) => {
    const classes = [];
    if (steps.is_padding[r][c]) classes.push("pad");
    if (inRows.has(r) && inCols.has(c)) classes.push("win");
    if (step.argmax && step.argmax[0] === r && step.argmax[1] === c) classes.push("chosen");
    return classes.join(" ");
  });
  const shown = steps.output.map((row, r) => row.map((v, c) => (r * row.length + c <= stepIndex ? v : null)));
  gridTable($("steps-output"), shown, (r, c) => (r === step.row && c === step.col ? "win" : ""));
  $("step-text").textContent = explainStep(step);
  $("step-position").textContent = `step ${stepIndex + 1} of ${steps.steps.length}`;
}

function explainStep(step) {
  const at = `out[${step.row}, ${step.col}]`;
  if (step.products) {
    const terms = [];
    step.window.forEach((row, i) => row.forEach((v, j) => terms.push(`${fmt(v)}×${fmt(steps.kernel[i][j])}`)));
    const bias = step.bias ? ` + ${fmt(step.bias)}` : "";
    return `${at} = ${terms.join(" + ")}${bias} = ${fmt(step.sum)}${bias} = ${fmt(step.value)}`;
  }
  const real = step.window.flat().filter((v) => v !== null).map(fmt);
  if (step.count) return `${at} = average(${real.join(", ")}) = ${fmt(step.value)} (${step.count} cells; padding ignored)`;
  if (step.argmax) return `${at} = max(${real.join(", ")}) = ${fmt(step.value)}`;
  return `${at} = f(${fmt(step.window[0][0])}) = ${fmt(step.value)}`;
}

function go(delta) {
  if (!steps) return;
  stepIndex = (stepIndex + delta + steps.steps.length) % steps.steps.length;
  showStep();
}

function stopPlaying() {
  clearInterval(playing);
  playing = null;
  $("step-play").textContent = "play";
}

// --- wiring -----------------------------------------------------------------------------------------------

function applyStateToControls() {
  $("grayscale").checked = state.grayscale;
  $("render-mode").value = state.render;
  $("max-side").value = state.max_side;
  $("matrix").value = state.matrix;
  showInputImage();
  renderLayers();
}

async function start() {
  try {
    presets = await api("/api/convolve/presets");
  } catch (error) {
    showError($("error"), error);
  }
  state = readHash() || defaultState();
  applyStateToControls();
  writeHash();
  convolve();
  loadSteps();
}

for (const button of document.querySelectorAll("button.sample")) {
  button.addEventListener("click", () => {
    state.image = { sample: button.dataset.sample };
    showInputImage();
    changed();
  });
}
$("file-input").addEventListener("change", async () => {
  const file = $("file-input").files[0];
  if (!file) return;
  try {
    const created = await uploadImage(file);
    state.image = { image_id: created.image_id };
    showInputImage();
    changed();
  } catch (error) {
    showError($("error"), error);
  }
});
$("grayscale").addEventListener("change", () => {
  state.grayscale = $("grayscale").checked;
  changed();
});
$("render-mode").addEventListener("change", () => {
  state.render = $("render-mode").value;
  changed();
});
$("max-side").addEventListener("input", () => {
  const v = Number($("max-side").value);
  if (Number.isFinite(v) && v > 0) {
    state.max_side = v;
    changed();
  }
});
for (const type of ["conv", "activation", "pool"]) {
  $(`add-${type}`).addEventListener("click", () => {
    state.layers.push(newLayer(type));
    renderLayers();
    changed();
  });
}
$("copy-link").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(location.href);
    $("copied").hidden = false;
  } catch {
    window.prompt("Copy this link:", location.href);
  }
});
$("steps-layer").addEventListener("change", () => {
  state.steps_layer = Number($("steps-layer").value);
  stepIndex = 0;
  writeHash();
  loadSteps();
});
$("matrix").addEventListener("input", () => {
  state.matrix = $("matrix").value;
  writeHash();
  clearTimeout(timer);
  timer = setTimeout(loadSteps, 250);
});
$("step-prev").addEventListener("click", () => go(-1));
$("step-next").addEventListener("click", () => go(1));
$("step-play").addEventListener("click", () => {
  if (playing) return stopPlaying();
  $("step-play").textContent = "pause";
  playing = setInterval(() => go(1), 700);
});
window.addEventListener("hashchange", () => {
  const next = readHash();
  if (next && JSON.stringify(next) !== JSON.stringify(state)) {
    state = next;
    applyStateToControls();
    convolve();
    loadSteps();
  }
});

start();
