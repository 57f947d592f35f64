// The origin's dashboard: reads /ui/state every few seconds and renders it with DOM calls only
// (text goes in as text nodes, never as HTML); promote and rollback POST after a confirmation.
"use strict";

const REFRESH_MS = 2000;
const csrf = document.querySelector('meta[name="csrf-token"]').content;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key === "title") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const short = (version) => version.slice(0, 12);
const percent = (share) => `${(share * 100).toFixed(1)}%`;
const ms = (value) => `${value.toFixed(1)} ms`;
const ago = (seconds) => (seconds < 120 ? `${seconds.toFixed(1)} s ago` : `${Math.round(seconds / 60)} min ago`);
const when = (epoch) => new Date(epoch * 1000).toLocaleString();

function showMessage(text, isError) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = !text;
}

function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
  if (response.status === 401) {
    window.location.reload();
    return null;
  }
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  return answer;
}

async function act(question, path, body, done) {
  if (!(await confirmAction(question))) return;
  try {
    const result = await post(path, body);
    if (result) showMessage(`${done}: ${result.name} now serves ${result.releases.map((r) => `${short(r.version)} ${r.weight}%`).join(", ")} (revision ${result.revision})`, false);
  } catch (error) {
    showMessage(`${done} failed: ${error.message}`, true);
  }
  refresh();
}

function button(label, action, onClick, danger) {
  const node = el("button", { type: "button", "data-action": action, class: danger ? "danger" : "" }, label);
  node.addEventListener("click", onClick);
  return node;
}

function trafficLine(traffic) {
  return el(
    "div",
    { class: "stats", "data-requests": String(traffic.requests) },
    el("span", {}, el("b", {}, traffic.rps.toFixed(2)), " req/s"),
    el("span", {}, el("b", {}, percent(traffic.error_rate)), " errors"),
    el("span", {}, "p50 ", el("b", {}, ms(traffic.p50_ms)), " · p99 ", el("b", {}, ms(traffic.p99_ms))),
    el("span", { class: "muted" }, `${traffic.requests} requests, ${traffic.errors} 5xx, ${traffic.client_errors} 4xx, ${traffic.timeouts} timeouts, ${traffic.cold_starts} cold starts`),
  );
}

function functionCard(fn) {
  const base = `/ui/functions/${encodeURIComponent(fn.name)}`;
  const actions = el("span", { class: "actions" });
  if (fn.releases.length > 1) {
    const canary = fn.releases[1];
    actions.append(button("Promote", "promote", () =>
      act(`Promote ${fn.name}: send all traffic to ${short(canary.version)} (now ${canary.weight}%)?`, `${base}/promote`, {}, "Promote"), false));
  }
  if (fn.previous) {
    const question = fn.releases.length > 1
      ? `Roll back ${fn.name}: drop the canary ${short(fn.releases[1].version)} and keep ${short(fn.previous)}?`
      : `Roll back ${fn.name} from ${short(fn.releases[0].version)} to ${short(fn.previous)}?`;
    actions.append(button(`Roll back to ${short(fn.previous)}`, "rollback", () => act(question, `${base}/rollback`, {}, "Rollback"), true));
  }
  const split = el("div", { class: "split", title: fn.releases.map((r) => `${short(r.version)} ${r.weight}%`).join(", ") });
  for (const release of fn.releases) {
    const part = el("span");
    part.style.width = `${release.weight}%`;
    split.append(part);
  }
  const rows = fn.versions.map((v) => {
    const failed = Object.entries(v.failed_on);
    const live = v.weight > 0;
    return el(
      "tr",
      { "data-version": v.version, class: live ? "live-version" : "" },
      el("td", { class: "version", title: v.version }, short(v.version)),
      el("td", {}, live ? `${v.weight}%` : "—"),
      el("td", {}, when(v.created_at)),
      el("td", {}, `${v.traffic.rps.toFixed(2)} req/s · ${percent(v.traffic.error_rate)} errors · p50 ${ms(v.traffic.p50_ms)} · p99 ${ms(v.traffic.p99_ms)}`),
      el("td", {}, ...failed.map(([node, error]) => el("div", { class: "failed" }, `failed on ${node}: ${error}`))),
      el("td", {}, v.weight === 100 ? null : button("Make live", "rollback-to", () =>
        act(`Switch ${fn.name} to ${short(v.version)} (100% of traffic)?`, `${base}/rollback`, { to: v.version }, "Rollback"), false)),
    );
  });
  const errors = Object.entries(fn.errors).map(([node, error]) => el("div", { class: "error" }, `${node}: ${error}`));
  return el(
    "div",
    { class: "card", "data-function": fn.name },
    el("h3", {}, el("span", { class: "name" }, fn.name),
      el("span", { class: "muted" }, ["/" + fn.name, ...fn.routes].join(" ")), actions),
    el("div", { class: "releases" }, "serving ", fn.releases.map((r) => `${short(r.version)} ${r.weight}%`).join(" + ")),
    split,
    trafficLine(fn.traffic),
    ...errors,
    el("table", { class: "versions" },
      el("thead", {}, el("tr", {}, ...["version", "traffic", "uploaded", "last minute", "load errors", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)),
  );
}

function nodeRow(node) {
  return el(
    "tr",
    { "data-node": node.node_id },
    el("td", {}, el("b", {}, node.node_id), el("div", { class: "muted" }, node.hostname)),
    el("td", {}, Object.entries(node.labels).map(([k, v]) => `${k}=${v}`).join(", ")),
    el("td", { class: node.live ? "live" : "stale" }, node.live ? "live" : "stale"),
    el("td", { class: "revision" }, node.applied_revision === null ? "—" : String(node.applied_revision)),
    el("td", { class: node.lag ? "stale" : "" }, node.lag === null ? "—" : String(node.lag)),
    el("td", {}, ago(node.last_seen_s)),
    el("td", {}, ...node.errors.map((error) => el("div", { class: "error" }, error))),
  );
}

function deployRow(deploy) {
  return el(
    "tr",
    { "data-version": deploy.version },
    el("td", {}, when(deploy.created_at)),
    el("td", {}, deploy.function),
    el("td", { class: "version", title: deploy.version }, short(deploy.version)),
    el("td", {}, deploy.weight ? `${deploy.weight}%` : "—"),
  );
}

function render(state) {
  const live = state.nodes.filter((n) => n.live).length;
  document.getElementById("summary").textContent =
    `revision ${state.revision} · ${state.functions.length} functions · ${live}/${state.nodes.length} nodes live`;
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  document.getElementById("functions").replaceChildren(
    ...(state.functions.length ? state.functions.map(functionCard) : [el("p", { class: "muted" }, "No functions yet: edge deploy DIR")]));
  document.querySelector("#nodes tbody").replaceChildren(...state.nodes.map(nodeRow));
  document.querySelector("#deploys tbody").replaceChildren(...state.deploys.map(deployRow));
  document.body.dataset.revision = String(state.revision);
}

let timer = null;

async function refresh() {
  clearTimeout(timer);
  try {
    const response = await fetch("/ui/state", { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) {
      window.location.reload();
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (error) {
    document.getElementById("updated").textContent = `origin unreachable: ${error.message}`;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

refresh();
