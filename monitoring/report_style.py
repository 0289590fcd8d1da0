"""The report's stylesheet, inlined into the page: system fonts only, no network."""

CSS = """
:root {
  --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --paper: #f6f8fa; --card: #ffffff;
  --ok: #1a7f37; --ok-bg: #dafbe1; --breach: #cf222e; --breach-bg: #ffebe9;
  --unknown: #9a6700; --unknown-bg: #fff8c5; --accent: #0969da;
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--paper); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", "Liberation Sans", sans-serif;
}
main { max-width: 1220px; margin: 0 auto; padding: 20px 24px 40px; }
h1 { font-size: 22px; margin: 0; font-weight: 650; letter-spacing: -0.01em; }
h2 { font-size: 18px; margin: 0; font-weight: 620; }
h2 code { font-size: 17px; }
h3 { font-size: 13px; margin: 0 0 8px; text-transform: uppercase; letter-spacing: .06em;
  color: var(--muted); font-weight: 600; }
code { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, monospace; font-size: 12.5px; }
.muted { color: var(--muted); }
header.top { display: flex; justify-content: space-between; align-items: flex-end; gap: 16px;
  margin-bottom: 14px; }
header.top .when { color: var(--muted); font-size: 13px; text-align: right; }
.banner { border-radius: 10px; padding: 12px 16px; margin-bottom: 14px; font-size: 16px;
  font-weight: 600; border: 1px solid; display: flex; gap: 18px; align-items: baseline; }
.banner small { font-weight: 400; font-size: 13px; color: var(--ink); }
.banner.ok { background: var(--ok-bg); border-color: #aceebb; color: var(--ok); }
.banner.breach { background: var(--breach-bg); border-color: #ffcecb; color: var(--breach); }
.banner.unknown { background: var(--unknown-bg); border-color: #f5e0a0; color: var(--unknown); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 16px 18px; margin-bottom: 16px; }
table { border-collapse: collapse; width: 100%; }
th { text-align: left; font-size: 12px; color: var(--muted); font-weight: 600; white-space: nowrap;
  border-bottom: 1px solid var(--line); padding: 6px 10px; }
td { padding: 5px 10px; border-bottom: 1px solid #eef1f4; vertical-align: top; white-space: nowrap; }
td.wrap { white-space: normal; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.unmeasured td.num { color: var(--unknown); }
.pill { display: inline-block; min-width: 62px; text-align: center; border-radius: 999px;
  padding: 1px 9px; font-size: 12px; font-weight: 650; text-transform: uppercase; letter-spacing: .04em; }
.pill.ok { background: var(--ok-bg); color: var(--ok); }
.pill.breach { background: var(--breach); color: #fff; }
.pill.unknown { background: var(--unknown-bg); color: var(--unknown); }
tr.slo.breach td { background: #fff6f5; }
.problems { border-left: 4px solid var(--unknown); }
.problems li { margin: 2px 0; }
nav.views { display: flex; flex-wrap: wrap; gap: 8px; margin: 0 0 16px; }
nav.views a { text-decoration: none; color: var(--ink); background: var(--card); border: 1px solid var(--line);
  border-radius: 999px; padding: 3px 12px; font-size: 13px; }
nav.views a .dot { display: inline-block; width: 8px; height: 8px; border-radius: 50%; margin-right: 6px; }
.dot.ok { background: var(--ok); } .dot.breach { background: var(--breach); }
.dot.unknown { background: #d4a72c; } .dot.none { background: var(--line); }
section.view header { display: flex; align-items: baseline; gap: 12px; margin-bottom: 10px; flex-wrap: wrap; }
.kind { font-size: 12px; color: var(--muted); border: 1px solid var(--line); border-radius: 6px; padding: 0 7px; }
.tiles { display: flex; flex-wrap: wrap; gap: 8px; margin-bottom: 12px; }
.tile { border: 1px solid var(--line); border-radius: 8px; padding: 6px 12px; min-width: 128px; background: #fbfcfd; }
.tile .v { font-size: 18px; font-weight: 650; font-variant-numeric: tabular-nums; }
.tile .k { font-size: 12px; color: var(--muted); }
.tile.ok { border-color: #aceebb; background: #f3fcf5; } .tile.ok .v { color: var(--ok); }
.tile.breach { border-color: #ffcecb; background: var(--breach-bg); } .tile.breach .v { color: var(--breach); }
.tile.unknown { border-color: #f5e0a0; background: #fffcea; } .tile.unknown .v { color: var(--unknown); }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
figure { margin: 0; min-width: 0; }
figcaption { font-size: 13px; margin-bottom: 4px; }
figcaption b { font-weight: 620; }
figcaption .sub { color: var(--muted); }
.fig-note { font-size: 12px; color: var(--muted); margin: 4px 0 0; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 12px; color: var(--muted); }
.legend i { display: inline-block; width: 14px; height: 3px; border-radius: 2px; margin-right: 5px; vertical-align: middle; }
svg.plot { width: 100%; height: auto; display: block; }
svg text { font-family: system-ui, "DejaVu Sans", sans-serif; }
svg .tick { font-size: 11px; fill: #59636e; }
svg .axis-title { font-size: 11.5px; fill: #59636e; }
svg .grid { stroke: #eaedf0; stroke-width: 1; }
svg .axis { stroke: #8c959f; stroke-width: 1; }
svg .target { stroke: #c2185b; stroke-width: 1.6; stroke-dasharray: 6 4; }
svg .target-label { font-size: 11.5px; fill: #c2185b; font-weight: 600; }
svg .marker { stroke: #424a53; stroke-width: 1; stroke-dasharray: 2 3; }
svg .marker-label { font-size: 10.5px; fill: #424a53; }
svg .series { fill: none; stroke-width: 2; stroke-linejoin: round; stroke-linecap: round; }
svg .empty-frame { fill: #fafbfc; stroke: #c9d1d9; stroke-dasharray: 5 4; }
svg .empty-title { font-size: 16px; font-weight: 650; fill: #59636e; }
svg .empty-why { font-size: 12px; fill: #59636e; }
svg .host { font-size: 12px; fill: var(--ink); }
svg .host-ok { fill: #4e79a7; } svg .host-behind { fill: #e8912d; } svg .host-down { fill: #eaeef2; }
svg .host-label { font-size: 12px; fill: var(--ink); font-weight: 600; }
svg .host-behind-label { font-size: 12px; fill: #bc4c00; font-weight: 650; }
svg .band-label { font-size: 11px; fill: #fff; font-weight: 650; }
svg .host-note { font-size: 12px; fill: var(--muted); }
footer { color: var(--muted); font-size: 12px; margin-top: 8px; }
@media (max-width: 900px) { .grid { grid-template-columns: 1fr; } }
"""
