// Page "/explore": architecture table, feature maps with receptive fields, filters, head and explanations.
import { api, postJSON, showError, uploadImage } from "./api.js";

const $ = (id) => document.getElementById(id);
const errorBox = $("error");
const modelSelect = $("model-select");
const state = { ref: null, layer: null, features: null, arch: null };

const fmt = (n) => n.toLocaleString("en-US");
const shape = (s) => (s ? s.join("×") : "–");

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

async function run(task) {
  showError(errorBox, null);
  document.body.classList.add("busy");
  try {
    await task();
  } catch (error) {
    showError(errorBox, error);
  } finally {
    document.body.classList.remove("busy");
  }
}

const hasWeights = () => modelSelect.selectedOptions[0]?.dataset.available === "yes";

// --- architecture ----------------------------------------------------------------------------------------
async function loadArchitecture() {
  const arch = await api(`/api/models/${encodeURIComponent(modelSelect.value)}/architecture`);
  state.arch = arch;
  $("arch-summary").textContent =
    `${fmt(arch.total_params)} parameters (${fmt(arch.trainable_params)} trainable), input ${shape(arch.input_shape)}`;
  const rows = arch.layers.map((layer) => {
    const tr = document.createElement("tr");
    tr.dataset.path = layer.path;
    tr.style.setProperty("--depth", layer.depth - 1);
    const spatial = layer.output_shape && layer.output_shape.length === 3;
    if (spatial) tr.classList.add("spatial");
    const own = layer.params_weight + layer.params_bias + layer.params_other;
    const params = layer.is_leaf ? fmt(own) : `(${fmt(layer.params_total)})`;
    const kernel = layer.kernel_size
      ? `${layer.kernel_size.join("×")} / ${layer.stride.join("×")}${layer.groups > 1 ? ` g${layer.groups}` : ""}`
      : "";
    const rf = layer.receptive_field;
    tr.append(
      cell(layer.path, "path"),
      cell(layer.type),
      cell(shape(layer.output_shape)),
      cell(params, "num"),
      cell(kernel),
      cell(rf ? `${rf.size[0]}px, jump ${rf.jump[0]}` : ""),
      cell(layer.fc_equivalent_params ? fmt(layer.fc_equivalent_params) : "", "num"),
    );
    tr.addEventListener("click", () => run(() => selectLayer(layer)));
    return tr;
  });
  $("arch-table").querySelector("tbody").replaceChildren(...rows);
}

async function selectLayer(layer) {
  for (const tr of document.querySelectorAll("#arch-table tr.selected")) tr.classList.remove("selected");
  document.querySelector(`#arch-table tr[data-path="${CSS.escape(layer.path)}"]`)?.classList.add("selected");
  const tasks = [];
  if (layer.output_shape && layer.output_shape.length === 3) {
    state.layer = layer.path;
    if (state.ref && hasWeights()) tasks.push(loadFeatures());
  }
  if (layer.kernel_size && layer.groups !== null && hasWeights()) {
    $("filter-index").value = 0;
    tasks.push(loadFilters(layer.path));
  }
  await Promise.all(tasks);
}

// --- feature maps ----------------------------------------------------------------------------------------
async function loadFeatures(channel = null) {
  const payload = { ...state.ref, model: modelSelect.value, sort: $("sort-select").value, top_k: 8 };
  if (state.layer) payload.layer = state.layer;
  if (channel !== null) payload.channel = channel;
  const result = await postJSON("/api/features", payload);
  state.features = result;
  state.layer = result.layer;
  $("features-layer").textContent = `${result.layer}: ${shape(result.shape)}`;
  $("features-hint").textContent = "Click a cell: its channel is drawn over the input and the box shows what that unit sees.";
  const grid = $("feature-grid");
  grid.src = result.grid.image;
  grid.hidden = false;
  $("top-channels").replaceChildren(
    ...result.top.map((s) => {
      const li = document.createElement("li");
      li.textContent = `channel ${s.channel}: mean ${s.mean.toFixed(3)}, max ${s.max.toFixed(3)}`;
      return li;
    }),
  );
  const over = $("channel-overlay");
  over.hidden = !result.channel_overlay;
  if (result.channel_overlay) over.src = result.channel_overlay;
  if (channel === null) $("rf-box").hidden = true;
}

function showReceptiveField(i, j) {
  const f = state.features;
  const rf = f.receptive_field;
  if (!rf) return;
  const view = $("input-view");
  const scale = view.clientWidth / f.input_size;
  const cy = rf.start[0] + i * rf.jump[0];
  const cx = rf.start[1] + j * rf.jump[1];
  const top = Math.max(0, cy - (rf.size[0] - 1) / 2);
  const left = Math.max(0, cx - (rf.size[1] - 1) / 2);
  const bottom = Math.min(f.input_size, cy + (rf.size[0] + 1) / 2);
  const right = Math.min(f.input_size, cx + (rf.size[1] + 1) / 2);
  const box = $("rf-box");
  Object.assign(box.style, {
    top: `${top * scale}px`, left: `${left * scale}px`,
    height: `${(bottom - top) * scale}px`, width: `${(right - left) * scale}px`,
  });
  box.hidden = false;
  $("rf-info").textContent =
    `unit (${i}, ${j}) sees input rows ${Math.round(top)}–${Math.round(bottom)}, columns ${Math.round(left)}–${Math.round(right)} (receptive field ${rf.size[0]}px)`;
}

$("feature-grid").addEventListener("click", (event) => {
  const f = state.features;
  if (!f) return;
  const img = event.currentTarget;
  const x = (event.offsetX * img.naturalWidth) / img.clientWidth;
  const y = (event.offsetY * img.naturalHeight) / img.clientHeight;
  const step = f.grid.tile + f.grid.gap;
  const col = Math.floor(x / step);
  const row = Math.floor(y / step);
  const index = row * f.grid.columns + col;
  if (col >= f.grid.columns || index >= f.grid.order.length) return;
  const [, height, width] = f.shape;
  const i = Math.min(height - 1, Math.floor(((y - row * step) / f.grid.tile) * height));
  const j = Math.min(width - 1, Math.floor(((x - col * step) / f.grid.tile) * width));
  const channel = f.grid.order[index];
  run(async () => {
    await loadFeatures(channel);
    showReceptiveField(i, j);
    $("rf-info").textContent = `channel ${channel}, ${$("rf-info").textContent}`;
  });
});

// --- filters ---------------------------------------------------------------------------------------------
async function loadFilters(layer) {
  const params = new URLSearchParams({ filter: $("filter-index").value || "0" });
  if (layer) params.set("layer", layer);
  const result = await api(`/api/models/${encodeURIComponent(modelSelect.value)}/filters?${params}`);
  state.filtersLayer = result.layer;
  $("filters-layer").textContent =
    `${result.layer}: ${shape(result.shape)} (${result.mode === "rgb" ? "every filter in colour" : `filter ${result.filter}, one tile per input channel`})`;
  $("filter-index").max = result.shape[0] - 1;
  const grid = $("filters-grid");
  grid.src = result.grid.image;
  grid.hidden = false;
  const rows = result.values.map((plane, c) =>
    `in ${c}:\n` + plane.map((r) => r.map((v) => v.toFixed(3).padStart(7)).join(" ")).join("\n"));
  $("filter-values").textContent =
    `filter ${result.filter}, bias ${result.bias === null ? "none" : result.bias.toFixed(4)}\n${rows.slice(0, 16).join("\n")}` +
    (rows.length > 16 ? `\n… ${rows.length - 16} more input channels` : "");
}
$("filter-index").addEventListener("change", () => run(() => loadFilters(state.filtersLayer)));

// --- head ------------------------------------------------------------------------------------------------
async function loadHead() {
  const head = await postJSON("/api/head", { ...state.ref, model: modelSelect.value, top_k: 10 });
  $("head-summary").textContent =
    `${head.in_features} features → ${head.layer} (${head.in_features}×${head.num_classes} weights) → ` +
    `${head.num_classes} logits → softmax: p = exp(logit − ${head.logsumexp.toFixed(2)})`;
  $("head-table").querySelector("tbody").replaceChildren(
    ...head.classes.map((c) => {
      const tr = document.createElement("tr");
      tr.append(cell(c.label), cell(c.logit.toFixed(3), "num"), cell(`${(c.probability * 100).toFixed(2)}%`, "num"));
      return tr;
    }),
  );
  $("class-index").max = head.num_classes - 1;
  $("class-index").placeholder = `0–${head.num_classes - 1}`;
  $("class-select").replaceChildren(
    ...head.classes.map((c) => new Option(`${c.label} (${(c.probability * 100).toFixed(1)}%)`, c.index)),
  );
}

// --- explanations ----------------------------------------------------------------------------------------
async function explain() {
  if (!state.ref) throw new Error("choose a photo first");
  const method = $("method-select").value;
  const payload = { ...state.ref, model: modelSelect.value };
  payload.method = method === "smoothgrad" ? "saliency" : method;
  if (method === "smoothgrad") payload.smoothgrad_samples = 8;
  const typed = $("class-index").value;
  if (typed !== "") payload.target = Number(typed);
  else if ($("class-select").value !== "") payload.target = Number($("class-select").value);
  const result = await postJSON("/api/explain", payload);
  const img = $("explain-overlay");
  img.src = result.overlay;
  img.hidden = false;
  $("explain-caption").textContent =
    `${result.method} for “${result.label}” (${(result.probability * 100).toFixed(1)}%)` +
    (result.layer ? ` at layer ${result.layer}` : "") + `, ${Math.round(result.timings_ms.total)} ms`;
}
$("explain-button").addEventListener("click", () => run(explain));

// --- choosing the image and the model --------------------------------------------------------------------
async function useImage(ref) {
  state.ref = ref;
  const params = new URLSearchParams({ ...ref, model: modelSelect.value });
  $("input-view").src = `/api/model-input?${params}`;
  $("explain-overlay").hidden = true;
  if (!hasWeights()) throw new Error(`${modelSelect.value} has no trained weights here: only its architecture can be shown.`);
  await Promise.all([loadFeatures(), loadHead()]);
}

for (const button of document.querySelectorAll("button.sample")) {
  button.addEventListener("click", () => run(() => useImage({ sample: button.dataset.sample })));
}
$("file-input").addEventListener("change", () =>
  run(async () => {
    const file = $("file-input").files[0];
    if (!file) return;
    const created = await uploadImage(file);
    await useImage({ image_id: created.image_id });
  }),
);
$("sort-select").addEventListener("change", () => run(async () => { if (state.ref) await loadFeatures(); }));
modelSelect.addEventListener("change", () =>
  run(async () => {
    state.layer = null;
    state.features = null;
    await loadArchitecture();
    if (hasWeights()) await loadFilters(null);
    if (state.ref) await useImage(state.ref);
  }),
);

run(async () => {
  await loadArchitecture();
  if (hasWeights()) await loadFilters(null);
});
