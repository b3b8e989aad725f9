"""Present a suite run: terminal summary, report.json and a self-contained report.html."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from evals.runner import CaseResult, SuiteResult

COUNT_METRICS = {"cases", "template_leaks", "errors"}
LABELS = {
    "cases": "Cases run",
    "case_pass_rate": "Cases passed",
    "kind_accuracy": "Right kind of reply",
    "fact_accuracy": "Fact accuracy",
    "citation_validity": "Citation validity (fact cited to its own passage)",
    "quote_verbatim": "Quotes verbatim in their document",
    "citation_markers": "Every [n] has a citation and vice versa",
    "must_not_clean": "Says nothing it must not",
    "recall_at_k": "Retrieval recall@k",
    "mrr": "Retrieval MRR",
    "urgent_recall": "Urgent recall",
    "urgent_call_first": "Urgent replies say 'call' first",
    "false_alarm_rate": "False-alarm rate",
    "out_of_scope_handling": "Out-of-scope handled",
    "unknown_handling": "Unknowns admitted",
    "personal_referral": "Personal questions referred to care team",
    "disclaimer_presence": "Disclaimer present",
    "template_leaks": "Prompt-template leaks",
    "errors": "Assistant crashes",
    "latency_p50_ms": "Latency median (ms)",
    "latency_p95_ms": "Latency 95th percentile (ms)",
    "duration_s": "Whole run (s)",
    "leaning_shown_alone": "Leaning sentences shown without the one before",
    "citation_labels": "Citation labels name the cited document",
}
KIND_COLOURS = {
    "answer": "#2b6cb0",
    "unknown": "#805ad5",
    "urgent": "#c53030",
    "out_of_scope": "#718096",
    "error": "#b7791f",
}


def label(metric: str, k: int | None = None) -> str:
    """A staff-readable name for a metric."""
    if metric == "recall_at_k" and k:
        return f"Retrieval recall@{k}"
    if metric.startswith("grade_"):
        stat, kind = metric.split(".", 1)
        return f"Reading grade {'median' if stat == 'grade_median' else '90th pct'} ({kind})"
    return LABELS.get(metric, metric)


def fmt(metric: str, value: float | None) -> str:
    """A metric value as text: percentages for rates, plain numbers otherwise."""
    if value is None:
        return "n/a"
    if metric in COUNT_METRICS:
        return f"{value:.0f}"
    if metric.endswith("_ms"):
        return f"{value:.0f} ms"
    if metric == "duration_s":
        return f"{value:.1f} s"
    if metric.startswith("grade_"):
        return f"{value:.1f}"
    if metric == "mrr":
        return f"{value:.3f}"
    return f"{100 * value:.1f}%"


def _limit_text(metric: str, lo: float | None, hi: float | None) -> str:
    parts = []
    if lo is not None:
        parts.append(f">= {fmt(metric, lo)}")
    if hi is not None:
        parts.append(f"<= {fmt(metric, hi)}")
    return " and ".join(parts)


# ---------------------------------------------------------------- terminal


def summary_table(result: SuiteResult, list_failures: bool = True) -> str:
    """The run as a plain-text table for the terminal; `list_failures=False` names no case (blind sets)."""
    limited = {c.metric: c for c in result.checks}
    rows = [("metric", "value", "threshold", "status")]
    for name, value in result.metrics.items():
        if value is None and name not in limited:
            continue
        c = limited.get(name)
        rows.append(
            (
                label(name, result.k),
                fmt(name, value),
                _limit_text(name, c.min, c.max) if c else "",
                c.status.upper() if c else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("pass rate per category: " + ", ".join(f"{cat} {ok}/{n}" for cat, (ok, n) in result.categories().items()))
    if result.tags():
        lines.append("pass rate per tag: " + ", ".join(f"{tag} {ok}/{n}" for tag, (ok, n) in result.tags().items()))
    failed = [r for r in result.results if not r.passed]
    if failed and not list_failures:
        lines.append(f"{len(failed)} failed case(s), not listed (--blind)")
    elif failed:
        lines.append(f"{len(failed)} failed case(s):")
        for r in failed[:40]:
            lines.append(f"  {r.case.id} [{r.case.category}]: {r.reasons[0]}" + (" ..." if len(r.reasons) > 1 else ""))
        if len(failed) > 40:
            lines.append(f"  ... and {len(failed) - 40} more (see report.html)")
    verdict = "PASS: all thresholds met" if result.passed else (
        "FAIL: "
        + ", ".join(
            f"{c.metric} = {fmt(c.metric, c.value)} (needs {_limit_text(c.metric, c.min, c.max)})" for c in result.failed_checks
        )
    )
    lines.append(verdict)
    return "\n".join(lines)


# ---------------------------------------------------------------- JSON


def _case_dict(r: CaseResult) -> dict[str, Any]:
    return {
        "id": r.case.id,
        "category": r.case.category,
        "file": r.case.source_file,
        "question": r.case.question,
        "history": [t.model_dump() for t in r.case.history],
        "expect_kinds": r.case.kinds,
        "kind": r.kind,
        "passed": r.passed,
        "reasons": r.reasons,
        "latency_ms": round(r.latency_ms, 1),
        "reading_grade": None if r.grade is None else round(r.grade, 2),
        "retrieval_rank": r.rank,
        "cite_docs": r.case.cite_docs,
        "answer": r.answer.to_json_dict() if r.answer else None,
        "note": r.case.note,
    }


def to_json(result: SuiteResult) -> dict[str, Any]:
    """Everything about the run as plain JSON data."""
    return {
        "passed": result.passed,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "k": result.k,
        "duration_s": round(result.duration_s, 2),
        "meta": result.meta,
        "metrics": result.metrics,
        "thresholds": [
            {"metric": c.metric, "value": c.value, "min": c.min, "max": c.max, "status": c.status}
            for c in result.checks
        ],
        "categories": {cat: {"passed": ok, "cases": n} for cat, (ok, n) in result.categories().items()},
        "tags": {tag: {"passed": ok, "cases": n} for tag, (ok, n) in result.tags().items()},
        "cases": [_case_dict(r) for r in result.results],
    }


# ---------------------------------------------------------------- SVG charts


def _nice_step(span: float, bins: int) -> float:
    raw = max(span / bins, 1e-9)
    mag = 10 ** math.floor(math.log10(raw))
    return next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)


def histogram_svg(series: dict[str, Sequence[float]], title: str, unit: str, bins: int = 12) -> str:
    """A stacked histogram as inline SVG (one colour per series)."""
    values = [v for vs in series.values() for v in vs]
    width, height, left, bottom = 640, 290, 48, 46
    top = 56 if len(series) > 1 else 40  # room above the tallest bar for its count (and the legend)
    head = (
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" class="chart">'
        f'<text x="{width / 2}" y="18" text-anchor="middle" class="ct">{escape(title)}</text>'
    )
    if not values:
        return head + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text></svg>'
    lo, hi = min(values), max(values)
    step = _nice_step(hi - lo or 1.0, bins)
    start = math.floor(lo / step) * step
    nbins = max(1, math.ceil((hi - start) / step + 1e-9))
    if start + nbins * step <= hi:
        nbins += 1
    counts = {name: [0] * nbins for name in series}
    for name, vs in series.items():
        for v in vs:
            counts[name][min(nbins - 1, int((v - start) // step))] += 1
    totals = [sum(counts[n][i] for n in series) for i in range(nbins)]
    ymax = max(totals) or 1
    plot_w, plot_h = width - left - 12, height - bottom - top
    bw = plot_w / nbins
    parts = [head]
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 12}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{ymax * frac:.0f}</text>')
    for i in range(nbins):
        base = 0
        for name in series:
            c = counts[name][i]
            if not c:
                continue
            h = plot_h * c / ymax
            y = top + plot_h * (1 - (base + c) / ymax)
            colour = KIND_COLOURS.get(name, "#2b6cb0")
            tip = f"{name}: {c} between {start + i * step:g} and {start + (i + 1) * step:g} {unit}"
            parts.append(
                f'<rect x="{left + i * bw + 1:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{escape(tip)}</title></rect>'
            )
            base += c
        if totals[i]:
            y = top + plot_h * (1 - totals[i] / ymax) - 3
            parts.append(f'<text x="{left + (i + 0.5) * bw:.1f}" y="{y:.1f}" text-anchor="middle">{totals[i]}</text>')
    every = max(1, math.ceil((nbins + 1) / 8))
    for i in range(0, nbins + 1, every):
        x = left + i * bw
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{start + i * step:g}</text>'
        )
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">{escape(unit)}</text>')
    if len(series) > 1:
        x = width - 12 - sum(24 + 8 * len(name) for name in series)
        for name in series:
            colour = KIND_COLOURS.get(name, "#2b6cb0")
            parts.append(f'<rect x="{x}" y="26" width="10" height="10" fill="{colour}"/>')
            parts.append(f'<text x="{x + 14}" y="35">{escape(name)}</text>')
            x += 24 + 8 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def category_bars_svg(categories: dict[str, tuple[int, int]]) -> str:
    """Horizontal bars: the share of cases passed in each category."""
    row, left, width = 30, 110, 640
    height = 40 + row * max(1, len(categories))
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="Pass rate per category" '
        f'xmlns="http://www.w3.org/2000/svg" class="chart">'
        f'<text x="{width / 2}" y="18" text-anchor="middle" class="ct">Pass rate per category</text>'
    ]
    plot_w = width - left - 150
    for i, (cat, (ok, n)) in enumerate(categories.items()):
        y = 30 + i * row
        rate = ok / n if n else 0
        colour = "#2f855a" if rate >= 0.9 else "#b7791f" if rate >= 0.7 else "#c53030"
        parts.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end">{escape(cat)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{plot_w}" height="18" class="track"/>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{plot_w * rate:.1f}" height="18" fill="{colour}"/>')
        parts.append(f'<text x="{left + plot_w + 8}" y="{y + 16}">{ok}/{n} ({100 * rate:.0f}%)</text>')
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1a202c;background:#f7fafc;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:16px}
h1{font-size:1.5rem;margin:.2em 0}h2{font-size:1.2rem;margin-top:1.6em;border-bottom:2px solid #e2e8f0}
.verdict{display:inline-block;padding:.3em .8em;border-radius:6px;color:#fff;font-weight:700}
.pass{background:#2f855a}.fail{background:#c53030}.na{background:#a0aec0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.card{background:#fff;border-radius:8px;padding:10px 12px;border-left:6px solid #a0aec0;box-shadow:0 1px 2px #0002}
.card.pass{border-color:#2f855a;background:#fff}.card.fail{border-color:#c53030;background:#fff5f5}
.card .v{font-size:1.6rem;font-weight:700}.card .l{font-size:.85rem;color:#4a5568}.card .t{font-size:.8rem;color:#4a5568}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,480px),1fr));gap:12px}
.chart{width:100%;height:auto;background:#fff;border-radius:8px;font-size:13px;fill:#2d3748}
.chart .ct{font-size:16px;font-weight:600}.chart .grid{stroke:#e2e8f0}.chart .track{fill:#edf2f7}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.9rem}
th,td{border-bottom:1px solid #e2e8f0;padding:4px 6px;text-align:left;vertical-align:top}
.case{background:#fff;border-radius:8px;padding:10px 14px;margin:12px 0;border-left:6px solid #c53030;box-shadow:0 1px 2px #0002}
.case h3{margin:.1em 0;font-size:1rem;word-break:break-word}.meta{color:#4a5568;font-size:.85rem}
.reasons{color:#9b2c2c}.answer{white-space:pre-wrap;background:#f7fafc;padding:6px 8px;border-radius:4px}
blockquote{margin:.3em 0 .3em 1em;padding-left:.6em;border-left:3px solid #cbd5e0;color:#2d3748}
.small{font-size:.85rem;color:#4a5568}
"""


def _case_html(r: CaseResult) -> str:
    c = r.case
    out = [f'<section class="case" id="case-{escape(c.id)}"><h3>{escape(c.id)}</h3>']
    out.append(
        f'<div class="meta">category {escape(c.category)} · expected {escape(" or ".join(c.kinds))} · '
        f"got {escape(str(r.kind))} · {r.latency_ms:.0f} ms"
        + (f" · reading grade {r.grade:.1f}" if r.grade is not None else "")
        + (f" · expected doc rank {r.rank}" if c.cite_docs and r.rank else "")
        + (" · expected doc not retrieved" if c.cite_docs and not r.rank else "")
        + f" · {escape(Path(c.source_file).name)}</div>"
    )
    out.append('<p><b>Why it failed</b></p><ul class="reasons">')
    out += [f"<li>{escape(reason)}</li>" for reason in r.reasons]
    out.append("</ul>")
    if c.history:
        out.append("<p><b>Earlier conversation</b></p><ul>")
        out += [f"<li><i>{escape(t.role)}:</i> {escape(t.content)}</li>" for t in c.history]
        out.append("</ul>")
    out.append(f"<p><b>Question</b><br>{escape(c.question)}</p>")
    if r.answer:
        out.append(f'<p><b>Answer</b></p><div class="answer">{escape(r.answer.answer)}</div>')
        if r.answer.citations:
            out.append("<p><b>Citations</b></p><ol>")
            for cit in r.answer.citations:
                out.append(
                    f'<li value="{cit.n}"><b>{escape(cit.doc_id)}</b> — {escape(cit.title)}'
                    f"<blockquote>{escape(cit.quote)}</blockquote></li>"
                )
            out.append("</ol>")
        if r.answer.disclaimer:
            out.append(f'<p class="small">Disclaimer: {escape(r.answer.disclaimer)}</p>')
    expected = [f"/{f.pattern}/" + (f" from {f.doc}" if f.doc else "") for f in c.facts]
    if expected or c.cite_docs:
        out.append(
            '<p class="small">Expected facts: '
            + escape(", ".join(expected) or "none")
            + " · expected documents: "
            + escape(", ".join(c.cite_docs) or "none")
            + "</p>"
        )
    if c.note:
        out.append(f'<p class="small">Note: {escape(c.note)}</p>')
    out.append("</section>")
    return "".join(out)


def to_html(result: SuiteResult, title: str = "Evaluation report") -> str:
    """A self-contained HTML page (inline CSS and SVG, no scripts) for staff."""
    limited = {c.metric: c for c in result.checks}
    verdict = "pass" if result.passed else "fail"
    failed = [r for r in result.results if not r.passed]
    corpus = result.meta.get("corpus") or "knowledge/ (default)"
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    h = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{escape(title)}</h1>",
        f"<p><span class='verdict {verdict}'>{'ALL THRESHOLDS MET' if result.passed else 'THRESHOLD MISSED'}</span> ",
        f"{len(result.results)} cases · {len(failed)} failed · run took {result.duration_s:.1f} s · {escape(when)}</p>",
        f"<p class='small'>Corpus: {escape(str(corpus))} · cases: {escape(', '.join(result.meta.get('cases', [])))}"
        f" · thresholds version {escape(str(result.meta.get('thresholds_version', '?')))} · k = {result.k}</p>",
        "<h2>Headline figures</h2><div class='cards'>",
    ]
    for c in result.checks:
        cls = {"pass": "pass", "fail": "fail"}.get(c.status, "na")
        h.append(
            f"<div class='card {cls}'><div class='l'>{escape(label(c.metric, result.k))}</div>"
            f"<div class='v'>{escape(fmt(c.metric, c.value))}</div>"
            f"<div class='t'>needs {escape(_limit_text(c.metric, c.min, c.max))} · {c.status.upper()}</div></div>"
        )
    h.append("</div><h2>Charts</h2><div class='charts'>")
    lat = {"all cases": [r.latency_ms for r in result.results if r.answer]}
    h.append(histogram_svg(lat, "Latency per question", "milliseconds"))
    grades: dict[str, list[float]] = {}
    for r in result.results:
        if r.grade is not None and r.kind:
            grades.setdefault(r.kind, []).append(r.grade)
    h.append(histogram_svg(grades, "Reading grade (Flesch-Kincaid) by kind", "US school grade"))
    h.append(category_bars_svg(result.categories()))
    h.append("</div>")
    h.append("<h2>All metrics</h2><div class='scroll'><table><tr><th>metric</th><th>value</th><th>threshold</th></tr>")
    for name, value in result.metrics.items():
        c = limited.get(name)
        if value is None and c is None:
            continue
        h.append(
            f"<tr><td>{escape(label(name, result.k))}</td><td>{escape(fmt(name, value))}</td>"
            f"<td>{escape(_limit_text(name, c.min, c.max) + ' ' + c.status.upper()) if c else ''}</td></tr>"
        )
    h.append("</table></div>")
    h.append(f"<h2>Failed cases ({len(failed)})</h2>")
    if not failed:
        h.append("<p>Every case passed.</p>")
    h += [_case_html(r) for r in failed]
    h.append("<h2>Every case</h2><div class='scroll'><table>")
    h.append("<tr><th>id</th><th>category</th><th>kind</th><th>result</th><th>ms</th><th>grade</th><th>rank</th></tr>")
    for r in result.results:
        link = f"<a href='#case-{escape(r.case.id)}'>{escape(r.case.id)}</a>" if not r.passed else escape(r.case.id)
        h.append(
            f"<tr><td>{link}</td><td>{escape(r.case.category)}</td><td>{escape(str(r.kind))}</td>"
            f"<td>{'pass' if r.passed else '<b>FAIL</b>'}</td><td>{r.latency_ms:.0f}</td>"
            f"<td>{'' if r.grade is None else f'{r.grade:.1f}'}</td><td>{r.rank or ''}</td></tr>"
        )
    h.append("</table></div></main></body></html>")
    return "\n".join(h)


def write_reports(result: SuiteResult, report_dir: Path | str) -> tuple[Path, Path]:
    """Write report.json and report.html into the folder; return their paths."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "report.json", out / "report.html"
    json_path.write_text(json.dumps(to_json(result), indent=2, ensure_ascii=False), encoding="utf-8")
    html_path.write_text(to_html(result), encoding="utf-8")
    return json_path, html_path
