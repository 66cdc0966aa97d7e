// genlab studio: the page's behaviour, in plain browser JavaScript (no build step, no libraries).
//
// Every action is one call to the public HTTP API (/v1/...), the same calls the README shows
// with curl. Errors from the API (JSON with a message and often a hint) are shown next to the
// control that caused them, never swallowed: a person should know what went wrong and what
// to change.
"use strict";

const $ = (id) => document.getElementById(id);

// ----------------------------------------------------------------------------- talking to the API

class ApiError extends Error {}
// An input the page refused before sending: its message is already shown next to the control.
class InputError extends Error {}

// Seeds. The server takes 0..2^63-1 (genlab.limits.MAX_SEED), beyond the integers a JavaScript
// number holds exactly (2^53), so the page never turns a seed into a Number: it is read from its
// input as text, checked with BigInt (the browser's own max check compares doubles, for which
// 2^63 and 2^63-1 are the same number) and written into JSON bodies as the very digits typed
// (jsonBody); multipart forms send it as text anyway. A seed typed in the page therefore gives
// the same result as the same seed sent with curl or Python.
const MAX_SEED = 9223372036854775807n;
const MAX_UPLOAD_SIDE = 512; // larger images are shrunk in the page before upload (the models work at 8..32 px)

// The message a person can act on. genlab's API answers errors with
// {"error": {"message", "hint", ...}}; anything else (a proxy's HTML page, say) is shown as text.
function errorText(status, body) {
  const error = body && typeof body === "object" ? body.error : null;
  if (error && error.message) return `HTTP ${status}: ${error.message}${error.hint ? `\nhint: ${error.hint}` : ""}`;
  const text = typeof body === "string" ? body.trim().slice(0, 500) : JSON.stringify(body);
  return `HTTP ${status}: ${text || "the server gave no reason"}`;
}

async function readError(response) {
  const text = await response.text();
  let body = text;
  try { body = JSON.parse(text); } catch { /* not JSON: show the text itself */ }
  return new ApiError(errorText(response.status, body));
}

// fetch that turns a failed request (network or HTTP status) into an ApiError with a readable message.
// A server started with --api-key answers 401 without `Authorization: Bearer KEY`: the page asks
// for the key once, keeps it for this tab only (sessionStorage) and sends it with every request.
const KEY_SLOT = "genlab-api-key";

function withKey(options) {
  const key = sessionStorage.getItem(KEY_SLOT);
  return key ? { ...options, headers: { ...(options.headers ?? {}), Authorization: `Bearer ${key}` } } : options;
}

async function request(path, options = {}) {
  let response;
  try {
    const sent = sessionStorage.getItem(KEY_SLOT);
    response = await fetch(path, withKey(options));
    if (response.status === 401) {
      // Several requests may be refused at once: only the first asks, the others use its answer.
      if (sessionStorage.getItem(KEY_SLOT) === sent) {
        const key = window.prompt("This genlab server needs its API key (genlab serve --api-key):");
        if (key) sessionStorage.setItem(KEY_SLOT, key.trim());
      }
      if (sessionStorage.getItem(KEY_SLOT) !== sent) response = await fetch(path, withKey(options));
    }
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(`cannot reach the genlab server (${e.message}); is \`genlab serve\` still running?`);
  }
  if (!response.ok) throw await readError(response);
  return response;
}

async function getJSON(path) {
  return (await request(path)).json();
}

// JSON.stringify, except that BigInt values (seeds) are written as plain JSON integers, digit for digit.
function jsonBody(payload) {
  const mark = `bigint-${Math.random().toString(36).slice(2)}:`;
  const text = JSON.stringify(payload, (key, value) => (typeof value === "bigint" ? `${mark}${value}` : value));
  return text.replace(new RegExp(`"${mark}(\\d+)"`, "g"), "$1");
}

function postJSON(path, payload, signal) {
  return request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: jsonBody(payload),
    signal,
  });
}

function showError(id, error) {
  const box = $(id);
  if (!error) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = error instanceof ApiError ? error.message : `unexpected problem in the page: ${error}`;
  box.hidden = false;
  if (!(error instanceof ApiError)) console.error(error);
}

// Runs an action with its button disabled, a status line and errors shown in `errorId`.
async function busy(button, statusId, errorId, work) {
  button.disabled = true;
  showError(errorId, null);
  const status = $(statusId);
  const started = performance.now();
  status.textContent = "working…";
  try {
    const note = await work();
    status.textContent = `${note ?? "done"} in ${((performance.now() - started) / 1000).toFixed(1)} s`;
  } catch (e) {
    status.textContent = e instanceof InputError ? e.message : "";
    if (!(e instanceof InputError)) showError(errorId, e);
  } finally {
    button.disabled = false;
  }
}

function base64ToBlob(data, type) {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

// Blob URLs of earlier results are released when replaced, so a long session does not leak memory.
const objectUrls = new Map();
function setObjectUrl(slot, blob) {
  if (objectUrls.has(slot)) URL.revokeObjectURL(objectUrls.get(slot));
  const url = URL.createObjectURL(blob);
  objectUrls.set(slot, url);
  return url;
}

// Optional integer input: empty means "not given" (the server's default).
function intOrNull(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

function numberOrNull(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

// A seed input's value as a BigInt (exact up to 2^63-1), or null when empty; validate() has checked it.
function seedOrNull(id) {
  const text = $(id).value.trim();
  return text === "" ? null : BigInt(text);
}

function withoutNulls(payload) {
  return Object.fromEntries(Object.entries(payload).filter(([, v]) => v !== null && v !== undefined));
}

// ----------------------------------------------------------------------------- checking inputs before sending

// The page checks every input against its own bounds (min, max, step, and the checks below) with the
// browser's validity API before it sends anything, and shows the reason next to the control; the
// API's 422 remains the last word for anything the page cannot know.
function customProblem(input) {
  const text = input.value.trim();
  if (input.hasAttribute("data-seed") && text !== "" && (!/^\d+$/.test(text) || BigInt(text) > MAX_SEED)) {
    return `a seed is a whole number from 0 to ${MAX_SEED} (2^63 - 1)`;
  }
  if (input.dataset.exclusiveMin !== undefined && text !== "" && !(Number(text) > Number(input.dataset.exclusiveMin))) {
    return `must be more than ${input.dataset.exclusiveMin}`;
  }
  const maxBytes = Number(input.dataset.maxBytes);
  const file = input.files?.[0];
  if (maxBytes && file && file.size > maxBytes) {
    return `${file.name} is ${file.size.toLocaleString("en")} bytes; the limit is ${maxBytes.toLocaleString("en")}`;
  }
  const count = input.dataset.files;
  if (input.type === "file" && count && input.files.length && String(input.files.length) !== count) {
    return `choose exactly ${count} files (${input.files.length} chosen)`;
  }
  return "";
}

function checkInput(input) {
  if (!input.willValidate) return true;
  input.setCustomValidity(customProblem(input));
  const valid = input.checkValidity();
  let note = document.getElementById(`${input.id || input.name}-invalid`);
  if (!valid && !note) {
    note = document.createElement("span");
    note.className = "invalid";
    note.id = `${input.id || input.name}-invalid`;
    note.setAttribute("role", "alert");
    input.insertAdjacentElement("afterend", note);
    input.setAttribute("aria-describedby", note.id);
  }
  if (note) {
    note.textContent = valid ? "" : input.validationMessage;
    note.hidden = valid;
  }
  input.classList.toggle("is-invalid", !valid);
  return valid;
}

// Checks the inputs inside `container`; throws an InputError (nothing is sent) if any is out of range.
function validate(container) {
  const bad = Array.from(container.querySelectorAll("input, select, textarea")).filter((input) => !checkInput(input));
  if (bad.length) {
    bad[0].focus();
    throw new InputError(`not sent: fix the marked field${bad.length === 1 ? "" : "s"}`);
  }
}

// ----------------------------------------------------------------------------- shrinking large uploads

// An image larger than MAX_UPLOAD_SIDE on either side is drawn onto a canvas at most that size,
// keeping its aspect ratio, and sent as PNG: the models work at 8x8 to 32x32, so the full photo
// would only cost upload time (and could pass the server's 4 MiB limit). Anything the browser
// cannot decode is sent as it is, for the server to explain.
async function shrinkImage(file) {
  if (!file.type.startsWith("image/")) return { file, note: "" };
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return { file, note: "" };
  }
  const { width, height } = bitmap;
  const scale = MAX_UPLOAD_SIDE / Math.max(width, height);
  if (scale >= 1) {
    bitmap.close();
    return { file, note: "" };
  }
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  const context = canvas.getContext("2d");
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  const blob = await canvasBlob(canvas);
  const name = `${(file.name || "image").replace(/\.[^.]*$/, "")}.png`;
  return { file: new File([blob], name, { type: "image/png" }),
           note: `shrunk in the page from ${width}x${height} to ${canvas.width}x${canvas.height}` };
}

// ----------------------------------------------------------------------------- tabs

function showTab(name) {
  for (const button of document.querySelectorAll("nav [data-tab]")) {
    const selected = button.dataset.tab === name;
    button.setAttribute("aria-selected", String(selected));
    $(`tab-${button.dataset.tab}`).hidden = !selected;
  }
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}

// ----------------------------------------------------------------------------- models

let models = [];

// A select lists the models whose entry in GET /v1/models names its endpoint (data-endpoint).
// A model that cannot be read is left out of the selects; the Models tab shows why.
function fillModelSelects() {
  for (const select of document.querySelectorAll("select[data-endpoint]")) {
    const previous = select.value;
    const fitting = models.filter((m) => (m.endpoints ?? []).includes(select.dataset.endpoint));
    select.replaceChildren(...fitting.map((m) => new Option(m.id, m.id)));
    if (fitting.length === 0) {
      select.append(new Option("(no model for this in the models directory)", ""));
    }
    if (fitting.some((m) => m.id === previous)) select.value = previous;
  }
  // Tabs for one kind of model (Translate, Chat) show when the models directory has one.
  for (const button of document.querySelectorAll("nav [data-endpoint]")) {
    button.hidden = !models.some((m) => (m.endpoints ?? []).includes(button.dataset.endpoint));
  }
}

function fillModelsTable() {
  const rows = models.map((m) => {
    const row = document.createElement("tr");
    row.dataset.model = m.id;
    const about = m.error ? `cannot be used: ${m.error}${m.hint ? ` (${m.hint})` : ""}` : m.description ?? "";
    for (const text of [m.id, m.family ?? "", m.data_kind ?? "", (m.capabilities ?? []).join(", "), about]) {
      row.insertCell().textContent = text;
    }
    if (m.error) row.classList.add("broken");
    row.addEventListener("click", () => showModel(m.id));
    return row;
  });
  $("models-table").tBodies[0].replaceChildren(...rows);
}

async function loadModels() {
  showError("models-error", null);
  try {
    const listing = await getJSON("/v1/models");
    models = listing.data;
    fillModelSelects();
    samplerConfigs.clear(); // a retrained model may have other defaults
    updateSamplerControls();
    fillModelsTable();
    loadCatalogue();
  } catch (e) {
    showError("models-error", e);
    showError("generate-error", e);
  }
}

// Nested metrics ({"val": {"loss": ...}}) flattened to dotted rows ("val.loss").
function flatten(value, prefix = "", rows = []) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, rows);
  } else {
    rows.push([prefix, value]);
  }
  return rows;
}

function formatValue(value) {
  if (typeof value === "number" && !Number.isInteger(value)) return String(Number(value.toPrecision(5))); // 5 digits, no trailing zeros
  return Array.isArray(value) ? JSON.stringify(value) : String(value);
}

// `genlab eval` results set each sample metric beside its floor: the same metric between real data
// sets (images: "metrics" and "floor"; music: "distances" and "floor", "statistics" and the data's
// "reference"; text: "metrics" and real text's "reference"). These pairs become rows
// metric | model | floor; the flat table below keeps everything else.
const FLOOR_PAIRS = [["metrics", "floor"], ["distances", "floor"], ["metrics", "reference"], ["statistics", "reference"]];

function compareWithFloors(metrics) {
  const rows = [], notes = [], shown = new Set();
  const isObject = (v) => v && typeof v === "object" && !Array.isArray(v);
  const walk = (value, prefix) => {
    if (!isObject(value)) return;
    for (const [modelKey, floorKey] of FLOOR_PAIRS) {
      const model = value[modelKey], floor = value[floorKey];
      if (!isObject(model) || !isObject(floor) || modelKey === floorKey) continue;
      if ((modelKey === "metrics" && floorKey === "reference" && isObject(value.floor))) continue;
      for (const [key, number] of Object.entries(model)) {
        if (!(key in floor)) continue;
        const row = document.createElement("tr");
        row.dataset.metric = `${prefix}${modelKey}.${key}`;
        row.insertCell().textContent = `${prefix}${key}`;
        row.insertCell().textContent = number === null ? "n/a" : formatValue(number);
        const cell = row.insertCell();
        cell.textContent = floor[key] === null ? "n/a" : formatValue(floor[key]);
        cell.title = floorKey === "floor" ? "the same metric between real data sets" : "the same statistic of real data";
        rows.push(row);
        shown.add(`${prefix}${modelKey}.${key}`);
        shown.add(`${prefix}${floorKey}.${key}`);
      }
      for (const note of ["floor_definition", "reference_definition"]) {
        if (typeof value[note] === "string" && !notes.includes(`floor: ${value[note]}.`)) notes.push(`floor: ${value[note]}.`);
      }
    }
    for (const [key, inner] of Object.entries(value)) {
      if (prefix === "" && key === "evals" && isObject(value.eval)) continue; // earlier evaluations; "eval" is the latest
      walk(inner, `${prefix}${key}.`);
    }
  };
  walk(metrics, "");
  return { rows, notes, shown };
}

async function showModel(name) {
  for (const row of $("models-table").tBodies[0].rows) row.classList.toggle("selected", row.dataset.model === name);
  $("model-detail").hidden = false;
  $("model-detail-name").textContent = name;
  showError("model-detail-error", null);
  try {
    const detail = await getJSON(`/v1/models/${encodeURIComponent(name)}`);
    const compared = compareWithFloors(detail.metrics ?? {});
    $("model-floors").tBodies[0].replaceChildren(...compared.rows);
    $("model-floors-note").textContent = compared.notes.join(" ");
    $("model-floors-box").hidden = compared.rows.length === 0;
    const rows = flatten(detail.metrics ?? {}).filter(([key]) => !compared.shown.has(key)).map(([key, value]) => {
      const row = document.createElement("tr");
      row.insertCell().textContent = key;
      row.insertCell().textContent = formatValue(value);
      return row;
    });
    $("model-metrics").tBodies[0].replaceChildren(...rows);
    $("model-config").textContent = JSON.stringify(detail.config, null, 2);
    // An image model's sample grid from training (a URL under /v1/models/NAME/previews/), or a text model's samples.
    const grid = (detail.previews ?? {})["samples.png"];
    $("model-samples").hidden = !grid;
    if (grid) $("model-samples").src = grid;
    $("model-samples-text").hidden = !detail.samples_text;
    $("model-samples-text").textContent = detail.samples_text ?? "";
    $("model-no-samples").hidden = Boolean(grid || detail.samples_text);
  } catch (e) {
    showError("model-detail-error", e);
  }
}

// ----------------------------------------------------------------------------- images: generate

// A diffusion model's sampler controls are shown for the models GET /v1/models lists with family
// "diffusion"; guidance only for class-conditional ones (capability "conditional"). Their defaults
// (placeholders) and the steps bound (the training timesteps) come from the model's config.json,
// read once per model from GET /v1/models/NAME. Hidden controls are disabled: not checked, not sent.
const samplerConfigs = new Map(); // model name -> the "model" section of its config
let imagePreviews = []; // the partial_image events of the last streamed generation, in order

async function updateSamplerControls() {
  const name = $("generate-model").value;
  const listed = models.find((m) => m.id === name);
  const diffusion = listed?.family === "diffusion";
  const box = $("generate-diffusion");
  delete box.dataset.model;
  box.hidden = !diffusion;
  for (const input of box.querySelectorAll("input, select")) input.disabled = !diffusion;
  if (!diffusion) return;
  const conditional = (listed.capabilities ?? []).includes("conditional");
  $("generate-guidance-label").hidden = !conditional;
  $("generate-guidance").disabled = !conditional;
  let config = samplerConfigs.get(name);
  if (!config) {
    try {
      config = (await getJSON(`/v1/models/${encodeURIComponent(name)}`)).config?.model ?? {};
    } catch (e) {
      showError("generate-error", e);
      return;
    }
    samplerConfigs.set(name, config);
  }
  if ($("generate-model").value !== name) return; // another model was picked meanwhile
  const steps = $("generate-steps");
  steps.max = String(config.timesteps ?? 10000);
  steps.placeholder = config.sample_steps === undefined ? "" : String(config.sample_steps);
  $("generate-sampler").options[0].textContent = config.sampler ? `model's (${config.sampler})` : "model's";
  $("generate-guidance").placeholder = config.guidance_scale === undefined ? "" : String(config.guidance_scale);
  if (steps.classList.contains("is-invalid")) checkInput(steps);
  box.dataset.model = name; // the controls now describe this model
}

// The events of a streamed generation (POST /v1/images/generations with stream: true): each
// partial_image is the batch's current x_t after one sampler step, shown in place while the
// images sharpen; the completed event carries the images themselves.
async function readImageStream(response, n) {
  imagePreviews = [];
  const figure = $("generate-preview-figure");
  const preview = $("generate-preview");
  preview.style.width = `${Math.ceil(Math.sqrt(n)) * 64}px`; // the size of the grid it becomes
  figure.hidden = false;
  let data = null;
  try {
    for await (const text of serverSentEvents(response)) {
      if (text === "[DONE]") break;
      const event = JSON.parse(text);
      if (event.error) throw new ApiError(errorText(event.error.code ?? "error", event)); // failed mid-stream
      if (event.type === "image_generation.partial_image") {
        imagePreviews.push(event);
        preview.src = `data:image/png;base64,${event.b64_json}`;
        figure.dataset.step = String(event.step);
        $("generate-preview-caption").textContent = `step ${event.step} of ${event.steps}`;
        $("generate-status").textContent = `step ${event.step} of ${event.steps}…`;
      } else if (event.type === "image_generation.completed") {
        data = event.data;
      }
    }
  } finally {
    figure.hidden = true;
  }
  if (!data) throw new ApiError("the stream ended without the images; try again");
  return data;
}

async function generateImages() {
  validate($("generate-form"));
  const n = intOrNull("generate-n");
  const diffusion = !$("generate-diffusion").hidden;
  const stream = diffusion && $("generate-stream").checked;
  const payload = withoutNulls({
    model: $("generate-model").value,
    n,
    seed: seedOrNull("generate-seed"),
    class: intOrNull("generate-class"),
    response_format: "b64_json", // one image each, so a click can pick one to edit
    sampler: diffusion ? $("generate-sampler").value || null : null,
    steps: diffusion ? intOrNull("generate-steps") : null,
    guidance_scale: diffusion && !$("generate-guidance").disabled ? numberOrNull("generate-guidance") : null,
    stream: stream || null,
  });
  const response = await postJSON("/v1/images/generations", payload);
  const result = stream ? { data: await readImageStream(response, n ?? 16) } : await response.json();
  const images = (result.data ?? []).map((item, i) => {
    const img = document.createElement("img");
    img.src = `data:image/png;base64,${item.b64_json}`;
    img.alt = `sample ${i + 1} (seed ${payload.seed ?? 0})`;
    img.addEventListener("click", () => {
      for (const other of $("generate-grid").children) other.classList.toggle("selected", other === img);
      loadEditImage(base64ToBlob(item.b64_json, "image/png"), `generated sample ${i + 1} from ${payload.model}`);
    });
    return img;
  });
  const grid = $("generate-grid");
  grid.style.gridTemplateColumns = `repeat(${Math.ceil(Math.sqrt(images.length))}, 64px)`; // square, as genlab sample
  grid.replaceChildren(...images);
  grid.dataset.count = String(images.length);
  return `${images.length} image${images.length === 1 ? "" : "s"}`;
}

// ----------------------------------------------------------------------------- images: edit (mask canvas)

// The mask lives at the image's own resolution (one flag per pixel, 1 = missing), which is
// what the API expects; the two canvases are stretched to the stage with pixelated rendering,
// so an 8x8 digit is edited pixel by pixel and a photo with a round brush.
// The file itself (not the canvas) is what the API receives, so it decodes the very bytes
// the person uploaded or the API produced.
const edit = { image: null, file: null, width: 0, height: 0, mask: null, painting: false };

function loadEditImage(file, description) {
  const image = new Image();
  const url = URL.createObjectURL(file);
  image.onload = () => {
    URL.revokeObjectURL(url);
    edit.image = image;
    edit.file = file;
    edit.width = image.naturalWidth;
    edit.height = image.naturalHeight;
    edit.mask = new Uint8Array(edit.width * edit.height);
    for (const id of ["edit-image", "edit-mask"]) {
      $(id).width = edit.width;
      $(id).height = edit.height;
    }
    // Keep the aspect ratio: the longer side fills the 256 px stage.
    const scale = 256 / Math.max(edit.width, edit.height);
    $("edit-stage").style.width = `${Math.round(edit.width * scale)}px`;
    $("edit-stage").style.height = `${Math.round(edit.height * scale)}px`;
    $("edit-image").getContext("2d").drawImage(image, 0, 0);
    $("edit-brush").max = String(Math.max(2, Math.round(Math.max(edit.width, edit.height) / 4)));
    $("edit-brush").value = String(Math.max(1, Math.round(Math.max(edit.width, edit.height) / 16)));
    drawMask();
    $("edit-source").textContent = `${description} (${edit.width}x${edit.height})`;
    showError("edit-error", null);
  };
  image.onerror = () => {
    URL.revokeObjectURL(url);
    showError("edit-error", new ApiError("the browser cannot read that file as an image; use a PNG or JPEG"));
  };
  image.src = url;
}

function drawMask() {
  const canvas = $("edit-mask");
  const context = canvas.getContext("2d");
  const overlay = context.createImageData(edit.width, edit.height);
  for (let i = 0; i < edit.mask.length; i++) {
    if (edit.mask[i]) overlay.data.set([230, 40, 40, 150], i * 4);
  }
  context.putImageData(overlay, 0, 0);
}

// Pointer events come sparsely when the hand moves fast: stamp the brush along the segment from
// the previous point, so a quick stroke is a line and not a row of dots.
function paintAt(event) {
  const rect = $("edit-mask").getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * edit.width;
  const y = ((event.clientY - rect.top) / rect.height) * edit.height;
  const from = edit.last ?? { x, y };
  const stamps = Math.max(1, Math.ceil(2 * Math.hypot(x - from.x, y - from.y)));
  for (let i = 1; i <= stamps; i++) stamp(from.x + ((x - from.x) * i) / stamps, from.y + ((y - from.y) * i) / stamps);
  edit.last = { x, y };
  drawMask();
}

function stamp(x, y) {
  const radius = Number($("edit-brush").value) / 2;
  // Pixels whose centre lies within the brush; a brush of 1 paints exactly the pixel under it.
  for (let py = Math.max(0, Math.floor(y - radius)); py < Math.min(edit.height, Math.ceil(y + radius)); py++) {
    for (let px = Math.max(0, Math.floor(x - radius)); px < Math.min(edit.width, Math.ceil(x + radius)); px++) {
      if (radius <= 0.5 ? (px === Math.floor(x) && py === Math.floor(y)) : (px + 0.5 - x) ** 2 + (py + 0.5 - y) ** 2 <= radius ** 2) {
        edit.mask[py * edit.width + px] = 1;
      }
    }
  }
}

function canvasBlob(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

// The mask as the API reads it: a PNG at the image's size, white = missing, black = keep.
function maskBlob() {
  const canvas = document.createElement("canvas");
  canvas.width = edit.width;
  canvas.height = edit.height;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(edit.width, edit.height);
  for (let i = 0; i < edit.mask.length; i++) {
    const v = edit.mask[i] ? 255 : 0;
    pixels.data.set([v, v, v, 255], i * 4);
  }
  context.putImageData(pixels, 0, 0);
  return canvasBlob(canvas);
}

async function runImageTask(task) {
  validate($(`${task}-button`).closest(".controls"));
  if (!edit.image) throw new ApiError("no image to work on: upload one or click a generated image first");
  const model = $(`${task}-model`).value;
  if (!model) throw new ApiError(`no model to ${task} with: train one that can (see the Models tab)`);
  const form = new FormData();
  form.append("model", model);
  form.append("image", edit.file, edit.file.name ?? "image.png");
  if (task === "inpaint") {
    if (!edit.mask.some((v) => v)) throw new ApiError("the mask is empty: paint over the part of the image to fill in");
    form.append("mask", await maskBlob(), "mask.png");
    form.append("method", $("inpaint-method").value);
    if ($("inpaint-steps").value !== "") form.append("steps", $("inpaint-steps").value);
  }
  const noise = $("denoise-noise").value.trim();
  if (task === "denoise" && noise) form.append("noise", noise);
  const body = await (await request(`/v1/images/${task}`, { method: "POST", body: form })).json();
  let caption = `${task} with ${model} (${body.width}x${body.height})`;
  if (body.psnr_db !== undefined) {
    caption += `: PSNR ${body.psnr_db.toFixed(2)} dB against the clean image; the noisy input had ${body.psnr_noisy_db.toFixed(2)} dB`;
  }
  edit.result = base64ToBlob(body.data[0].b64_json, "image/png");
  $("edit-result").src = setObjectUrl("edit-result", edit.result);
  $("edit-result-caption").textContent = caption;
  $("edit-result-figure").hidden = false;
  // Denoising with added noise: the noisy input the model saw, its output and the clean image, in labelled columns.
  const compare = task === "denoise" && body.noisy_b64_json;
  $("denoise-compare").hidden = !compare;
  $("edit-result").hidden = Boolean(compare);
  if (compare) {
    const columns = [["noisy", `data:image/png;base64,${body.noisy_b64_json}`, `noisy input (${noise})`],
                     ["denoised", $("edit-result").src, `denoised by ${model}`],
                     ["clean", setObjectUrl("denoise-clean", edit.file), "clean: the image sent"]];
    $("denoise-compare").replaceChildren(...columns.map(([name, src, title]) => {
      const figure = document.createElement("figure");
      figure.dataset.column = name;
      const label = document.createElement("figcaption");
      label.textContent = name;
      const img = Object.assign(new Image(), { src, alt: title, title, className: "pixelated" });
      if (name === "denoised") img.addEventListener("click", () => loadEditImage(edit.result, caption));
      figure.append(label, img);
      return figure;
    }));
  }
  return task === "inpaint" ? "inpainted" : task === "upscale" ? "upscaled" : "denoised";
}

async function scoreAnomaly() {
  if (!edit.image) throw new ApiError("no image to score: upload one or click a generated image first");
  const model = $("anomaly-model").value;
  if (!model) throw new ApiError("no model to score with: a VAE can (see the Models tab)");
  const form = new FormData();
  form.append("model", model);
  form.append("image", edit.file, edit.file.name ?? "image.png");
  const body = await (await request("/v1/anomaly/scores", { method: "POST", body: form })).json();
  return `anomaly score ${body.scores[0].score.toFixed(2)} ${body.unit} (${body.method}; higher = more unusual)`;
}

// ----------------------------------------------------------------------------- text

let textAbort = null;

// "\n" written in the stop box stands for a newline (and "\t" for a tab), one stop string per line.
function stopStrings() {
  const lines = $("text-stop").value.split("\n").filter((line) => line !== "");
  const strings = lines.map((line) => line.replace(/\\n/g, "\n").replace(/\\t/g, "\t"));
  return strings.length === 0 ? null : strings.length === 1 ? strings[0] : strings;
}

function completionBox(index, prompt) {
  const box = document.createElement("div");
  box.className = "completion";
  box.dataset.index = String(index);
  const pre = document.createElement("pre");
  const promptSpan = document.createElement("span");
  promptSpan.className = "prompt";
  promptSpan.textContent = prompt;
  const textSpan = document.createElement("span");
  textSpan.className = "text";
  pre.append(promptSpan, textSpan);
  const meta = document.createElement("div");
  meta.className = "meta";
  box.append(pre, meta);
  return box;
}

// Server-sent events over a POST body: EventSource can only GET, so the stream is read with
// fetch's ReadableStream and split into events at blank lines ("data: {...}\n\n").
async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data) yield data;
    }
  }
}

async function completeText() {
  validate($("text-form"));
  const output = $("text-output");
  const prompt = $("text-prompt").value;
  const n = intOrNull("text-n") ?? 1;
  const stream = $("text-stream").checked;
  const payload = withoutNulls({
    model: $("text-model").value,
    prompt,
    max_tokens: intOrNull("text-max-tokens"),
    temperature: numberOrNull("text-temperature"),
    top_p: numberOrNull("text-top-p"),
    top_k: intOrNull("text-top-k"),
    repetition_penalty: numberOrNull("text-repetition-penalty"),
    n,
    stop: stopStrings(),
    seed: seedOrNull("text-seed"),
    stream,
  });
  const boxes = Array.from({ length: Math.max(1, Math.min(n, 8)) }, (_, i) => completionBox(i, prompt));
  output.replaceChildren(...boxes);
  output.dataset.state = "running";
  textAbort = new AbortController();
  $("text-stop-button").disabled = false;
  const finished = new Set();
  try {
    const response = await postJSON("/v1/completions", payload, textAbort.signal);
    if (!stream) {
      const body = await response.json();
      for (const choice of body.choices) fillChoice(boxes, choice, true, finished);
      if (body.usage) boxes[0].querySelector(".meta").textContent += `  ·  ${body.usage.completion_tokens} tokens`;
    } else {
      for await (const data of serverSentEvents(response)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(errorText(chunk.error.code ?? "error", chunk)); // failed mid-stream
        for (const choice of chunk.choices ?? []) fillChoice(boxes, choice, false, finished);
      }
    }
    output.dataset.state = "done";
    return `${finished.size || boxes.length} completion${boxes.length === 1 ? "" : "s"}`;
  } catch (e) {
    if (e.name === "AbortError") {
      output.dataset.state = "stopped";
      return "stopped";
    }
    output.dataset.state = "error";
    throw e;
  } finally {
    $("text-stop-button").disabled = true;
    textAbort = null;
  }
}

function fillChoice(boxes, choice, replace, finished) {
  const box = boxes[choice.index ?? 0];
  if (!box) return;
  const span = box.querySelector(".text");
  span.textContent = replace ? choice.text : span.textContent + (choice.text ?? "");
  if (choice.finish_reason) {
    finished.add(choice.index ?? 0);
    box.dataset.finishReason = choice.finish_reason;
    box.querySelector(".meta").textContent = `finish_reason: ${choice.finish_reason}`;
  }
}

// ----------------------------------------------------------------------------- translate

const MAX_TRANSLATION_TEXTS = 32; // genlab.limits.MAX_TRANSLATION_TEXTS

// The texts to translate: the source's lines that hold something, each sent as typed.
function sourceLines() {
  return $("translate-source").value.split("\n").map((line) => line.replace(/\r$/, "")).filter((line) => line.trim() !== "");
}

// Each line becomes one item: the source, then its translation (or with n-best its hypotheses, best
// first, each with its score: the log-probability over beam search's length penalty).
function translationItem(source, result, index) {
  const item = document.createElement("li");
  item.className = "translation";
  item.dataset.index = String(index);
  const from = document.createElement("div");
  from.className = "source";
  from.textContent = source;
  item.append(from);
  if (typeof result === "string") {
    const to = document.createElement("div");
    to.className = "target";
    to.textContent = result;
    item.append(to);
    return item;
  }
  const list = document.createElement("ol");
  list.className = "hypotheses";
  list.append(...result.map((hypothesis) => {
    const row = document.createElement("li");
    row.className = "hypothesis";
    row.dataset.score = String(hypothesis.score);
    const to = Object.assign(document.createElement("span"), { className: "target", textContent: hypothesis.text });
    const score = Object.assign(document.createElement("span"), { className: "score",
      textContent: `${hypothesis.score.toFixed(3)}${hypothesis.finished ? "" : " (cut at max_tokens)"}` });
    row.append(to, score);
    return row;
  }));
  item.append(list);
  return item;
}

async function translateText() {
  validate($("translate-form"));
  const lines = sourceLines();
  if (lines.length === 0) throw new ApiError("nothing to translate: type a sentence (one per line)");
  if (lines.length > MAX_TRANSLATION_TEXTS) {
    throw new ApiError(`at most ${MAX_TRANSLATION_TEXTS} lines per request, got ${lines.length}: translate them in parts`);
  }
  const payload = withoutNulls({
    model: $("translate-model").value,
    text: lines,
    num_beams: intOrNull("translate-beams"),
    n_best: intOrNull("translate-n-best"),
    length_penalty: numberOrNull("translate-length-penalty"),
    no_repeat_ngram_size: intOrNull("translate-no-repeat-ngram"),
    temperature: numberOrNull("translate-temperature"),
    top_p: numberOrNull("translate-top-p"),
    max_tokens: intOrNull("translate-max-tokens"),
    seed: seedOrNull("translate-seed"),
  });
  const output = $("translate-output");
  output.dataset.state = "running";
  try {
    const body = await (await postJSON("/v1/translations", payload)).json();
    output.replaceChildren(...body.translations.map((result, i) => translationItem(lines[i], result, i)));
    output.dataset.state = "done";
  } catch (e) {
    output.dataset.state = "error";
    throw e;
  }
  return `${lines.length} line${lines.length === 1 ? "" : "s"} translated`;
}

// ----------------------------------------------------------------------------- chat

// The conversation lives in the page: every turn sends all of it (the server keeps nothing between
// requests), and the model reads the last turns it was trained with. A reply streams into its
// bubble; a reply stopped halfway stays in the history as far as it came. Reset forgets it all.
const chat = { messages: [], abort: null, ticket: 0 };

function chatBubble(role, text) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  item.dataset.role = role;
  const who = Object.assign(document.createElement("span"), { className: "role", textContent: role === "user" ? "you" : "assistant" });
  const content = Object.assign(document.createElement("div"), { className: "content", textContent: text });
  item.append(who, content);
  return item;
}

function showChatLog() {
  $("chat-empty").hidden = $("chat-log").children.length > 0;
}

async function sendChat() {
  validate($("tab-chat"));
  const text = $("chat-input").value;
  if (!text.trim()) throw new ApiError("the message is empty: say something first");
  const model = $("chat-model").value;
  if (!model) throw new ApiError("no dialogue model in the models directory: train one with `genlab train chat-sgd`");
  const messages = [...chat.messages, { role: "user", content: text }];
  const stream = $("chat-stream").checked;
  const payload = withoutNulls({
    model,
    messages,
    max_tokens: intOrNull("chat-max-tokens"),
    temperature: numberOrNull("chat-temperature"),
    top_p: numberOrNull("chat-top-p"),
    seed: seedOrNull("chat-seed"),
    stream,
  });
  const log = $("chat-log");
  const asked = chatBubble("user", text);
  const reply = chatBubble("assistant", "");
  reply.dataset.state = "running";
  log.append(asked, reply);
  showChatLog();
  reply.scrollIntoView({ block: "nearest" });
  $("chat-input").value = "";
  log.dataset.state = "running";
  const ticket = chat.ticket;
  const abort = new AbortController();
  chat.abort = abort;
  $("chat-stop-button").disabled = false;
  const content = reply.querySelector(".content");
  let finish = null;
  try {
    const response = await postJSON("/v1/chat/completions", payload, abort.signal);
    if (!stream) {
      const choice = (await response.json()).choices[0];
      content.textContent = choice.message.content;
      finish = choice.finish_reason;
    } else {
      for await (const data of serverSentEvents(response)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(errorText(chunk.error.code ?? "error", chunk)); // failed mid-stream
        for (const choice of chunk.choices ?? []) {
          content.textContent += choice.delta?.content ?? "";
          finish = choice.finish_reason ?? finish;
        }
      }
    }
    chat.messages = [...messages, { role: "assistant", content: content.textContent }];
    reply.dataset.state = "done";
    reply.dataset.finishReason = finish ?? "";
    if (finish === "length") reply.title = "cut at max_tokens";
    log.dataset.state = "done";
    return finish === "length" ? "replied (cut at max_tokens)" : "replied";
  } catch (e) {
    if (ticket !== chat.ticket) return "conversation reset"; // Reset came first: nothing of this turn stays
    if (e.name === "AbortError") {
      chat.messages = [...messages, { role: "assistant", content: content.textContent }];
      reply.dataset.state = "stopped";
      log.dataset.state = "stopped";
      return "stopped";
    }
    // The turn failed: it leaves the history as it was, and the message goes back into the box to retry.
    asked.remove();
    reply.remove();
    showChatLog();
    $("chat-input").value = text;
    log.dataset.state = "error";
    throw e;
  } finally {
    if (chat.abort === abort) {
      chat.abort = null;
      $("chat-stop-button").disabled = true;
    }
  }
}

function resetChat() {
  chat.ticket += 1;
  chat.abort?.abort();
  chat.messages = [];
  $("chat-log").replaceChildren();
  $("chat-log").dataset.state = "idle";
  $("chat-status").textContent = "";
  showError("chat-error", null);
  showChatLog();
  $("chat-input").focus();
}

// ----------------------------------------------------------------------------- music

// The keys offered in the key box (the server reads others too, e.g. "a minor" or "Bb").
const KEYS = ["C", "G", "D", "A", "E", "B", "F#", "F", "Bb", "Eb", "Ab", "Db"].map((k) => `${k} major`).concat(
  ["A", "E", "B", "F#", "C#", "G#", "D", "G", "C", "F", "Bb", "Eb"].map((k) => `${k} minor`));

// A file's bytes as base64 (the JSON body carries the prompt MIDI file that way).
async function fileBase64(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

async function compose() {
  validate($("music-form"));
  const prompt = $("music-prompt").files[0] ?? null;
  const key = $("music-key").value.trim();
  const payload = withoutNulls({
    model: $("music-model").value,
    bars: intOrNull("music-bars"),
    seed: seedOrNull("music-seed"),
    temperature: numberOrNull("music-temperature"),
    tempo: numberOrNull("music-tempo"),
    top_p: numberOrNull("music-top-p"),
    key: key === "" ? null : key,
    prompt_midi: prompt ? await fileBase64(prompt) : null,
  });
  const response = await postJSON("/v1/music/compositions", payload);
  const body = await response.json();
  const wavUrl = setObjectUrl("music-wav", base64ToBlob(body.wav_b64, "audio/wav"));
  $("music-audio").src = wavUrl;
  $("music-wav").href = wavUrl;
  $("music-midi").href = setObjectUrl("music-midi", base64ToBlob(body.midi_b64, "audio/midi"));
  const stem = `${payload.model}-seed${payload.seed ?? 0}`;
  $("music-midi").download = `${stem}.mid`;
  $("music-wav").download = `${stem}.wav`;
  $("music-roll").src = `data:image/png;base64,${body.piano_roll_png_b64}`;
  const extras = [payload.key ? `in ${payload.key}` : "", payload.top_p ? `top_p ${payload.top_p}` : ""].filter(Boolean);
  $("music-summary").textContent =
    `${body.bars} bars from ${body.model}${prompt ? ` after the prompt ${prompt.name}` : ""}: ` +
    `${Number(body.seconds).toFixed(1)} s, ${body.notes} notes (seed ${payload.seed ?? 0}${extras.map((e) => `, ${e}`).join("")})`;
  $("music-result").hidden = false;
  return "composed";
}

// ----------------------------------------------------------------------------- recommend

// The Recommend tab: the chosen recommender's catalogue (ids and titles, from GET /v1/models/NAME,
// config.model) is searched in the page; clicked items make the history, sent as ids to
// POST /v1/recommendations whenever the history or k changes. Changes are debounced, and every
// change takes a new ticket: an answer that comes back for an older ticket is dropped, so the
// table always shows the answer for the history and k on screen.
const MAX_MATCHES = 20;
const RECOMMEND_DELAY_MS = 250;
const rec = { model: null, ids: [], titles: [], column: new Map(), history: [], timer: null, ticket: 0, abort: null };

const itemLabel = (id) => rec.titles[rec.column.get(id)] || `item ${id}`;

async function loadCatalogue() {
  const name = $("recommend-model").value;
  if (name === rec.model) return;
  rec.model = name;
  rec.ids = [];
  rec.titles = [];
  let failure = null;
  if (name) {
    try {
      const detail = await getJSON(`/v1/models/${encodeURIComponent(name)}`);
      if ($("recommend-model").value !== name) return; // another model was picked meanwhile
      const config = detail.config?.model ?? {};
      rec.ids = config.item_ids ?? [];
      rec.titles = (config.item_titles ?? []).length === rec.ids.length ? config.item_titles : rec.ids.map(() => "");
    } catch (e) {
      failure = e;
      rec.model = null; // picked again, it is asked for again
    }
  }
  rec.column = new Map(rec.ids.map((id, c) => [id, c]));
  rec.history = rec.history.filter((id) => rec.column.has(id)); // what the new model knows of the old history
  const titled = rec.titles.some(Boolean);
  const k = $("recommend-k");
  k.max = String(Math.max(1, Math.min(1000, rec.ids.length))); // genlab.limits.MAX_RECOMMENDATIONS
  if (rec.ids.length && Number(k.value) > rec.ids.length) k.value = k.max;
  $("recommend-search").placeholder = titled ? "type a piece of a title or an id" : "type an item id (no titles)";
  $("recommend-catalogue").textContent = rec.ids.length
    ? `${rec.ids.length.toLocaleString("en")} items in ${name}'s catalogue${titled ? "" : " (ids only: it has no titles)"}; ` +
      "click a match to add it to the history (Enter adds the first)"
    : "";
  $("recommend-table").classList.toggle("no-titles", !titled);
  showMatches();
  showHistory();
  if (failure) showError("recommend-error", failure);
}

// The catalogue items the search box names: a title containing the text or an id equal to it
// (with no titles, ids containing it), items in the history left out, at most MAX_MATCHES shown.
function showMatches() {
  const needle = $("recommend-search").value.trim().toLowerCase();
  const list = $("recommend-matches");
  if (!needle) { list.replaceChildren(); return; }
  const titled = rec.titles.some(Boolean);
  const seen = new Set(rec.history);
  const exact = [], found = [];
  rec.ids.forEach((id, c) => {
    if (seen.has(id)) return;
    if (String(id) === needle) exact.push(c);
    else if (titled ? rec.titles[c].toLowerCase().includes(needle) : String(id).includes(needle)) found.push(c);
  });
  const all = exact.concat(found);
  const entries = all.slice(0, MAX_MATCHES).map((c) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.item = rec.ids[c];
    button.textContent = titled ? rec.titles[c] || `item ${rec.ids[c]}` : `item ${rec.ids[c]}`;
    if (titled) {
      const id = document.createElement("span");
      id.className = "muted";
      id.textContent = ` id ${rec.ids[c]}`;
      button.append(id);
    }
    button.addEventListener("click", () => addToHistory(rec.ids[c]));
    item.append(button);
    return item;
  });
  if (all.length > MAX_MATCHES) entries.push(Object.assign(document.createElement("li"), {
    className: "muted", textContent: `… and ${all.length - MAX_MATCHES} more: type more of the ${titled ? "title" : "id"}` }));
  if (all.length === 0) entries.push(Object.assign(document.createElement("li"), {
    className: "muted", textContent: rec.ids.length ? `no item outside the history matches “${needle}”` : "no catalogue to search" }));
  list.replaceChildren(...entries);
}

function addToHistory(id) {
  if (!rec.history.includes(id)) rec.history.push(id);
  showHistory();
  showMatches();
  $("recommend-search").focus();
}

function showHistory() {
  $("recommend-history").replaceChildren(...rec.history.map((id) => {
    const chip = document.createElement("li");
    chip.className = "chip";
    chip.dataset.item = id;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.title = `remove ${itemLabel(id)}`;
    remove.setAttribute("aria-label", remove.title);
    remove.addEventListener("click", () => {
      rec.history = rec.history.filter((other) => other !== id);
      showHistory();
      showMatches();
    });
    chip.append(itemLabel(id), remove);
    return chip;
  }));
  $("recommend-empty").hidden = rec.history.length > 0;
  scheduleRecommend();
}

// Every change of the history or k: older answers are void at once; a request goes out once the
// changes pause. An empty history (or no model) sends nothing and says why.
function scheduleRecommend() {
  clearTimeout(rec.timer);
  rec.abort?.abort();
  const ticket = ++rec.ticket;
  const table = $("recommend-table");
  table.dataset.state = "waiting";
  showError("recommend-error", null);
  if (!rec.model || rec.history.length === 0) {
    table.tBodies[0].replaceChildren();
    table.dataset.state = "empty";
    table.dataset.history = "";
    $("recommend-notices").textContent = "";
    $("recommend-status").textContent = $("recommend-model").value ? "" : "no recommender in the models directory (see the Models tab)";
    return;
  }
  rec.timer = setTimeout(() => recommendNow(ticket), RECOMMEND_DELAY_MS);
}

async function recommendNow(ticket) {
  const status = $("recommend-status");
  const table = $("recommend-table");
  if (!checkInput($("recommend-k"))) {
    status.textContent = "not sent: fix k";
    return;
  }
  const payload = { model: rec.model, items: rec.history.slice(), k: intOrNull("recommend-k") ?? 10 };
  const abort = new AbortController();
  rec.abort = abort;
  const started = performance.now();
  status.textContent = "working…";
  try {
    const body = await (await postJSON("/v1/recommendations", payload, abort.signal)).json();
    if (ticket !== rec.ticket) return; // the history or k changed meanwhile: a newer request is coming
    table.tBodies[0].replaceChildren(...body.recommendations.map((r) => {
      const row = document.createElement("tr");
      row.dataset.item = r.item;
      for (const text of [r.rank, r.item, r.title || "", r.score.toFixed(4)]) row.insertCell().textContent = text;
      row.cells[3].className = "number";
      return row;
    }));
    table.dataset.history = payload.items.join(",");
    table.dataset.k = String(payload.k);
    table.dataset.state = "done";
    $("recommend-notices").textContent = (body.notices ?? []).join("; ");
    status.textContent = `top ${body.recommendations.length} for ${payload.items.length} item${payload.items.length === 1 ? "" : "s"} ` +
      `in ${((performance.now() - started) / 1000).toFixed(1)} s`;
  } catch (e) {
    if (e.name === "AbortError" || ticket !== rec.ticket) return;
    table.tBodies[0].replaceChildren(); // the old table answered another history
    table.dataset.history = "";
    table.dataset.state = "error";
    status.textContent = "";
    showError("recommend-error", e);
  } finally {
    if (rec.abort === abort) rec.abort = null;
  }
}

// ----------------------------------------------------------------------------- applications

// The hand-written panels, by the endpoint their model select serves: an application whose route
// has one links there; the others get a generic form.
function panelFor(endpoint) {
  const select = document.querySelector(`section:not(#tab-apply) select[data-endpoint="${endpoint}"]`);
  return select ? select.closest("section").id.replace(/^tab-/, "") : null;
}

let openapi = null;

async function loadApplications() {
  showError("apply-error", null);
  try {
    const listing = await getJSON("/v1/applications");
    const items = listing.data.filter((app) => app.studio && app.endpoint).map((app) => {
      const item = document.createElement("li");
      item.dataset.application = app.name;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = app.name;
      const panel = panelFor(app.endpoint);
      button.addEventListener("click", () => (panel ? showTab(panel) : showApplication(app)));
      item.append(button, ` ${app.summary}${panel ? ` (on the ${panel} tab)` : ""}`);
      return item;
    });
    $("applications-list").replaceChildren(...items);
  } catch (e) {
    showError("apply-error", e);
  }
}

function resolveSchema(schema) {
  while (schema && schema.$ref) schema = openapi.components.schemas[schema.$ref.split("/").pop()];
  if (schema && schema.allOf) {  // a form model plus the file fields
    const parts = schema.allOf.map(resolveSchema);
    return { properties: Object.assign({}, ...parts.map((p) => p.properties ?? {}), schema.properties ?? {}),
             required: [...parts.flatMap((p) => p.required ?? []), ...(schema.required ?? [])] };
  }
  return schema ?? {};
}

function fieldInput(name, schema, required, files) {
  const options = schema.anyOf ? schema.anyOf.filter((o) => o.type !== "null") : [schema];
  const type = options[0] ?? {};
  const isFile = (s) => s.contentMediaType || s.format === "binary" || (s.items && isFile(s.items));
  let input;
  if (name === "model") {
    input = document.createElement("select");
    input.dataset.endpoint = $("apply-panel").dataset.endpoint;
  } else if (isFile(type)) {
    input = document.createElement("input");
    input.type = "file";
    input.multiple = type.type === "array";
    input.required = required;
    if (files?.[name] === "many" && $("apply-panel").dataset.exactFiles) input.dataset.files = $("apply-panel").dataset.exactFiles;
  } else if (type.enum) {
    input = document.createElement("select");
    input.replaceChildren(...type.enum.map((v) => new Option(v, v)));
    if (schema.default !== undefined) input.value = schema.default;
  } else {
    input = document.createElement("input");
    input.type = type.type === "integer" || type.type === "number" ? "number" : "text";
    if (type.minimum !== undefined) input.min = type.minimum;
    if (type.exclusiveMinimum !== undefined) {
      input.min = type.exclusiveMinimum;
      input.dataset.exclusiveMin = type.exclusiveMinimum;
    }
    if (type.maximum !== undefined) input.max = type.maximum;
    if (type.exclusiveMaximum !== undefined) input.max = type.exclusiveMaximum;
    // The one bound beyond 2^53 is the seeds' 2^63-1, which a parsed JSON number no longer holds exactly.
    if (type.type === "integer" && type.maximum > Number.MAX_SAFE_INTEGER) {
      input.max = String(MAX_SEED);
      input.setAttribute("data-seed", "");
    }
    if (type.type === "number") input.step = "any";
    if (schema.default !== undefined && schema.default !== null) input.value = schema.default;
    if (!required) input.placeholder = "optional";
  }
  input.name = name;
  input.title = schema.description ?? "";
  const label = document.createElement("label");
  label.append(`${name} `, input);
  return label;
}

async function showApplication(app) {
  openapi = openapi ?? await getJSON("/openapi.json");
  const body = openapi.paths[app.endpoint].post.requestBody.content;
  const schema = resolveSchema((body["multipart/form-data"] ?? body["application/json"]).schema);
  $("apply-panel").dataset.endpoint = app.endpoint;
  $("apply-panel").dataset.body = app.body;
  // Interpolation takes exactly two images: the page says so before sending.
  $("apply-panel").dataset.exactFiles = app.name === "interpolate" ? "2" : "";
  $("apply-title").textContent = app.name;
  $("apply-summary").textContent = `${app.summary} — POST ${app.endpoint}`;
  const required = new Set(schema.required ?? []);
  $("apply-form").replaceChildren(...Object.entries(schema.properties ?? {}).map(
    ([name, field]) => fieldInput(name, field, required.has(name), app.files)));
  fillModelSelects();
  $("apply-images").replaceChildren();
  $("apply-status").textContent = "";
  showError("apply-run-error", null);
  $("apply-result").hidden = true;
  $("apply-panel").hidden = false;
}

async function runApplication() {
  validate($("apply-form"));
  const panel = $("apply-panel");
  const form = new FormData();
  const payload = {};
  const shrunk = [];
  for (const input of $("apply-form").querySelectorAll("[name]")) {
    if (input.type === "file") {
      for (const original of input.files) {
        const { file, note } = await shrinkImage(original);
        if (note) shrunk.push(`${original.name}: ${note}`);
        form.append(input.name, file, file.name);
      }
    } else if (input.value !== "") {
      form.append(input.name, input.value);
      payload[input.name] = input.type !== "number" ? input.value
        : input.hasAttribute("data-seed") ? BigInt(input.value) : Number(input.value);
    }
  }
  const response = panel.dataset.body === "json"
    ? await postJSON(panel.dataset.endpoint, payload)
    : await request(panel.dataset.endpoint, { method: "POST", body: form });
  const type = response.headers.get("Content-Type") ?? "";
  if (type.startsWith("image/")) {
    const figure = resultFigure(setObjectUrl("apply-image", await response.blob()), "result");
    $("apply-images").replaceChildren(figure);
    $("apply-result").hidden = true;
  } else {
    const result = await response.json();
    showResultPictures(result);
    $("apply-result").textContent = JSON.stringify(result, (k, v) => (k.endsWith("b64_json") ? "(picture below)" : v), 2);
    $("apply-result").hidden = false;
  }
  return shrunk.length ? `done (${shrunk.join("; ")})` : "done";
}

function resultFigure(src, caption, className = "") {
  const figure = document.createElement("figure");
  if (className) figure.className = className;
  const img = Object.assign(new Image(), { src, alt: caption, title: caption, className: "pixelated" });
  const label = document.createElement("figcaption");
  label.textContent = caption;
  figure.append(img, label);
  return figure;
}

// An application's JSON reply as pictures: its `data` items (b64_json: frames, decoded images, ...)
// in a grid of `nrow` columns, each captioned with the item's other fields; and every other
// *_b64_json field (an animated GIF, a noisy input, ...) on its own, named by its field.
function showResultPictures(result) {
  const items = (result.data ?? []).filter((item) => item && item.b64_json);
  const frames = document.createElement("div");
  frames.className = "frames";
  frames.style.gridTemplateColumns = `repeat(${Math.min(result.nrow ?? Math.ceil(Math.sqrt(items.length)), 16)}, 64px)`;
  frames.append(...items.map((item, i) => {
    const about = Object.entries(item).filter(([k, v]) => k !== "b64_json" && v !== null && typeof v !== "object")
      .map(([k, v]) => `${k} ${formatValue(v)}`).join(" · ");
    return resultFigure(`data:image/png;base64,${item.b64_json}`, about || `#${i + 1}`, "frame");
  }));
  const named = Object.entries(result).filter(([key, value]) => key.endsWith("b64_json") && typeof value === "string")
    .map(([key, value]) => {
      const gif = key.startsWith("gif");
      const figure = resultFigure(`data:image/${gif ? "gif" : "png"};base64,${value}`,
                                  gif ? "animated GIF" : key.replace(/_?b64_json$/, ""), "named");
      figure.dataset.field = key;
      return figure;
    });
  $("apply-images").replaceChildren(...(items.length ? [frames] : []), ...named);
}

// ----------------------------------------------------------------------------- wiring

function onSubmit(formId, buttonId, statusId, errorId, work) {
  $(formId).addEventListener("submit", (event) => {
    event.preventDefault();
    busy($(buttonId), statusId, errorId, work);
  });
}

async function checkServer() {
  try {
    await request("/healthz");
    $("server-status").textContent = "server ok";
  } catch (e) {
    $("server-status").textContent = e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("nav [data-tab]")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  const tabs = Array.from(document.querySelectorAll("nav [data-tab]"), (button) => button.dataset.tab);
  const fromHash = location.hash.slice(1);
  showTab(tabs.includes(fromHash) ? fromHash : "images");
  window.addEventListener("hashchange", () => {  // a link or the address bar naming another tab
    const name = location.hash.slice(1);
    if (tabs.includes(name)) showTab(name);
  });

  onSubmit("generate-form", "generate-button", "generate-status", "generate-error", generateImages);
  onSubmit("text-form", "text-button", "text-status", "text-error", completeText);
  onSubmit("music-form", "music-button", "music-status", "music-error", compose);
  onSubmit("translate-form", "translate-button", "translate-status", "translate-error", translateText);
  onSubmit("chat-form", "chat-button", "chat-status", "chat-error", sendChat);
  $("chat-input").addEventListener("keydown", (event) => {  // Enter sends, Shift+Enter starts a new line
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    if (!$("chat-button").disabled) $("chat-form").requestSubmit();
  });
  $("chat-reset").addEventListener("click", resetChat);
  $("chat-stop-button").addEventListener("click", () => chat.abort?.abort());
  $("translate-temperature").addEventListener("input", () => {  // sampling draws one sequence at a time: one beam
    if (Number($("translate-temperature").value) > 0 && Number($("translate-beams").value) > 1) $("translate-beams").value = "1";
  });
  $("text-stop-button").addEventListener("click", () => textAbort?.abort());
  $("models-refresh").addEventListener("click", loadModels);

  for (const task of ["inpaint", "upscale", "denoise"]) {
    $(`${task}-button`).addEventListener("click", () => busy($(`${task}-button`), "edit-status", "edit-error", () => runImageTask(task)));
  }
  $("anomaly-button").addEventListener("click", () => busy($("anomaly-button"), "edit-status", "edit-error", scoreAnomaly));
  $("edit-upload").addEventListener("change", async (event) => {
    const original = event.target.files[0];
    if (!original) return;
    const { file, note } = await shrinkImage(original);
    loadEditImage(file, note ? `${original.name}, ${note}` : original.name);
  });
  const stage = $("edit-mask");
  stage.addEventListener("pointerdown", (event) => {
    if (!edit.image) return;
    edit.painting = true;
    edit.last = null;
    stage.setPointerCapture(event.pointerId);
    paintAt(event);
  });
  stage.addEventListener("pointermove", (event) => { if (edit.painting) paintAt(event); });
  for (const end of ["pointerup", "pointercancel"]) stage.addEventListener(end, () => { edit.painting = false; });
  $("edit-result").addEventListener("click", () => loadEditImage(edit.result, $("edit-result-caption").textContent));
  $("edit-clear-mask").addEventListener("click", () => {
    if (!edit.image) return;
    edit.mask.fill(0);
    drawMask();
  });

  $("generate-model").addEventListener("change", updateSamplerControls);
  $("recommend-model").addEventListener("change", loadCatalogue);
  $("recommend-search").addEventListener("input", showMatches);
  $("recommend-search").addEventListener("keydown", (event) => {  // Enter adds the first match
    if (event.key !== "Enter") return;
    event.preventDefault();
    $("recommend-matches").querySelector("button[data-item]")?.click();
  });
  $("recommend-k").addEventListener("input", scheduleRecommend);

  $("apply-button").addEventListener("click", () => busy($("apply-button"), "apply-status", "apply-run-error", runApplication));

  // The page checks the inputs itself (validate) and shows why next to the control; the browser's
  // own submit-time bubbles are off, and a marked field is checked again as it is edited.
  for (const form of document.querySelectorAll("form")) form.noValidate = true;
  document.addEventListener("input", (event) => { if (event.target.classList?.contains("is-invalid")) checkInput(event.target); });
  document.addEventListener("change", (event) => { if (event.target.classList?.contains("is-invalid")) checkInput(event.target); });
  $("music-keys").replaceChildren(...KEYS.map((key) => new Option(key)));
  $("music-prompt").dataset.maxBytes = String(1 << 20); // genlab.limits.MAX_PROMPT_MIDI_BYTES

  checkServer();
  loadModels();
  loadApplications();
});
