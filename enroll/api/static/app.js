// The enrolment page: plain JavaScript over the /v1/ API, with the token the user pastes in
// (kept in this tab's sessionStorage only). Text from the server is always set as textContent,
// never as HTML, so a person's name cannot inject markup.
"use strict";

const $ = (id) => document.getElementById(id);

function token() {
  return $("token").value.trim();
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

// One API call; resolves to the JSON answer, or rejects with the server's one-line error.
async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    body,
    headers: token() ? { Authorization: `Bearer ${token()}` } : {},
  });
  let answer = {};
  try {
    answer = await response.json();
  } catch (_) {
    answer = { error: `${response.status} ${response.statusText}` };
  }
  if (!response.ok) {
    throw new Error(answer.error || `${response.status} ${response.statusText}`);
  }
  return answer;
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// ------------------------------------------------------------------ identify: picture and box
function drawPhoto(file, box) {
  const canvas = $("identify-canvas");
  const image = new Image();
  const url = URL.createObjectURL(file);
  image.onload = () => {
    const scale = Math.min(1, 480 / image.naturalWidth);
    canvas.width = Math.round(image.naturalWidth * scale);
    canvas.height = Math.round(image.naturalHeight * scale);
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0, canvas.width, canvas.height);
    if (box) {
      context.lineWidth = 3;
      context.strokeStyle = "#00d26a";
      context.strokeRect(box.x * scale, box.y * scale, box.width * scale, box.height * scale);
    }
    canvas.dataset.box = box ? [box.x, box.y, box.width, box.height].join(",") : "";
    URL.revokeObjectURL(url);
  };
  image.src = url;
}

function showIdentity(answer) {
  const result = $("identify-result");
  result.replaceChildren();
  const verdict = answer.name === "unknown" ? "Unknown (nobody within τ)" : answer.name;
  result.append(element("p", verdict, "verdict"));
  const list = element("ol", undefined, "candidates");
  for (const candidate of answer.candidates) {
    const row = element("li", `${candidate.name} — distance ${candidate.distance.toFixed(4)}`);
    if (candidate.match) row.append(element("span", " within τ", "match"));
    list.append(row);
  }
  result.append(list);
  const notes = [`τ ${answer.threshold.toFixed(4)}`, `model version ${answer.model_version}`];
  if (answer.note) notes.push(answer.note);
  result.append(element("p", notes.join(" · "), "note"));
}

async function identify(event) {
  event.preventDefault();
  const file = $("identify-photo").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("photo", file);
  form.append("top_k", $("identify-top-k").value || "3");
  form.append("method", $("identify-method").value);
  say("Identifying…");
  try {
    const answer = await api("POST", "/v1/identify", form);
    drawPhoto(file, answer.box);
    showIdentity(answer);
    say(answer.name === "unknown" ? "Nobody enrolled is within τ." : `Identified ${answer.name}.`);
  } catch (error) {
    drawPhoto(file, null);
    $("identify-result").replaceChildren();
    say(error.message, true);
  }
}

// ------------------------------------------------------------------------------- enrolment
async function enrol(event) {
  event.preventDefault();
  const form = new FormData();
  form.append("name", $("enrol-name").value);
  for (const file of $("enrol-photos").files) form.append("photos", file);
  form.append("append", $("enrol-append").checked ? "true" : "false");
  say("Enrolling…");
  const result = $("enrol-result");
  result.replaceChildren();
  try {
    const report = await api("POST", "/v1/people", form);
    say(`Enrolled ${report.name}: ${report.faces_added} new face(s), ${report.faces_total} in all.`);
    for (const photo of report.photos) {
      const line = `${photo.accepted ? "accepted" : "rejected"}  ${photo.source}${photo.reason ? ": " + photo.reason : ""}`;
      result.append(element("p", line, photo.accepted ? "accepted" : "rejected"));
    }
    for (const other of report.lookalikes) {
      result.append(element("p", `looks like ${other.name} (distance ${other.distance.toFixed(4)})`, "rejected"));
    }
    $("enrol-form").reset();
    await refresh();
  } catch (error) {
    say(error.message, true);
  }
}

// ------------------------------------------------------------------------------------ people
async function remove(name) {
  if (!window.confirm(`Remove ${name} and every copy of their photos and embeddings?`)) return;
  try {
    const report = await api("DELETE", `/v1/people/${encodeURIComponent(name)}`);
    say(`Removed ${report.removed} (${report.faces} face(s)).`);
    await refresh();
  } catch (error) {
    say(error.message, true);
  }
}

async function loadPeople() {
  const list = $("people-list");
  const { people } = await api("GET", "/v1/people");
  list.replaceChildren();
  for (const person of people) {
    const row = element("li");
    row.dataset.name = person.name;
    row.append(element("span", person.name, "name"), element("span", ` ${person.faces} face(s) `, "faces"));
    const button = element("button", "Remove", "remove");
    button.type = "button";
    button.addEventListener("click", () => remove(person.name));
    row.append(button);
    list.append(row);
  }
  $("people-count").textContent = `(${people.length})`;
}

// ------------------------------------------------------------------------ model and jobs
async function loadStatus() {
  const status = await api("GET", "/v1/status");
  $("model-status").textContent = status.production_version
    ? `Production model: version ${status.production_version}, τ ${status.threshold.toFixed(4)} at FAR ` +
      `${status.far_target}; ${status.people} people, ${status.faces} faces; ` +
      `${status.class_changes_since_production.length} class change(s) since the model.`
    : "No production model yet: run `enroll init --run RUN_DIR`.";
  const rows = $("jobs").querySelector("tbody");
  rows.replaceChildren();
  for (const job of status.jobs) {
    const row = element("tr");
    row.append(element("td", `#${job.id} ${job.kind}`), element("td", job.state), element("td", job.detail));
    rows.append(row);
  }
}

async function refresh() {
  sessionStorage.setItem("facenet-token", token());
  if (!token()) {
    say("Paste a token (enroll token create --scope identify,enrol).", true);
    return;
  }
  const results = await Promise.allSettled([loadStatus(), loadPeople()]);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) say(failed.reason.message, true);
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem("facenet-token") || "";
  $("token").addEventListener("change", refresh);
  $("refresh").addEventListener("click", refresh);
  $("identify-form").addEventListener("submit", identify);
  $("enrol-form").addEventListener("submit", enrol);
  if (token()) refresh();
});
