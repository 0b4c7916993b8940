// The marketplace dashboard: open tasks, a task's model tree, leaderboard, score progression
// and payouts, over the read-only API. No framework and no third-party code: the machines are
// offline and the page must not run what it did not ship with. Data is only ever put in the
// page as text (never as HTML): a task's strings come from whoever wrote to the chain.
"use strict";

const API = "/api/v1";
const POLL_MS = 1500; // the page re-renders when the index's block moves
const SVG = "http://www.w3.org/2000/svg";
const ZERO = "0x0000000000000000000000000000000000000000";

let lastBlock = null;
let rendering = false;

// ------------------------------------------------------------------ helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") el.className = value;
    else if (key === "onclick") el.addEventListener("click", value);
    else el.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

async function get(path) {
  // no-cache + the API's ETags: the browser revalidates and a 304 costs no body.
  const reply = await fetch(API + path, { cache: "no-cache" });
  if (reply.status === 404) return null;
  if (!reply.ok) throw new Error(`${path}: HTTP ${reply.status}`);
  return reply.json();
}

function short(address) {
  return address ? `${address.slice(0, 6)}…${address.slice(-4)}` : "";
}

function amount(value, token) {
  // Base units as decimal strings (JSON numbers lose precision): ETH shown in ether.
  if (token !== ZERO) return `${value} units of ${short(token)}`;
  const wei = BigInt(value);
  const whole = wei / 10n ** 18n;
  const fraction = (wei % 10n ** 18n).toString().padStart(18, "0").replace(/0+$/, "").slice(0, 6);
  return `${whole}${fraction ? "." + fraction : ""} ETH`;
}

function when(timestamp, chainTime) {
  const date = new Date(timestamp * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC";
  if (chainTime === null || chainTime === undefined) return date;
  const left = timestamp - chainTime;
  const span = Math.abs(left) < 3600 ? `${Math.round(Math.abs(left) / 60)} min` : `${(Math.abs(left) / 3600).toFixed(1)} h`;
  return `${date} (${left >= 0 ? "in " + span : span + " ago"})`;
}

function phase(name) {
  return h("span", { class: `phase ${name}` }, name);
}

function table(headers, rows, rowAttrs = () => ({})) {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", { class: cls || "" }, label)))),
    h("tbody", {}, rows.map((cells, i) => h("tr", rowAttrs(i), cells))),
  );
}

function td(value, cls = "") {
  return h("td", { class: cls }, value);
}

// ------------------------------------------------------------------ views

async function tasksView(health) {
  const page = await get("/tasks?limit=200");
  const tasks = page ? page.items : [];
  const open = tasks.filter((t) => t.phase === "rounds");
  const row = (t) => [
    td(t.task_id, "num"),
    td(phase(t.phase)),
    td(amount(t.bounty, t.token), "num"),
    td(when(t.rounds_end, health.chain_time)),
    td(t.nodes, "num"),
    td(short(t.sponsor), "mono"),
  ];
  const headers = [["Task", "num"], ["Phase"], ["Bounty", "num"], ["Rounds end"], ["Nodes", "num"], ["Sponsor"]];
  const listing = (items) =>
    items.length
      ? table(headers, items.map(row), (i) => ({
          class: "link",
          "data-task": items[i].task_id,
          onclick: () => (location.hash = `#/tasks/${items[i].task_id}`),
        }))
      : h("p", { class: "muted" }, "None.");
  return [
    h("h1", {}, "Tasks"),
    h("section", { class: "panel", id: "open-tasks" }, h("h2", {}, `Open for updates (${open.length})`), listing(open)),
    h("section", { class: "panel", id: "all-tasks" }, h("h2", {}, `All tasks (${page ? page.total : 0})`), listing(tasks)),
  ];
}

async function taskView(taskId, health) {
  // Asked for only when they exist: the console stays free of expected 404s.
  const task = await get(`/tasks/${taskId}`);
  if (task === null) return [h("h1", {}, `No task ${taskId}`), h("p", {}, h("a", { href: "#/" }, "All tasks"))];
  const [tree, board] = await Promise.all([get(`/tasks/${taskId}/tree`), get(`/tasks/${taskId}/leaderboard?limit=10`)]);
  const payouts = tree && tree.report_cid ? await get(`/tasks/${taskId}/payouts`) : null;
  const facts = [
    ["Phase", phase(task.phase)],
    ["Bounty", amount(task.bounty, task.token)],
    ["Deposit per update", amount(task.deposit, task.token)],
    ["Rounds", `${task.rounds} × ${task.round_duration} s`],
    ["Rounds end", when(task.rounds_end, health.chain_time)],
    ["Sponsor", h("span", { class: "mono" }, short(task.sponsor))],
    ["Evaluators", `${task.evaluators.length} (quorum ${task.quorum})`],
  ];
  // Once a root is agreed: the delivered model's card (its page says so if there is none).
  if (task.payout_root) facts.push(["Model", h("a", { href: `/tasks/${task.task_id}/card`, id: "card-link" }, "model card")]);
  return [
    h("p", {}, h("a", { href: "#/" }, "← all tasks")),
    h("h1", {}, `Task ${task.task_id}`),
    h("div", { class: "facts" }, facts.map(([label, value]) => h("div", {}, h("span", {}, label), value))),
    h(
      "div",
      { class: "grid" },
      h("section", { class: "panel wide", id: "tree" }, treePanel(tree)),
      h("section", { class: "panel", id: "leaderboard" }, leaderboardPanel(board, tree)),
      h("section", { class: "panel", id: "progress" }, progressPanel(tree)),
      h("section", { class: "panel wide", id: "payouts" }, payoutsPanel(payouts, task.token)),
      h("section", { class: "panel wide", id: "phases" }, phasesPanel(task, health)),
    ),
  ];
}

// ------------------------------------------------------------------ the tree

function scoreColour(score, low, high) {
  // Light to dark blue as the score rises (the tree's legend says so).
  const t = high > low ? (score - low) / (high - low) : 1;
  const mix = (a, b) => Math.round(a + (b - a) * t);
  return `rgb(${mix(214, 22)}, ${mix(226, 52)}, ${mix(255, 140)})`;
}

function layout(nodes) {
  // Layers by depth (one more than the deepest parent); in a layer, by parent's place, then id.
  const byId = new Map(nodes.map((n) => [n.node_id, n]));
  const depth = new Map();
  for (const n of nodes) {
    const parents = (n.parents.length ? n.parents : [n.parent]).filter((p) => byId.has(p) && depth.has(p));
    depth.set(n.node_id, parents.length ? 1 + Math.max(...parents.map((p) => depth.get(p))) : 0);
  }
  const layers = [];
  for (const n of nodes) (layers[depth.get(n.node_id)] ||= []).push(n);
  const place = new Map();
  const width = Math.max(760, Math.min(1300, 26 * Math.max(...layers.map((l) => l.length))));
  layers.forEach((layer, d) => {
    const anchor = (n) => {
      const p = (n.parents.length ? n.parents : [n.parent]).find((q) => place.has(q));
      return p === undefined ? 0 : place.get(p).x;
    };
    layer.sort((a, b) => anchor(a) - anchor(b) || a.node_id - b.node_id);
    const step = width / (layer.length + 1);
    layer.forEach((n, i) => place.set(n.node_id, { x: step * (i + 1), y: 30 + d * 90, step }));
  });
  return { place, width, height: 60 + (layers.length - 1) * 90 };
}

function treePanel(tree) {
  const nodes = tree ? tree.nodes : [];
  const title = h("h2", {}, "Model tree ", h("span", { id: "tree-count", class: "muted" }, `${nodes.length} nodes`));
  if (!nodes.length) return [title, h("p", { class: "muted" }, "No architecture proposed yet.")];
  const { place, width, height } = layout(nodes);
  const scored = nodes.filter((n) => n.valid && n.score !== null);
  const low = Math.min(...scored.map((n) => n.score));
  const high = Math.max(...scored.map((n) => n.score));
  const maxGain = Math.max(1, ...nodes.map((n) => Math.abs(n.gain || 0)));
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", "aria-label": "model tree" });
  const edges = s("g", { class: "edges" });
  const dots = s("g", { class: "nodes" });
  for (const n of nodes) {
    const at = place.get(n.node_id);
    for (const p of n.parents.length ? n.parents : [n.parent]) {
      const from = place.get(p);
      if (!from) continue;
      const colour = n.gain === null ? "#b8bfcc" : n.gain > 0 ? "#1f9d55" : n.gain < 0 ? "#d64545" : "#8a93a5";
      const thickness = n.gain === null ? 1 : 1 + (3 * Math.abs(n.gain)) / maxGain;
      edges.append(s("line", { x1: from.x, y1: from.y, x2: at.x, y2: at.y, stroke: colour, "stroke-width": thickness.toFixed(2), class: "edge" }));
    }
    const winner = tree.winner === n.node_id;
    const radius = Math.max(2, Math.min(9, at.step / 3)) + (winner ? 3 : 0);
    const fill = n.valid === false ? "#ffffff" : n.score === null ? "#d5d9e0" : scoreColour(n.score, low, high);
    const dot = s("circle", {
      cx: at.x, cy: at.y, r: radius.toFixed(1), fill,
      stroke: winner ? "#e0a100" : n.valid === false ? "#d64545" : "#56607a",
      "stroke-width": winner ? 3 : 1,
      class: `node ${n.kind}${winner ? " winner" : ""}`,
      "data-node": n.node_id,
    });
    const verdict = n.valid === null ? "not scored yet" : n.valid ? `score ${n.score}, gain ${n.gain}` : "invalid";
    const privacy = n.epsilon === null ? "" : `, DP epsilon ${n.epsilon}`;
    dot.append(s("title", {}, `node ${n.node_id} (${n.kind}, round ${n.round}${privacy}) by ${n.author}: ${verdict}`));
    dots.append(dot);
    if (nodes.length <= 60) dots.append(s("text", { x: at.x + radius + 2, y: at.y - radius, class: "label" }, n.node_id));
  }
  svg.append(edges, dots);
  const legend = h(
    "p",
    { class: "legend" },
    "Node colour: score (light low, dark high; white: invalid, grey: not scored). ",
    "Edge: the child's gain over its parents (green positive, red negative, width its size). ",
    tree.winner !== null ? h("span", { id: "tree-winner" }, `Winner: node ${tree.winner} (gold ring).`) : "No winner yet.",
  );
  return [title, svg, legend];
}

// ------------------------------------------------------------------ leaderboard, chart, payouts

function leaderboardPanel(board, tree) {
  const title = h("h2", {}, "Leaderboard");
  if (!board || !board.entries.length) return [title, h("p", { class: "muted" }, "No payout report yet.")];
  const rows = board.entries.map((e) => [
    td(e.rank, "num"),
    td(e.node_id, "num node"),
    td(e.kind),
    td(short(e.author), "mono"),
    td(e.score, "num"),
    td(e.gain, "num"),
  ]);
  const agreed = tree && tree.agreed ? "the agreed report" : "a posted report (not agreed yet)";
  return [
    title,
    table([["#", "num"], ["Node", "num"], ["Kind"], ["Author"], ["Score", "num"], ["Gain", "num"]], rows),
    h("p", { class: "legend" }, `From ${agreed}.`),
  ];
}

function progressPanel(tree) {
  const title = h("h2", {}, "Score progression");
  const scored = tree ? tree.nodes.filter((n) => n.valid && n.score !== null) : [];
  if (!scored.length) return [title, h("p", { class: "muted" }, "No scores yet.")];
  const rounds = Math.max(...scored.map((n) => n.round));
  const low = Math.min(...scored.map((n) => n.score));
  const high = Math.max(...scored.map((n) => n.score));
  const [w, hgt, pad] = [520, 240, 44];
  const x = (r) => pad + (rounds ? (r / rounds) * (w - 2 * pad) : (w - 2 * pad) / 2);
  const y = (v) => hgt - pad + (high > low ? -((v - low) / (high - low)) * (hgt - 2 * pad) : -(hgt - 2 * pad) / 2);
  const svg = s("svg", { viewBox: `0 0 ${w} ${hgt}`, width: "100%", role: "img", "aria-label": "score by round" });
  svg.append(
    s("line", { x1: pad, y1: hgt - pad, x2: w - pad, y2: hgt - pad, class: "axis" }),
    s("line", { x1: pad, y1: pad, x2: pad, y2: hgt - pad, class: "axis" }),
    s("text", { x: w / 2, y: hgt - 8, "text-anchor": "middle" }, "round"),
    s("text", { x: 4, y: y(high) + 4 }, high),
    s("text", { x: 4, y: y(low) + 4 }, low),
  );
  for (let r = 0; r <= rounds; r++) svg.append(s("text", { x: x(r), y: hgt - pad + 14, "text-anchor": "middle" }, r));
  let best = -Infinity;
  const points = [];
  for (let r = 0; r <= rounds; r++) {
    for (const n of scored) if (n.round === r) best = Math.max(best, n.score);
    if (best > -Infinity) points.push(`${x(r).toFixed(1)},${y(best).toFixed(1)}`);
  }
  for (const n of scored) svg.append(s("circle", { cx: x(n.round), cy: y(n.score), r: 3, fill: "#8ea6e6", class: "score-dot" }));
  svg.append(s("polyline", { points: points.join(" "), fill: "none", stroke: "#2f5fd0", "stroke-width": 2, class: "best" }));
  return [title, svg, h("p", { class: "legend" }, "Dots: each scored node at its round. Line: the best score so far.")];
}

function payoutsPanel(payouts, token) {
  const title = h("h2", {}, "Payouts and claims");
  if (!payouts) return [title, h("p", { class: "muted" }, "No payout report yet.")];
  const claimed = payouts.payouts.filter((p) => p.claimed).length;
  const rows = payouts.payouts.map((p) => [
    td(p.leaf, "num"),
    td(p.account, "mono"),
    td(amount(p.amount, token), "num"),
    td(p.points, "num"),
    td(p.claimed ? h("span", { class: "claimed" }, "claimed") : h("span", { class: "unclaimed" }, "not yet")),
  ]);
  return [
    title,
    h("p", { class: "legend" }, `${claimed} of ${payouts.payouts.length} claimed; total ${amount(payouts.total, token)}; root `, h("span", { class: "mono" }, payouts.root.slice(0, 18) + "…"), payouts.agreed ? " (agreed)" : " (posted, not agreed)"),
    table([["Leaf", "num"], ["Account"], ["Amount", "num"], ["Points", "num"], ["Claim"]], rows),
  ];
}

function phasesPanel(task, health) {
  const rows = task.phases.map((p) => [td(phase(p.phase)), td(when(p.starts, health.chain_time)), td(p.ends === null ? "—" : when(p.ends, health.chain_time))]);
  return [h("h2", {}, "Phases"), table([["Phase"], ["Starts"], ["Ends"]], rows)];
}

// ------------------------------------------------------------------ routing and live updates

async function render(health) {
  // False when a render is already under way (the next tick tries again).
  if (rendering) return false;
  rendering = true;
  try {
    const match = location.hash.match(/^#\/tasks\/(\d+)$/);
    const content = match ? await taskView(Number(match[1]), health) : await tasksView(health);
    document.getElementById("view").replaceChildren(...content);
    document.body.dataset.block = String(health.indexed_block);
  } catch (error) {
    document.getElementById("view").replaceChildren(h("p", { class: "error" }, String(error)));
  } finally {
    rendering = false;
  }
  return true;
}

async function tick(force = false) {
  const live = document.getElementById("live");
  try {
    const health = await get("/health");
    live.className = "live ok";
    live.textContent = `live · block ${health.indexed_block}` + (health.lag ? ` (${health.lag} behind)` : "");
    if ((force || health.indexed_block !== lastBlock) && (await render(health))) {
      lastBlock = health.indexed_block;
    }
  } catch (error) {
    live.className = "live down";
    live.textContent = "service unreachable, retrying";
  }
}

window.addEventListener("hashchange", () => {
  lastBlock = null; // render the new view even if a render is under way now
  tick(true);
});
tick(true);
setInterval(tick, POLL_MS);
