// The tagseg page: upload an image, draw its named segments, explain the one under the pointer.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, image: null, result: null, index: null, anchors: [], colours: [], active: -1, token: "" };

function colour(i) {
  // Well-separated hues (golden angle), alternating lightness so neighbours differ.
  const hue = (i * 137.508) % 360;
  const light = [52, 40, 64][i % 3];
  const c = (1 - Math.abs(2 * light / 100 - 1)) * 0.75;
  const x = c * (1 - Math.abs(((hue / 60) % 2) - 1));
  const m = light / 100 - c / 2;
  const [r, g, b] = hue < 60 ? [c, x, 0] : hue < 120 ? [x, c, 0] : hue < 180 ? [0, c, x]
    : hue < 240 ? [0, x, c] : hue < 300 ? [x, 0, c] : [c, 0, x];
  return [r, g, b].map((v) => Math.round((v + m) * 255));
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : JSON.stringify(body);
  } catch (_) {
    return `HTTP ${response.status}`;
  }
}

// Segment index of every pixel, from the segments' uncompressed COCO RLE (column-major).
function buildIndex(result) {
  const { height, width } = result.image;
  const index = new Int16Array(width * height).fill(-1);
  result.segments.forEach((segment, id) => {
    let position = 0;
    segment.rle.counts.forEach((count, run) => {
      if (run % 2 === 1) {
        for (let i = position; i < position + count; i++) {
          index[(i % height) * width + Math.floor(i / height)] = id;
        }
      }
      position += count;
    });
  });
  return index;
}

// A point deep inside every segment (as the CLI overlay places its names): the pixel farthest, in
// city-block steps, from another segment or the image border (two-pass distance transform).
function segmentAnchors(index, width, height, count) {
  const distance = new Int32Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = y * width + x;
      const id = index[p];
      const up = y > 0 && index[p - width] === id ? distance[p - width] : -1;
      const left = x > 0 && index[p - 1] === id ? distance[p - 1] : -1;
      distance[p] = y === 0 || x === 0 ? 0 : Math.min(up, left) + 1;
    }
  }
  const best = new Array(count).fill(null);
  for (let y = height - 1; y >= 0; y--) {
    for (let x = width - 1; x >= 0; x--) {
      const p = y * width + x;
      const id = index[p];
      const down = y < height - 1 && index[p + width] === id ? distance[p + width] : -1;
      const right = x < width - 1 && index[p + 1] === id ? distance[p + 1] : -1;
      if (y === height - 1 || x === width - 1) distance[p] = 0;
      else distance[p] = Math.min(distance[p], Math.min(down, right) + 1);
      if (id >= 0 && (best[id] === null || distance[p] >= best[id].depth)) best[id] = { x, y, depth: distance[p] };
    }
  }
  return best;
}

// Each segment's name on a tag of its colour at its anchor, largest segment first; a tag that
// would cover one already drawn moves up or down, or is left out (the legend lists every name).
function drawNames(context) {
  const canvas = $("view");
  const shown = canvas.getBoundingClientRect().width;
  const scale = shown > 0 ? canvas.width / shown : 1;
  const size = Math.round(Math.max(12 * scale, Math.min(canvas.width, canvas.height) / 30));
  context.font = `600 ${size}px system-ui, sans-serif`;
  context.textAlign = "center";
  context.textBaseline = "middle";
  const placed = [];
  const overlaps = (a, b) => a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
  state.result.segments.forEach((segment, id) => {
    const anchor = state.anchors[id];
    if (!anchor) return;
    const width = context.measureText(segment.label).width + size * 0.6;
    const height = size * 1.4;
    for (const shift of [0, -1, 1, -2, 2]) {
      const cx = Math.min(Math.max(anchor.x, width / 2), canvas.width - width / 2);
      const cy = Math.min(Math.max(anchor.y + shift * height, height / 2), canvas.height - height / 2);
      const box = [cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2].map(Math.round);
      if (placed.some((other) => overlaps(box, other.box))) continue;
      const [r, g, b] = state.colours[id];
      context.fillStyle = `rgb(${r},${g},${b})`;
      context.fillRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
      const ink = 0.299 * r + 0.587 * g + 0.114 * b > 140 ? [0, 0, 0] : [255, 255, 255];
      context.fillStyle = `rgb(${ink.join(",")})`;
      context.fillText(segment.label, cx, cy);
      placed.push({ label: segment.label, box, colour: [r, g, b], ink });
      return;
    }
  });
  canvas.dataset.names = JSON.stringify(placed);
}

function draw() {
  const canvas = $("view");
  const { width, height } = state.result.image;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(state.image, 0, 0, width, height);
  const pixels = context.getImageData(0, 0, width, height);
  const data = pixels.data;
  for (let p = 0; p < state.index.length; p++) {
    const id = state.index[p];
    if (id < 0) continue;
    const alpha = state.active < 0 ? 0.45 : id === state.active ? 0.7 : 0.12;
    const [r, g, b] = state.colours[id];
    const o = p * 4;
    data[o] = data[o] * (1 - alpha) + r * alpha;
    data[o + 1] = data[o + 1] * (1 - alpha) + g * alpha;
    data[o + 2] = data[o + 2] * (1 - alpha) + b * alpha;
  }
  context.putImageData(pixels, 0, 0);
  drawNames(context);
}

function fillList(list, items) {
  list.replaceChildren(...items.map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    return item;
  }));
}

function highlight(id) {
  if (id === state.active) return;
  state.active = id;
  draw();
  document.querySelectorAll("#legend button").forEach((button) => {
    button.classList.toggle("active", Number(button.dataset.segment) === id);
  });
  const segment = state.result.segments[id];
  $("seg-name").textContent = segment ? segment.label : "Hover or tap a region";
  $("seg-score").textContent = segment
    ? `score ${segment.score.toFixed(3)} · ${(100 * segment.area / state.index.length).toFixed(1)}% of the image` : "";
  const scored = segment ? segment.candidates.filter((c) => c.score.toFixed(3) !== "0.000" && c.score.toFixed(3) !== "-0.000") : [];
  fillList($("seg-candidates"), scored.map((c) => `${c.name} (${c.score.toFixed(3)}, ×${c.count})`));
  fillList($("seg-retrieved"), segment ? segment.retrieved.map((r) => `${r.text} (${r.similarity.toFixed(3)})`) : []);
}

function segmentAt(event) {
  const canvas = $("view");
  const box = canvas.getBoundingClientRect();
  const x = Math.floor((event.clientX - box.left) * canvas.width / box.width);
  const y = Math.floor((event.clientY - box.top) * canvas.height / box.height);
  if (x < 0 || y < 0 || x >= canvas.width || y >= canvas.height) return -1;
  return state.index[y * canvas.width + x];
}

function showLegend() {
  $("legend").replaceChildren(...state.result.segments.map((segment, id) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.segment = String(id);
    const swatch = document.createElement("i");
    swatch.style.background = `rgb(${state.colours[id].join(",")})`;
    button.append(swatch, segment.label);
    button.addEventListener("mouseenter", () => highlight(id));
    button.addEventListener("focus", () => highlight(id));
    button.addEventListener("click", () => highlight(id));
    item.append(button);
    return item;
  }));
}

// Hide the shown result, so that an error is never read as being about the image above it.
function clearResult() {
  state.result = null;
  state.active = -1;
  $("stage").hidden = true;
  $("panel").hidden = true;
}

// Segment the chosen image and show it; ``note`` goes before the summary in the status line.
async function run(note = "") {
  if (!state.file) return;
  const canvas = $("view");
  canvas.dataset.ready = "false";
  setStatus("Segmenting…");
  const form = new FormData();
  form.append("image", state.file);
  form.append("names", $("names").value);
  let response;
  try {
    response = await fetch("/v1/segment", { method: "POST", body: form });
  } catch (error) {
    clearResult();
    setStatus(`The server cannot be reached: ${error}`, true);
    return;
  }
  if (!response.ok) {
    clearResult();
    setStatus(await errorMessage(response), true);
    return;
  }
  state.result = await response.json();
  state.image = await createImageBitmap(state.file, { imageOrientation: "from-image" });
  state.index = buildIndex(state.result);
  state.anchors = segmentAnchors(state.index, state.result.image.width, state.result.image.height, state.result.segments.length);
  state.colours = state.result.segments.map((_, i) => colour(i));
  state.active = -2;
  canvas.width = state.result.image.width;
  canvas.height = state.result.image.height;
  $("stage").hidden = false;
  $("panel").hidden = false;
  showLegend();
  highlight(-1);
  const names = state.result.segments.map((s) => s.label);
  setStatus(`${note}${names.length} regions: ${names.join(", ")}`);
  canvas.dataset.runs = String(Number(canvas.dataset.runs || 0) + 1);
  canvas.dataset.ready = "true";
}

function choose(file) {
  if (!file) return;
  state.file = file;
  run();
}

async function addConcepts(event) {
  event.preventDefault();
  const texts = $("concept-text").value.split(/[\n,]/).map((t) => t.trim()).filter(Boolean);
  if (!texts.length) return;
  const headers = { "Content-Type": "application/json" };
  if ($("token").value) headers.Authorization = `Bearer ${$("token").value}`;
  const response = await fetch("/v1/database/add", { method: "POST", headers, body: JSON.stringify({ texts }) });
  if (!response.ok) {
    setStatus(await errorMessage(response), true);
    return;
  }
  const body = await response.json();
  $("concept-text").value = "";
  await run(`Added ${body.added} text(s); the database holds ${body.size}. `);
}

async function init() {
  $("file").addEventListener("change", (event) => choose(event.target.files[0]));
  $("names").addEventListener("change", () => run());
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files[0]);
  });
  const canvas = $("view");
  canvas.addEventListener("pointermove", (event) => highlight(segmentAt(event)));
  canvas.addEventListener("pointerdown", (event) => highlight(segmentAt(event)));
  $("concepts").addEventListener("submit", addConcepts);
  try {
    const info = await (await fetch("/v1/info")).json();
    $("concepts").hidden = !info.service.database_writes;
    $("token").hidden = !info.service.token_required;
  } catch (_) {
    setStatus("The server's settings could not be read.", true);
  }
}

init();
