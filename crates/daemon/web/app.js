// The daemon's page: folders, their state, conflicts (with buttons that
// resolve them), recent changes, participants, invites (Magic Wormhole
// codes, for a folder we administer on Tahoe-LAFS) and problems — kept
// live from the /v1/status WebSocket. No framework, no build step: this file is
// compiled into the binary as it is.
"use strict";

// Requests that change something carry this header: a page of another
// site cannot send it without the CORS preflight this daemon never grants.
const CSRF = { "X-Requested-With": "magic-folder" };

async function api(method, path, body) {
  const init = { method, headers: { ...CSRF }, credentials: "same-origin" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, init);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.reason || r.statusText);
  return data;
}

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

async function resolve(folder, path, participant, how) {
  try {
    await api("POST", `/v1/magic-folder/${encodeURIComponent(folder)}/resolve-conflict`,
      { relpath: path, resolution: how, participant });
  } catch (e) {
    alert("Could not resolve " + path + ": " + e.message);
  }
  refresh();
}

// Invite forms' contents by folder, kept across redraws.
const drafts = {};

async function invite(folder, form) {
  const f = encodeURIComponent(folder);
  const participant = form.elements.participant.value.trim();
  try {
    const inv = await api("POST", `/experimental/magic-folder/${f}/invite`,
      { "participant-name": participant, mode: form.elements.mode.value });
    form.reset();
    delete drafts[folder];
    document.activeElement.blur();
    refresh();
    // Answers when the invitee has joined (or the invite failed).
    api("POST", `/experimental/magic-folder/${f}/invite-wait`, { id: inv.id })
      .catch(() => {}).finally(refresh);
  } catch (e) {
    alert("Could not invite " + participant + ": " + e.message);
  }
}

async function cancelInvite(folder, id) {
  try {
    await api("POST", `/experimental/magic-folder/${encodeURIComponent(folder)}/invite-cancel`, { id });
  } catch (e) {
    alert("Could not cancel: " + e.message);
  }
  refresh();
}

function renderFolder(name, me, status, recent, participants, listing, invites) {
  const node = document.getElementById("folder-tpl").content.cloneNode(true);
  const root = node.querySelector(".folder");
  root.id = "folder-" + name;
  root.querySelector(".name").textContent = name;
  const st = root.querySelector(".state");
  st.textContent = status.state;
  st.classList.add("state-" + status.state);
  root.querySelector(".reason").textContent = status.state_reason || "";
  const pending = status.queued + status.in_flight + status.unpublished;
  const total = Math.max(status.files + (status.directories || 0), pending, 1);
  root.querySelector(".bar").style.width = Math.round(100 * (total - pending) / total) + "%";
  root.querySelector(".counts").textContent =
    `${plural(status.files, "file")}, ${status.directories === 1 ? "1 directory" : (status.directories || 0) + " directories"}; ` +
    `${status.queued} queued, ${status.in_flight} in flight, ` +
    `${status.unpublished} unpublished` +
    (status.last_poll ? `; last poll ${ago(status.last_poll)}` : "");
  const transfers = root.querySelector(".transfers");
  for (const t of status.transfers || []) {
    const pct = t.bytes_total ? Math.floor(100 * t.bytes_done / t.bytes_total) : 100;
    const li = el("li", `${t.direction === "upload" ? "↑" : "↓"} ${t.path} ${pct}%`,
      { "data-transfer": t.path });
    const bar = el("div", undefined, { class: "progress" });
    const fill = el("div", undefined, { class: "bar" });
    fill.style.width = pct + "%";
    bar.append(fill);
    li.append(bar);
    transfers.append(li);
  }
  const conflicts = root.querySelector(".conflicts");
  if (!status.conflicts.length) conflicts.append(el("li", "none", { class: "muted" }));
  for (const c of status.conflicts) {
    // "Mine" and "theirs" as the command line means them: my own version
    // wherever it is (the file if it won, my copy if it lost), or the other.
    const whose = c.participant === me ? "your version" : `${c.participant}'s version`;
    const li = el("li", `${c.path} — ${whose} is kept beside it as a copy`,
      { "data-conflict": c.path });
    const mine = el("button", "Keep mine", { "data-resolve": c.path, "data-take": "mine" });
    mine.onclick = () => resolve(name, c.path, undefined, "mine");
    const other = c.participant === me ? undefined : c.participant;
    const theirs = el("button", other ? `Take ${other}'s` : "Take theirs",
      { "data-resolve": c.path, "data-take": "theirs" });
    theirs.onclick = () => resolve(name, c.path, other, "theirs");
    li.append(mine, theirs);
    conflicts.append(li);
  }
  const rl = root.querySelector(".recent");
  if (!recent.length) rl.append(el("li", "none yet", { class: "muted" }));
  for (const r of recent.slice(0, 10)) {
    const li = el("li", r.relpath, { "data-path": r.relpath });
    li.append(el("span", ago(r["last-updated"] * 1000), { class: "age" }));
    rl.append(li);
  }
  const pl = root.querySelector(".participants");
  for (const p of Object.keys(participants).sort()) pl.append(el("li", p, { "data-participant": p }));
  if (listing.is_admin && listing.grid === "tahoe") {
    root.querySelector(".inviting").hidden = false;
    const form = root.querySelector("form.invite");
    // What is typed survives a redraw (the page redraws as events arrive).
    const draft = drafts[name] || {};
    form.elements.participant.value = draft.participant || "";
    form.elements.mode.value = draft.mode || "read-write";
    form.oninput = form.onchange = () => {
      drafts[name] = { participant: form.elements.participant.value, mode: form.elements.mode.value };
    };
    form.onsubmit = (ev) => { ev.preventDefault(); invite(name, form); };
    const il = root.querySelector(".invites");
    for (const i of invites) {
      const who = i["participant-name"];
      let li;
      if (!i.consumed) {
        li = el("li", `${who}: give them the code `, { "data-invite": who });
        li.append(el("code", i["wormhole-code"], { "data-invite-code": who }));
        li.append(el("span", " (waiting for them to join)", { class: "muted" }));
        const cancel = el("button", "Cancel", { "data-cancel-invite": who });
        cancel.onclick = () => cancelInvite(name, i.id);
        li.append(cancel);
      } else if (i.success) {
        li = el("li", `${who} joined`, { "data-invite-done": who });
      } else {
        li = el("li", `${who}: cancelled or failed`, { "data-invite-failed": who, class: "muted" });
      }
      il.append(li);
    }
  }
  const errs = root.querySelector(".errors");
  if (!status.errors.length) errs.append(el("li", "none", { class: "muted" }));
  for (const e of status.errors) {
    const li = el("li", (e.path ? e.path + ": " : "") + e.message);
    li.append(el("span", ago(e.at), { class: "age" }));
    errs.append(li);
  }
  return node;
}

let refreshing = false, again = false, lastKey = "", lastDrawn = 0;
async function refresh() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    const folders = await api("GET", "/v1/magic-folder");
    const data = await Promise.all(Object.keys(folders).sort().map(async (name) => {
      const f = encodeURIComponent(name);
      const [status, recent, participants, invites] = await Promise.all([
        api("GET", `/v1/magic-folder/${f}/status`),
        api("GET", `/v1/magic-folder/${f}/recent-changes`),
        api("GET", `/v1/magic-folder/${f}/participants`).catch(() => ({})),
        api("GET", `/experimental/magic-folder/${f}/invites`).catch(() => []),
      ]);
      return [name, folders[name].participant, status, recent, participants, folders[name], invites];
    }));
    // Redrawn only when something changed (or a minute passed, for the
    // ages): buttons stay put under the pointer while nothing happens.
    const key = JSON.stringify(data);
    if (key === lastKey && Date.now() - lastDrawn < 60000) return;
    // Not under someone typing: the redraw would take their input away.
    if (document.activeElement && document.activeElement.matches("form input")) {
      setTimeout(refresh, 1000);
      return;
    }
    lastKey = key;
    lastDrawn = Date.now();
    const parts = data.map((d) => renderFolder(...d));
    const main = document.getElementById("folders");
    main.replaceChildren(...parts);
    if (!parts.length) main.append(el("p", "No magic folders.", { class: "muted" }));
  } catch (e) {
    document.getElementById("live").textContent = "error: " + e.message;
  } finally {
    refreshing = false;
    if (again) { again = false; setTimeout(refresh, 0); }
  }
}

let timer = null;
function soon() { clearTimeout(timer); timer = setTimeout(refresh, 200); }

function connect() {
  const live = document.getElementById("live");
  const ws = new WebSocket(`ws://${location.host}/v1/status`);
  ws.onopen = () => { live.textContent = "live"; };
  ws.onmessage = soon;
  ws.onclose = () => { live.textContent = "reconnecting…"; setTimeout(connect, 2000); };
}

refresh();
connect();
// Ages and the state move on without events too.
setInterval(refresh, 10000);
