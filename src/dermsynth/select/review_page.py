"""The review page's HTML and JavaScript (one string, so it ships inside the package).

Keyboard: arrow keys or j/k move between candidates, ``a`` accepts, ``r`` rejects, ``u``
resets to the automatic decision. Every decision is posted at once; the page refreshes its
state when the tab regains focus and every few seconds, so two tabs agree. A green border marks
the candidates the study trains on (the server computes them); each seed says when a decision
pulled in another candidate. All text from the manifest is set as text, never as HTML.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>dermsynth review</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1rem 2rem; color: #222; }
 h1 { font-size: 1.3rem; margin-bottom: .2rem; }
 .help { color: #555; font-size: .9rem; margin-bottom: 1rem; }
 .seed { border-top: 1px solid #ccc; padding: .8rem 0; }
 .seed h2 { font-size: 1rem; margin: 0 0 .5rem 0; }
 .row { display: flex; flex-wrap: wrap; gap: .6rem; align-items: flex-start; }
 .card { width: 170px; border: 4px solid #bbb; border-radius: 6px; padding: 4px;
         font-size: .75rem; background: #fafafa; outline: none; }
 .card.seedcard { border-color: #2850dc; }
 .card.trains { border-color: #1ea03c; }
 .card.excluded { border-color: #d22828; opacity: .75; }
 .card:focus { box-shadow: 0 0 0 3px #f0b400; }
 .card img { width: 160px; height: 160px; object-fit: contain; background: #eee; display: block; }
 .noimg { width: 160px; height: 160px; background: #eee; display: flex;
          align-items: center; justify-content: center; color: #888; }
 .badge { display: inline-block; padding: 0 4px; border-radius: 3px; color: white; }
 .badge.accepted { background: #1ea03c; } .badge.rejected { background: #d22828; }
 .badge.auto { background: #888; }
 .buttons button { font-size: .75rem; margin-right: 2px; }
 .reason { color: #444; min-height: 2.2em; }
 .trainflag { font-weight: bold; } .trainflag.yes { color: #1ea03c; }
 .notes { color: #7a4b00; font-size: .85rem; margin: 0 0 .4rem 0; }
 .error { color: #b00; font-weight: bold; }
</style>
</head>
<body>
<h1>dermsynth review: <span id="manifest"></span></h1>
<div class="help">Green border: the study trains on it (<span id="k"></span> per seed: accepted
ones first, then the best-ranked; a rejection makes room for the seed's next-best candidate).
Click a candidate (or move with the arrow keys), then <b>a</b> accept, <b>r</b> reject,
<b>u</b> reset to the automatic choice. Each decision is saved at once.</div>
<div id="error" class="error" role="alert"></div>
<div id="seeds"></div>
<script>
"use strict";
let state = null;
let focusedId = null;
let lastText = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function image(src, alt) {
  return src ? el("img", {src: src, alt: alt, loading: "lazy"}) : el("div", {class: "noimg"}, "no image");
}

function fmt(v) { return typeof v === "number" ? v.toFixed(2) : String(v); }

function card(c) {
  const status = c.reviewed ? c.reviewed : (c.selected ? "auto: kept" : "auto: dropped");
  const badgeClass = c.reviewed ? c.reviewed : "auto";
  const training = c.trains ? "trains" + (c.in_place_of ? " in place of " + c.in_place_of : "")
    : (c.excluded ? "excluded: never trains" : "does not train");
  const classes = ["card", "cand"];
  if (c.trains) classes.push("trains");
  if (c.excluded) classes.push("excluded");
  const scores = Object.entries(c.scores).filter(([k]) => k.startsWith("score"))
    .map(([k, v]) => k.replace("score_", "") + " " + fmt(v)).join(", ");
  const node = el("div", {class: classes.join(" "), tabindex: "0", "data-id": c.image_id,
                          "data-final": String(c.final), "data-trains": String(c.trains),
                          "data-reviewed": c.reviewed},
    image(c.image, c.image_id),
    el("div", {}, el("b", {}, (c.rank ? "#" + c.rank + " " : "") + c.image_id)),
    el("div", {}, el("span", {class: "badge " + badgeClass}, status)),
    el("div", {class: "trainflag" + (c.trains ? " yes" : "")}, training),
    el("div", {class: "reason"}, c.reason),
    el("div", {}, scores),
    el("div", {class: "buttons"},
      el("button", {type: "button", "data-action": "accept", onclick: () => decide(c.image_id, "accept")}, "accept (a)"),
      el("button", {type: "button", "data-action": "reject", onclick: () => decide(c.image_id, "reject")}, "reject (r)"),
      el("button", {type: "button", "data-action": "reset", onclick: () => decide(c.image_id, "reset")}, "reset (u)")));
  node.addEventListener("focus", () => { focusedId = c.image_id; });
  node.addEventListener("click", () => node.focus());
  return node;
}

function render() {
  document.getElementById("manifest").textContent = state.manifest;
  document.getElementById("k").textContent = String(state.k);
  const root = document.getElementById("seeds");
  root.replaceChildren();
  for (const s of state.seeds) {
    root.append(el("div", {class: "seed", "data-seed": s.seed_id},
      el("h2", {}, `seed ${s.seed_id} - ${s.label} - FST ${s.fst} - ${s.n_train} of ${s.candidates.length} train`),
      el("div", {class: "notes"}, ...s.notes.map(n => el("div", {class: "note"}, n))),
      el("div", {class: "row"},
        el("div", {class: "card seedcard"}, image(s.seed_image, s.seed_id), el("div", {}, el("b", {}, "seed"))),
        ...s.candidates.map(card))));
  }
  if (focusedId) {
    const node = document.querySelector(`.cand[data-id="${CSS.escape(focusedId)}"]`);
    if (node) node.focus({preventScroll: true});
  }
}

async function load() {
  try {
    const response = await fetch("/api/state", {cache: "no-store"});
    if (!response.ok) throw new Error("state: HTTP " + response.status);
    const text = await response.text();
    document.getElementById("error").textContent = "";
    // Rebuild the cards only when something changed: the poll would otherwise reload images.
    if (text === lastText) return;
    lastText = text;
    state = JSON.parse(text);
    render();
  } catch (e) {
    document.getElementById("error").textContent = String(e);
  }
}

async function decide(imageId, decision) {
  focusedId = imageId;
  try {
    const response = await fetch("/api/decision", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({image_id: imageId, decision: decision})});
    if (!response.ok) throw new Error("decision not saved: HTTP " + response.status);
    await load();
  } catch (e) {
    document.getElementById("error").textContent = String(e);
  }
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const cards = Array.from(document.querySelectorAll(".cand"));
  const current = cards.findIndex(n => n.dataset.id === focusedId);
  const keys = {a: "accept", r: "reject", u: "reset"};
  if (keys[event.key] && current >= 0) {
    event.preventDefault();
    decide(focusedId, keys[event.key]);
  } else if (["ArrowRight", "ArrowDown", "j"].includes(event.key)) {
    event.preventDefault();
    cards[Math.min(cards.length - 1, current + 1)]?.focus();
  } else if (["ArrowLeft", "ArrowUp", "k"].includes(event.key)) {
    event.preventDefault();
    cards[Math.max(0, current - 1)]?.focus();
  }
});
window.addEventListener("focus", load);
setInterval(() => { if (!document.hidden) load(); }, 5000);
load();
</script>
</body>
</html>
"""
