// The sqlarbiter playground: plain browser JavaScript, no build step, no third-party code.
// It talks to the service's own API (the same endpoints as any client) and shows every error as a message.
"use strict";

const STAGES = ["route", "generate", "normalize", "execute", "discriminate", "select"];
const state = { options: null, plan: null, runs: [], schemaFor: null };

// ------------------------------------------------------------------ DOM helpers
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

function fmtMs(ms) { return ms === null || ms === undefined ? "-" : ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : Math.round(ms) + " ms"; }
function fmtNum(x, d = 3) { return x === null || x === undefined ? "-" : Number(x).toFixed(d); }
function fmtPct(x) { return x === null || x === undefined ? "-" : Number(x).toFixed(1); }

// ------------------------------------------------------------------ messages
function showError(msg) {
  $("banner-text").textContent = msg;
  $("banner").hidden = false;
}
function hideError() { $("banner").hidden = true; }
window.addEventListener("error", (e) => showError("The page hit an error: " + (e.message || e)));
window.addEventListener("unhandledrejection", (e) => showError(errorText(e.reason)));

function errorText(e) {
  if (!e) return "unknown error";
  if (e instanceof TypeError && /fetch|network/i.test(e.message)) return "Cannot reach the service: " + e.message;
  return e.message || String(e);
}

// ------------------------------------------------------------------ API
function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = $("api-key").value.trim();
  if (key) h["X-API-Key"] = key;
  return h;
}

function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {  // FastAPI validation errors
    return detail.map((d) => {
      const loc = (d.loc || []).filter((x) => x !== "body").join(".");
      return (loc ? loc + ": " : "") + (d.msg || JSON.stringify(d));
    }).join("; ");
  }
  return JSON.stringify(detail);
}

async function httpError(resp) {
  let detail = resp.statusText;
  try {
    const body = await resp.json();
    if (body && body.detail !== undefined) detail = detailText(body.detail);
  } catch (_) { /* not JSON */ }
  let msg = `${resp.status}: ${detail}`;
  if (resp.status === 401) msg += " (enter the service's API key in the field at the top)";
  if (resp.status === 429) msg += ` (retry after ${resp.headers.get("Retry-After") || "a few"} s)`;
  const err = new Error(msg);
  err.status = resp.status;
  return err;
}

async function api(method, path, body) {
  const resp = await fetch(path, { method, headers: headers(body !== undefined),
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  if (!resp.ok) throw await httpError(resp);
  const type = resp.headers.get("Content-Type") || "";
  return type.includes("json") ? resp.json() : resp.text();
}

// ------------------------------------------------------------------ SQL highlighting (small tokenizer)
const KEYWORDS = new Set(("select from where group by order having limit offset join inner left right full outer cross on " +
  "as and or not in is null like between case when then else end distinct union all intersect except with asc desc " +
  "exists count sum avg min max cast insert update delete create drop into values set natural using over partition " +
  "true false glob escape collate").split(" "));
const TOKEN = /(--[^\n]*|\/\*[\s\S]*?\*\/)|('(?:[^']|'')*'?)|("(?:[^"]|"")*"?|`[^`]*`?|\[[^\]]*\]?)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)|(\s+)|(.)/g;

function highlightSQL(sql) {
  const code = el("code", { class: "sql" });
  for (const m of sql.matchAll(TOKEN)) {
    const [t, comment, str, ident, num, word] = m;
    let cls = null;
    if (comment) cls = "tok-comment";
    else if (str) cls = "tok-string";
    else if (ident) cls = "tok-ident";
    else if (num) cls = "tok-number";
    else if (word && KEYWORDS.has(word.toLowerCase())) cls = "tok-keyword";
    code.append(cls ? el("span", { class: cls, text: t }) : document.createTextNode(t));
  }
  return el("pre", { class: "sql" }, code);
}

// ------------------------------------------------------------------ navigation
function showPage() {
  const page = (location.hash || "#plan").slice(1).split("?")[0];
  const known = ["plan", "models", "runs"];
  const p = known.includes(page) ? page : "plan";
  for (const k of known) $("page-" + k).hidden = k !== p;
  for (const a of document.querySelectorAll("nav a[data-page]")) {
    if (a.dataset.page === p) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (p === "models") loadModels().catch((e) => showError("Models: " + errorText(e)));
  if (p === "runs") loadRuns().catch((e) => showError("Eval runs: " + errorText(e)));
}

// ------------------------------------------------------------------ plan form
async function loadOptions() {
  const [opts, dbs] = await Promise.all([api("GET", "/ui/api/options"), api("GET", "/databases")]);
  state.options = opts;
  const db = clear($("db"));
  for (const d of dbs) db.append(el("option", { value: d.db_id }, `${d.db_id} (${d.kind}, ${d.n_tables ?? "?"} tables)`));
  if (dbs.some((d) => d.db_id === "demo")) db.value = "demo";
  const pol = clear($("policy"));
  for (const p of opts.policies) pol.append(el("option", { value: p.name }, p.name));
  pol.value = opts.defaults.policy;
  $("n").value = opts.defaults.n;
  $("n").max = opts.limits.n_max;
  fillRoutes();
  await loadSchema();
}

function fillRoutes() {
  const kind = $("route-kind").value;
  const sel = clear($("route"));
  const o = state.options;
  if (!o) return;
  if (kind === "pair") {
    for (const [name, p] of Object.entries(o.pairs)) sel.append(el("option", { value: name }, `${name} (${p.generator} + ${p.discriminator})`));
  } else if (kind === "router") {
    for (const r of o.routers) sel.append(el("option", { value: r }, r));
    sel.value = o.router;
  } else {
    sel.append(el("option", { value: "" }, `${o.router} (configured)`));
  }
  sel.disabled = kind === "default";
}

async function loadSchema() {
  const id = $("db").value;
  if (!id || state.schemaFor === id) return;
  state.schemaFor = id;
  $("schema-db").textContent = id;
  const body = clear($("schema-body"));
  body.append(el("p", { class: "hint" }, "loading..."));
  try {
    const s = await api("GET", `/databases/${encodeURIComponent(id)}/schema`);
    clear(body);
    for (const t of s.tables) {
      const cols = el("ul", { class: "cols" });
      for (const c of t.columns) {
        const samples = (c.samples || []).slice(0, 3).map((v) => JSON.stringify(v)).join(", ");
        cols.append(el("li", {}, el("code", {}, c.name), " ", el("span", { class: "type" }, c.type || ""),
          c.primary_key ? el("span", { class: "badge" }, "PK") : null,
          samples ? el("span", { class: "samples" }, " e.g. " + samples) : null));
      }
      const fks = (t.foreign_keys || []).map((f) => el("li", { class: "fk" },
        `${f.columns.join(", ")} → ${f.ref_table}(${f.ref_columns.join(", ")})`));
      body.append(el("details", { class: "table" },
        el("summary", {}, el("code", {}, t.name), ` ${t.columns.length} columns` + (t.row_count != null ? `, ${t.row_count} rows` : "")),
        cols, fks.length ? el("ul", { class: "fks" }, fks) : null));
    }
  } catch (e) {
    state.schemaFor = null;
    clear(body).append(el("p", { class: "error-text" }, "Could not load the schema: " + errorText(e)));
  }
}

function planRequest() {
  const q = $("question").value.trim();
  if (!q) throw new Error("Type a question first.");
  const n = parseInt($("n").value, 10);
  const max = state.options ? state.options.limits.n_max : 256;
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`n must be a whole number between 1 and ${max}.`);
  const req = { question: q, db_id: $("db").value, n, policy: $("policy").value, execute: $("execute").checked };
  const kind = $("route-kind").value;
  if (kind === "pair") req.pair = $("route").value;
  if (kind === "router") req.router = $("route").value;
  return req;
}

// ------------------------------------------------------------------ plan (streamed)
function stageItem(stage) {
  let li = document.querySelector(`#stages li[data-stage="${stage}"]`);
  if (!li) {
    li = el("li", { "data-stage": stage, class: "pending" }, el("span", { class: "name" }, stage), " ", el("span", { class: "state" }, ""));
    $("stages").append(li);
  }
  return li;
}

function onStage(ev) {
  const li = stageItem(ev.stage);
  const st = li.querySelector(".state");
  if (ev.state === "start") {
    li.className = "running";
    st.textContent = "running…";
  } else {
    const total = (parseFloat(li.dataset.ms || "0") + (ev.ms || 0));
    li.dataset.ms = String(total);
    li.className = ev.state === "failed" ? "failed" : "done";
    st.textContent = (ev.state === "failed" ? "failed after " : "done in ") + fmtMs(total);
  }
}

async function runPlan(ev) {
  if (ev) ev.preventDefault();
  hideError();
  let req;
  try { req = planRequest(); } catch (e) { showError(e.message); $("question").focus(); return; }
  const btn = $("plan-btn");
  btn.disabled = true;
  btn.textContent = "Planning…";
  $("result").hidden = true;
  $("plan-error").hidden = true;
  clear($("stages"));
  $("progress").hidden = false;
  const t0 = performance.now();
  try {
    const resp = await fetch("/plan/stream", { method: "POST", headers: headers(true), body: JSON.stringify(req) });
    if (!resp.ok) throw await httpError(resp);
    let finished = false;
    await readSSE(resp, (event, data) => {
      if (event === "queued") onStage({ stage: "queued", state: "done", ms: performance.now() - t0 });
      else if (event === "stage") onStage(data);
      else if (event === "plan") { finished = true; showPlan(data, performance.now() - t0); }
      else if (event === "error") { finished = true; throw Object.assign(new Error(`${data.status}: ${data.detail}`), { status: data.status }); }
    });
    if (!finished) throw new Error("The connection closed before the plan finished; try again.");
  } catch (e) {
    const box = $("plan-error");
    clear(box).append(el("h3", {}, "The plan failed"), el("p", {}, errorText(e)));
    box.hidden = false;
    for (const li of document.querySelectorAll("#stages li.running")) { li.className = "failed"; li.querySelector(".state").textContent = "stopped"; }
  } finally {
    btn.disabled = false;
    btn.textContent = "Plan";
  }
}

async function readSSE(resp, onEvent) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const chunk = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = "message";
      const data = [];
      for (const line of chunk.split("\n")) {
        if (line.startsWith(":")) continue;
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
    }
    if (done) return;
  }
}

// ------------------------------------------------------------------ plan result
function lastScore(sc) { return sc.scores && sc.scores.length ? sc.scores[sc.scores.length - 1] : null; }

function verdictText(s) {
  if (!s) return "-";
  // verdict_kind (natural | forced | missing | not_executable) where the model has it; else from parse_failure
  const how = s.verdict_kind || (s.forced === true ? "forced" : s.parse_failure ? "unparsed" : "natural");
  const v = s.verdict === true ? "true" : s.verdict === false ? "false" : "none";
  // issue 31: which budget ended the reasoning, and a score copied from its result cluster's representative
  const out = s.ran_out ? `, ${s.ran_out} ran out after ${s.reasoning_tokens ?? "?"} tokens` : "";
  const rep = s.represented_by != null ? `, as candidate ${s.represented_by}` : "";
  return `${v} (${how}${out}${rep})`;
}

function rowsTable(ex, caption) {
  if (!ex || !ex.columns || !ex.columns.length) return el("span", { class: "hint" }, "no columns");
  const t = el("table", { class: "rows" });
  if (caption) t.append(el("caption", {}, caption));
  t.append(el("thead", {}, el("tr", {}, ex.columns.map((c) => el("th", { scope: "col" }, c)))));
  t.append(el("tbody", {}, ex.rows.map((r) => el("tr", {}, r.map((v) => el("td", {}, v === null ? "NULL" : String(v)))))));
  return t;
}

// TRIM's steps (route.details.trim.steps): which pair wrote each step, whether it was handed off, its process reward
function stepsView(trim) {
  if (!trim || !trim.steps || !trim.steps.length) return null;
  const ol = el("ol", { class: "steps", "aria-label": "steps of the chain" });
  for (const st of trim.steps) {
    const rw = st.reward || (st.draft && st.draft.reward) || null;
    const badge = el("span", { class: "badge" + (st.handed_off ? " handoff" : "") },
      st.pair + (st.handed_off ? " (handed off)" : ""));
    const parts = [];
    if (rw && rw.score !== undefined && rw.score !== null) parts.push("reward " + fmtNum(rw.score));
    if (st.draft && st.draft.reward && st.draft.reward.score !== undefined) parts.push("cheap draft's reward " + fmtNum(st.draft.reward.score));
    parts.push(`${st.tokens} token(s)`);
    ol.append(el("li", {}, badge, " ", el("span", { class: "hint" }, parts.join(", ")), el("pre", { class: "step" }, st.text),
      st.draft ? el("details", {}, el("summary", {}, "discarded cheap draft"), el("pre", { class: "step" }, st.draft.text)) : null));
  }
  const kind = trim.step_kind === "prose" ? " prose" : "";
  const head = `${trim.steps.length}${kind} step(s), ${trim.handoffs || 0} handed off to ${trim.strong_pair || "the strong pair"}` +
    (trim.fallback ? `; fell back: ${trim.fallback}` : "");
  return el("details", { class: "trim-steps", open: "" }, el("summary", {}, head), ol);
}

// Route-and-Reason's subtasks (route.details.r2): the decomposition, the tier each subtask went to, the step that
// tier wrote for it, its tokens and process reward
function subtasksView(r2) {
  if (!r2 || !r2.decomposition) return null;
  const d = r2.decomposition;
  if (!d.subtasks) {
    return el("details", { class: "trim-steps r2-subtasks", open: "" },
      el("summary", {}, `decomposition refused (${d.refused}): ${d.reason}`), el("pre", { class: "step" }, d.raw || ""));
  }
  const steps = r2.steps || [];
  const ol = el("ol", { class: "steps", "aria-label": "subtasks of the question" });
  d.subtasks.forEach((st, k) => {
    const step = steps[k] || null;
    const pair = (r2.allocation || [])[k] || (step && step.pair) || "?";
    const parts = [];
    if (st.needs && st.needs.length) parts.push("needs " + st.needs.map((n) => "step " + n).join(", "));
    if (st.tables && st.tables.length) parts.push("tables " + st.tables.join(", "));
    if (step) parts.push(`${step.tokens} token(s)`);
    const rw = step && step.reward;
    if (rw && rw.score !== undefined && rw.score !== null) parts.push("reward " + fmtNum(rw.score));
    ol.append(el("li", {}, el("span", { class: "badge tier" }, pair), " ", el("span", { class: "subtask" }, st.text),
      " ", el("span", { class: "hint" }, parts.join(", ")), step ? el("pre", { class: "step" }, step.text) : null));
  });
  const conf = d.confidence !== null && d.confidence !== undefined ? `, decomposer confidence ${fmtNum(d.confidence)}` : "";
  const head = `${d.subtasks.length} subtask(s)${conf}` + (r2.fallback ? `; fell back: ${r2.fallback}` : "");
  return el("details", { class: "trim-steps r2-subtasks", open: "" }, el("summary", {}, head), ol);
}

function showPlan(p, wallMs) {
  state.plan = p;
  $("r-status").textContent = p.status;
  $("r-status").className = "status-" + p.status;
  $("r-id").textContent = p.id;
  const r = p.route || {};
  $("r-route").textContent = `${r.router || "?"} → ${r.pair || "?"} (${r.generator || "?"} + ${r.discriminator || "?"})` +
    (r.steps && r.steps.length > 1 ? `, steps ${r.steps.join(" → ")}` : "");
  $("r-policy").textContent = p.policy;
  $("r-cost").textContent = fmtNum(p.total_cost, 6);
  $("r-reason").textContent = p.reason ? "Why: " + p.reason : "";
  const chosen = clear($("r-chosen"));
  if (p.chosen_sql) chosen.append(el("h4", {}, "Chosen SQL ", el("span", { class: "badge chosen" }, `candidate ${p.chosen}`)), highlightSQL(p.chosen_sql));
  else chosen.append(el("p", { class: "error-text" }, "No candidate was chosen."));
  const errs = clear($("r-errors"));
  for (const e of p.errors || []) errs.append(el("li", {}, e));
  const prev = clear($("r-preview"));
  if (p.preview) prev.append(el("div", { class: "scroll" }, rowsTable(p.preview, `Result of the chosen SQL: ${p.preview.row_count} row(s)` + (p.preview.truncated ? " (truncated)" : ""))));

  // candidates
  const votes = {};
  for (const sc of p.candidates) if (sc.cluster !== null && sc.cluster !== undefined) votes[sc.cluster] = (votes[sc.cluster] || 0) + (sc.candidate.duplicates || 1);
  const tbody = clear(document.querySelector("#candidates tbody"));
  p.candidates.forEach((sc, i) => {
    const c = sc.candidate, ex = sc.execution, s = lastScore(sc);
    const isChosen = p.chosen === i;
    const guard = c.rejected ? el("span", { class: "bad" }, "rejected: " + c.rejected) : el("span", { class: "good" }, "ok");
    let exec;
    if (!ex) exec = el("span", { class: "hint" }, "not run");
    else if (ex.ok) exec = el("span", { class: "good" }, `ok, ${ex.row_count} row(s), ${fmtMs(ex.elapsed_ms)}`);
    else exec = el("span", { class: "bad" }, `${ex.error_kind || "error"}: ${ex.error || ""}`);
    tbody.append(el("tr", { class: isChosen ? "is-chosen" : null },
      el("td", {}, String(i), el("div", { class: "hint" }, c.source + (c.duplicates > 1 ? ` ×${c.duplicates}` : ""))),
      el("td", { class: "sqlcell" }, highlightSQL(c.normalized || c.sql),
        (c.source || "").startsWith("trim") ? stepsView((r.details || {}).trim) : null,
        (c.source || "").startsWith("r2") ? subtasksView((r.details || {}).r2) : null),
      el("td", {}, guard),
      el("td", {}, exec),
      el("td", {}, ex && ex.ok ? rowsTable(ex) : "-"),
      el("td", { title: s && s.reasoning ? s.reasoning.slice(0, 2000) : null }, s ? fmtNum(s.score) : "-",
        sc.selection_score !== null && sc.selection_score !== undefined ? el("div", { class: "hint" }, "rank " + fmtNum(sc.selection_score)) : null),
      el("td", {}, verdictText(s)),
      el("td", {}, sc.cluster ?? "-"),
      el("td", {}, sc.cluster !== null && sc.cluster !== undefined ? String(votes[sc.cluster]) : "-"),
      el("td", {}, isChosen ? el("span", { class: "badge chosen" }, "chosen") : "")));
  });

  // timings waterfall: stages in order, each bar starts where the previous ended
  const wf = clear(document.querySelector("#waterfall tbody"));
  const tm = p.timings_ms || {};
  const total = tm.total || STAGES.reduce((a, s) => a + (tm[s] || 0), 0) || 1;
  let at = 0;
  for (const s of STAGES) {
    const ms = tm[s] || 0;
    const left = (100 * at) / total, width = Math.max(0.5, (100 * ms) / total);
    wf.append(el("tr", {}, el("th", { scope: "row" }, s), el("td", { class: "num" }, fmtMs(ms)),
      el("td", { class: "bar-cell" }, el("div", { class: "bar", style: `margin-left:${left.toFixed(2)}%;width:${width.toFixed(2)}%`, "aria-hidden": "true" }))));
    at += ms;
  }
  wf.append(el("tr", { class: "total" }, el("th", { scope: "row" }, "total"), el("td", { class: "num" }, fmtMs(tm.total)),
    el("td", { class: "hint" }, wallMs ? `${fmtMs(wallMs)} in the browser, queue and transfer included` : "")));

  const ub = clear(document.querySelector("#usage tbody"));
  let pt = 0, ct = 0;
  for (const u of p.usage || []) {
    pt += u.prompt_tokens; ct += u.completion_tokens;
    ub.append(el("tr", {}, el("td", {}, u.model), el("td", {}, u.role), el("td", { class: "num" }, u.calls),
      el("td", { class: "num" }, u.prompt_tokens), el("td", { class: "num" }, u.completion_tokens), el("td", { class: "num" }, fmtNum(u.cost, 6))));
  }
  ub.append(el("tr", { class: "total" }, el("th", { scope: "row", colspan: "3" }, "total"), el("td", { class: "num" }, pt),
    el("td", { class: "num" }, ct), el("td", { class: "num" }, fmtNum(p.total_cost, 6))));

  $("fb-status").textContent = "";
  $("fb-sql").value = p.chosen_sql || "";
  $("result").hidden = false;
  $("h-result").focus?.();
}

// ------------------------------------------------------------------ feedback
async function sendFeedback(body) {
  const status = $("fb-status");
  if (!state.plan) { status.textContent = "Plan a question first."; return; }
  status.className = "status";
  status.textContent = "sending…";
  try {
    const r = await api("POST", "/feedback", { plan_id: state.plan.id, ...body });
    const label = r.correct === true ? "correct" : r.correct === false ? "wrong" : "unlabelled";
    status.textContent = `Stored as feedback #${r.id}: ${label}` + (r.corrected_sql ? ", with corrected SQL" : "") +
      ` (label from ${r.label_source})` + (r.forwarded_to_router ? `, sent to router ${r.forwarded_to_router}` : "") + ".";
    status.className = "status ok";
  } catch (e) {
    status.textContent = "Feedback not stored: " + errorText(e);
    status.className = "status error-text";
  }
}

// ------------------------------------------------------------------ models
async function loadModels() {
  const [g, d] = await Promise.all([api("GET", "/generators"), api("GET", "/discriminators")]);
  showModels("gen", g);
  showModels("disc", d);
}

function showModels(prefix, m) {
  $(prefix + "-active").textContent = m.active;
  const list = clear($(prefix + "-list"));
  const t = el("table", { class: "models" }, el("thead", {}, el("tr", {}, ["Name", "Backend", "Loaded", "Active", "In flight", "Cost / 1k in", "Cost / 1k out"].map((h) => el("th", { scope: "col" }, h)))));
  const tb = el("tbody");
  for (const x of m.models) {
    tb.append(el("tr", { class: x.active ? "is-chosen" : null }, el("td", {}, x.name), el("td", {}, x.backend), el("td", {}, x.loaded ? "yes" : "no"),
      el("td", {}, x.active ? el("span", { class: "badge chosen" }, "active") : ""), el("td", { class: "num" }, x.in_flight ?? 0),
      el("td", { class: "num" }, x.cost_per_1k_input ?? 0), el("td", { class: "num" }, x.cost_per_1k_output ?? 0)));
  }
  t.append(tb);
  list.append(el("div", { class: "scroll" }, t));
  const sel = clear($(prefix + "-select"));
  for (const x of m.models) sel.append(el("option", { value: x.name }, x.name));
  sel.value = m.active;
}

async function switchModel(prefix, path) {
  const name = $(prefix + "-select").value;
  const status = $(prefix + "-status");
  const btn = $(prefix + "-switch");
  btn.disabled = true;
  status.className = "status";
  status.textContent = `switching to ${name} (loading it first)…`;
  try {
    const m = await api("PUT", path, { name });
    showModels(prefix, m);
    status.textContent = `Active: ${m.active}.`;
    status.className = "status ok";
  } catch (e) {
    status.textContent = "Switch failed: " + errorText(e);
    status.className = "status error-text";
  } finally {
    btn.disabled = false;
  }
}

// ------------------------------------------------------------------ eval runs
async function loadRuns() {
  const r = await api("GET", "/ui/api/runs");
  state.runs = r.runs;
  $("runs-root").textContent = r.root;
  const tb = clear(document.querySelector("#runs tbody"));
  for (const x of r.runs) {
    tb.append(el("tr", {}, el("td", {}, el("code", {}, x.name)), el("td", {}, x.dataset || "-"), el("td", {}, x.mode || "-"),
      el("td", { class: "num" }, x.n ?? "-"), el("td", { class: "num" }, fmtPct(x.ex)), el("td", {}, x.modified),
      el("td", {}, el("button", { type: "button", class: "open-run", "data-run": x.name, onclick: () => openRun(x.name) }, "Open"))));
  }
  const empty = $("runs-empty");
  empty.hidden = r.runs.length > 0;
  empty.textContent = r.runs.length ? "" : `No runs under ${r.root} yet: run \`sqlarbiter eval ...\` (it writes runs/eval/<run>/) or set SQLARBITER_RUNS_DIR.`;
  for (const id of ["cmp-a", "cmp-b"]) {
    const sel = clear($(id));
    for (const x of r.runs) sel.append(el("option", { value: x.name }, x.name));
  }
  // default comparison: the two newest runs with a report (else the two newest runs), older one as A
  const withReport = r.runs.filter((x) => x.has_report);
  const pick = withReport.length > 1 ? withReport : r.runs;
  if (pick.length > 1) { $("cmp-a").value = pick[1].name; $("cmp-b").value = pick[0].name; }
  $("cmp-btn").disabled = r.runs.length < 2;
}

async function loadImage(img, url) {
  try {
    const resp = await fetch(url, { headers: headers(false) });
    if (!resp.ok) throw await httpError(resp);
    img.src = URL.createObjectURL(await resp.blob());
  } catch (e) {
    img.replaceWith(el("p", { class: "error-text" }, `Plot ${img.alt || ""} could not be loaded: ` + errorText(e)));
  }
}

async function openRun(name) {
  const box = $("report"), body = clear($("report-body")), plots = clear($("report-plots"));
  box.hidden = false;
  body.append(el("p", { class: "hint" }, "loading…"));
  try {
    const r = await api("GET", "/ui/api/run?name=" + encodeURIComponent(name));
    $("h-report").textContent = "Report: " + name + (r.built_from_results ? " (built from results.jsonl)" : "");
    body.innerHTML = r.html;  // rendered by the server from markdown with raw HTML escaped
    const shown = new Set();
    for (const img of body.querySelectorAll("img")) {
      const file = img.getAttribute("src") || "";
      img.removeAttribute("src");
      if (!r.plots.includes(file)) { img.replaceWith(el("span", { class: "hint" }, `(missing plot ${file})`)); continue; }
      shown.add(file);
      img.alt = img.alt || file;
      loadImage(img, `/ui/api/run/file?name=${encodeURIComponent(name)}&file=${encodeURIComponent(file)}`);
    }
    for (const f of r.plots.filter((f) => !shown.has(f))) {
      const img = el("img", { alt: f });
      plots.append(el("figure", {}, img, el("figcaption", {}, f)));
      loadImage(img, `/ui/api/run/file?name=${encodeURIComponent(name)}&file=${encodeURIComponent(f)}`);
    }
    $("h-report").scrollIntoView({ block: "start" });
  } catch (e) {
    clear(body).append(el("p", { class: "error-text" }, "Could not open the report: " + errorText(e)));
  }
}

async function runCompare(ev) {
  ev.preventDefault();
  const out = clear($("compare-out"));
  const a = $("cmp-a").value, b = $("cmp-b").value;
  if (!a || !b) { out.append(el("p", { class: "error-text" }, "Choose two runs.")); return; }
  try {
    const r = await api("GET", `/ui/api/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
    const c = r.compare;
    out.append(el("p", {}, `${c.n_common} common questions (only A ${c.only_a}, only B ${c.only_b}).`));
    const t = el("table", { class: "compare" }, el("thead", {}, el("tr", {}, ["Difficulty", "n", "A EX %", "B EX %", "Delta"].map((h) => el("th", { scope: "col" }, h)))));
    const tb = el("tbody");
    for (const [lv, v] of Object.entries(c.by_difficulty)) {
      const d = v.delta === null ? "-" : (v.delta > 0 ? "+" : "") + v.delta.toFixed(1);
      tb.append(el("tr", {}, el("th", { scope: "row" }, lv), el("td", { class: "num" }, v.n), el("td", { class: "num" }, fmtPct(v.a)),
        el("td", { class: "num" }, fmtPct(v.b)), el("td", { class: "num " + (v.delta > 0 ? "good" : v.delta < 0 ? "bad" : "") }, d)));
    }
    t.append(tb);
    out.append(el("div", { class: "scroll" }, t), el("h4", {}, "sqlarbiter eval compare"), el("pre", { class: "compare-text" }, r.text));
  } catch (e) {
    out.append(el("p", { class: "error-text" }, "Could not compare: " + errorText(e)));
  }
}

// ------------------------------------------------------------------ start
function init() {
  const key = $("api-key");
  key.value = sessionStorage.getItem("sqlarbiter-api-key") || "";
  key.addEventListener("change", () => {
    sessionStorage.setItem("sqlarbiter-api-key", key.value.trim());
    hideError();
    start();
  });
  $("banner-close").addEventListener("click", hideError);
  $("plan-form").addEventListener("submit", runPlan);
  $("question").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) runPlan(e); });
  $("route-kind").addEventListener("change", fillRoutes);
  $("db").addEventListener("change", () => loadSchema());
  $("fb-correct").addEventListener("click", () => sendFeedback({ correct: true }));
  $("fb-wrong").addEventListener("click", () => sendFeedback({ correct: false }));
  $("fb-send-sql").addEventListener("click", () => {
    const sql = $("fb-sql").value.trim();
    if (!sql) { $("fb-status").textContent = "Type the corrected SQL first."; return; }
    sendFeedback({ corrected_sql: sql });
  });
  $("gen-switch").addEventListener("click", () => switchModel("gen", "/generators/active"));
  $("disc-switch").addEventListener("click", () => switchModel("disc", "/discriminators/active"));
  $("compare-form").addEventListener("submit", runCompare);
  window.addEventListener("hashchange", showPage);
  start();
}

function start() {
  state.schemaFor = null;
  loadOptions().then(() => document.body.setAttribute("data-ready", "1"))
    .catch((e) => { showError("Could not load the plan form: " + errorText(e)); document.body.setAttribute("data-ready", "error"); });
  showPage();
}

init();
