// The rating chart on a player's page: an SVG drawn here, without a library or a build step.
// Nothing inline that the strict CSP would block: colours and lines come from style.css classes.

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const HEIGHT = 200;
const PAD = { left: 44, right: 12, top: 12, bottom: 22 };

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

/** "1500?" while provisional (RD >= 110), else "1500". */
export function ratingText(rating, provisional) {
  return `${rating}${provisional ? "?" : ""}`;
}

/**
 * An <svg> of the rating after each duel, oldest first, from GET /api/users/{id}/rating-history
 * points (given newest first, as the API pages them). A shaded band shows ± the RD where known.
 */
export function ratingChart(pointsNewestFirst) {
  const points = [...pointsNewestFirst].reverse();
  const series = [{ rating: points[0].rating_before, rd: null, label: "start" },
    ...points.map((p) => ({ rating: p.rating, rd: p.rating_deviation,
      label: `${ratingText(p.rating, p.provisional)} after duel #${p.duel_id}` }))];
  const lows = series.map((p) => p.rating - (p.rd ?? 0));
  const highs = series.map((p) => p.rating + (p.rd ?? 0));
  let lo = Math.min(...series.map((p) => p.rating)) - 50;
  let hi = Math.max(...series.map((p) => p.rating)) + 50;
  lo = Math.max(Math.min(lo, ...lows), lo - 300);  // the band may widen the scale, within reason
  hi = Math.min(Math.max(hi, ...highs), hi + 300);
  const x = (i) => PAD.left + (series.length === 1 ? 0 : (i * (WIDTH - PAD.left - PAD.right)) / (series.length - 1));
  const y = (r) => PAD.top + ((hi - Math.min(Math.max(r, lo), hi)) * (HEIGHT - PAD.top - PAD.bottom)) / (hi - lo);
  const svg = s("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "rating-chart", role: "img",
    "aria-label": `Rating over ${points.length} duels` });
  for (const r of [lo, (lo + hi) / 2, hi].map(Math.round)) {
    svg.append(s("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(r), y2: y(r), class: "chart-grid" }),
      s("text", { x: PAD.left - 6, y: y(r) + 4, class: "chart-label", "text-anchor": "end" }, r));
  }
  const banded = series.map((p, i) => ({ ...p, i })).filter((p) => p.rd !== null);
  if (banded.length > 1) {
    const upper = banded.map((p) => `${x(p.i)},${y(p.rating + p.rd)}`);
    const lower = banded.map((p) => `${x(p.i)},${y(p.rating - p.rd)}`).reverse();
    svg.append(s("polygon", { points: [...upper, ...lower].join(" "), class: "chart-band" }));
  }
  svg.append(s("polyline", { points: series.map((p, i) => `${x(i)},${y(p.rating)}`).join(" "), class: "chart-line" }));
  series.forEach((p, i) => {
    svg.append(s("circle", { cx: x(i), cy: y(p.rating), r: 3, class: "chart-dot", "data-rating": p.rating },
      s("title", {}, p.label)));
  });
  svg.append(s("text", { x: PAD.left, y: HEIGHT - 6, class: "chart-label" }, "first duel"),
    s("text", { x: WIDTH - PAD.right, y: HEIGHT - 6, class: "chart-label", "text-anchor": "end" }, "latest"));
  return svg;
}
