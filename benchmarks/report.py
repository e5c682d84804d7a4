"""RESULTS.md from results.json: medians, percentiles and the Pergamon/Orthanc ratios per section."""

from __future__ import annotations

import statistics
from typing import Any

PERGAMONS = ("pergamon-sqlite", "pergamon-postgresql")
INGEST_ROWS = (
    ("dimse-1", "DIMSE ingest (storescu), 1 association", "inst/s", True, 1.5),
    ("dimse-4", "DIMSE ingest (storescu), 4 associations", "inst/s", True, 1.5),
    ("stow-1", "STOW-RS ingest, 1 client", "inst/s", True, 1.5),
    ("stow-4", "STOW-RS ingest, 4 clients", "inst/s", True, 1.5),
    ("dimse-1-cpu", "Peer CPU time per instance, DIMSE 1 association", "ms", False, None),
    ("dimse-4-cpu", "Peer CPU time per instance, DIMSE 4 associations", "ms", False, None),
    ("stow-1-cpu", "Peer CPU time per instance, STOW-RS 1 client", "ms", False, None),
    ("stow-4-cpu", "Peer CPU time per instance, STOW-RS 4 clients", "ms", False, None),
    ("rss-idle", "Resident memory, idle after start", "MiB", False, 1.0),
    ("rss-ingest", "Resident memory, peak under 4-association ingest", "MiB", False, None),
)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return fmt(values[0]) if values else "-"
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def goal_text(ratio: float | None, higher_better: bool, goal: float | None) -> str:
    if goal is None or ratio is None:
        return ""
    met = ratio >= goal if higher_better else ratio <= goal
    return "met" if met else "not met"


def row(label: str, unit: str, cells: dict[str, tuple[float, str]], higher_better: bool, goal: float | None,
        extra: str | None = None) -> str:
    """One table row; `cells` maps peer -> (value used for the ratio, text shown)."""
    orthanc = cells.get("orthanc", (None, "-"))
    parts = [label, unit, orthanc[1]]
    goals = []
    for name in PERGAMONS:
        value, text = cells.get(name, (None, "-"))
        ratio = value / orthanc[0] if value is not None and orthanc[0] else None
        parts += [text, fmt(ratio) if ratio is not None else "-"]
        if goal_text(ratio, higher_better, goal):
            goals.append(goal_text(ratio, higher_better, goal))
    parts.append("higher" if higher_better else "lower")
    parts.append(f"{'≥' if higher_better else '≤'} {goal:g}: " + " / ".join(goals) if goals else "")
    if extra is not None:
        parts.append(extra)
    return "| " + " | ".join(parts) + " |"


HEADER = ("| measurement | unit | Orthanc | Pergamon SQLite | ratio | Pergamon PostgreSQL | ratio | better | goal "
          "(SQLite / PostgreSQL) |")


def header(extra: str = "") -> str:
    columns = HEADER.count("|") - 1 + (1 if extra else 0)
    return (HEADER + (f" {extra} |" if extra else "")) + "\n" + "|---" * columns + "|"


def meta(section: dict[str, Any]) -> str:
    m = section["machine"]
    versions = "; ".join(section.get("versions", {}).values())
    return (
        f"Run {section['date']} ({section['minutes']} min), `{section['command']}`, {section['rounds']} round(s). "
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, Linux {m['kernel']}; load average "
        f"{section['loadavg'][0]:.1f} at start, {section['loadavg'][1]:.1f} at end (other work shares the machine). "
        f"Python {m['python']}, pydicom {m['pydicom']}, pynetdicom {m['pynetdicom']}, {m['dcmtk']}. {versions}."
    )


def ingest(section: dict[str, Any]) -> list[str]:
    values = section["values"]
    out = [
        "## Ingest and footprint",
        "",
        f"{section['instances']} CT slices (512x512, 16-bit, {section['megabytes']:.0f} MB in all, one study), "
        "each run into a freshly started, empty peer after one untimed warm-up instance; rates are instances/s "
        "from the first byte to the last "
        "acknowledgement, medians over rounds with (min-max). STOW-RS sends "
        f"{section['stow_batch']} instances per request. Ratios are Pergamon / Orthanc.",
        "",
        meta(section),
        "",
        header("storescp +B"),
    ]
    for key, label, unit, higher, goal in INGEST_ROWS:
        if key not in values:
            continue
        cells = {name: (statistics.median(v), spread(v)) for name, v in values[key].items()}
        out.append(row(label, unit, cells, higher, goal, cells.get("storescp+B", (None, "-"))[1]))
    reference = {k: statistics.median(values[k]["storescp+B"]) for k in ("dimse-1", "dimse-4")
                 if "storescp+B" in values.get(k, {})}
    if reference:
        out += ["", "Pergamon DIMSE ingest as a fraction of dcmtk `storescp +B` (no index, writes the bytes "
                "as received, no fsync: the physical reference):", ""]
        for key, ref in reference.items():
            shares = ", ".join(f"{name} {statistics.median(values[key][name]) / ref:.2f}"
                               for name in PERGAMONS if name in values[key])
            out.append(f"- {key.replace('dimse-', '')} association(s): {shares}")
    return out


def query(section: dict[str, Any], title: str = "Query at scale") -> list[str]:
    n = section["studies"] * section["per_study"]
    out = [
        f"## {title}",
        "",
        f"Index of **{section['studies']:,} studies / {n:,} instances** (small generated instances, "
        f"{section['per_study']} per study), loaded into each peer with dcmtk storescu over 4 parallel "
        "associations. Study-level queries; latency from request to the last response (C-FIND: pynetdicom "
        "SCU on an open association; C-FIND/findscu: dcmtk findscu, one process and association per query, "
        "its start-up included; QIDO-RS: one keep-alive HTTP connection), p50 and p95 over all queries of "
        "all rounds"
        + (", after one untimed warm-up query of each kind, protocol and peer" if section.get("warm_up") else "")
        + ". Every answer was checked against the expected number of matching studies.",
        "",
        meta(section),
        "",
        header("median matches"),
    ]
    for key, samples in section["samples"].items():
        kind = key.split(" ", 1)[1]
        matches = f"{section['matches'].get(kind, 0):g}"
        for q, goal in ((50, None), (95, 0.5)):
            cells = {name: (percentile(v, q), fmt(percentile(v, q))) for name, v in samples.items()}
            out.append(row(f"{key} p{q}", "ms", cells, False, goal, matches))
    load = section.get("load", {})
    if load:
        full = 1_000_000
        hours = ", ".join(f"{name} {full / v['rate'] / 3600:.1f} h" for name, v in load.items() if v["rate"])
        out[2] += (f" At the load rates measured here, the issue's full scale (100,000 studies / {full:,} "
                   f"instances) would take {hours} to load.")
        if n < full:
            out[2] += (f" **This run used {n:,} instances, {n / full:.0%} of the issue's scale: its query "
                       "latencies say little about 10^6.**")
        cells = {name: (v["rate"], fmt(v["rate"])) for name, v in load.items()}
        out.append(row("Loading the index (storescu, 4 associations)", "inst/s", cells, True, None, ""))
        if all("rss_after_queries" in v for v in load.values()):
            cells = {name: (v["rss_after_queries"], fmt(v["rss_after_queries"])) for name, v in load.items()}
            out.append(row("Resident memory with the index, after the queries", "MiB", cells, False, None, ""))
    return out


def viewer(section: dict[str, Any]) -> list[str]:
    samples = section["samples"]
    out = [
        "## Viewer load",
        "",
        f"One study of {section['instances']} CT slices ({section['megabytes']:.0f} MB) in series of "
        f"{section['per_series']}. WADO-RS series metadata (DICOM JSON), WADO-RS retrieve of the whole study "
        "(multipart/related application/dicom, as stored), and `/rendered` JPEG of single instances; "
        "one keep-alive HTTP connection per peer, peers alternating.",
        "",
        meta(section),
        "",
        header(),
    ]
    label = f"WADO-RS metadata of a {section['per_series']}-instance series"
    firsts = (("metadata-arrived", "first request, as the series arrived"),
              ("metadata-settled", f"first request, {section.get('settled_seconds', 15):.0f} s after it arrived"))
    for kind, when in firsts:
        if kind in samples:
            cells = {name: (statistics.median(v), fmt(statistics.median(v))) for name, v in samples[kind].items()}
            out.append(row(f"{label}, {when}", "ms", cells, False, None))
    if "metadata" in samples:
        again = ", asked again" if "metadata-settled" in samples else ""
        for q, goal in ((50, 0.2), (95, None)):
            cells = {name: (percentile(v, q), fmt(percentile(v, q))) for name, v in samples["metadata"].items()}
            out.append(row(f"{label}{again} p{q}", "ms", cells, False, goal))
    if "retrieve" in samples:
        cells = {name: (statistics.median(v), spread(v)) for name, v in samples["retrieve"].items()}
        out.append(row("WADO-RS retrieve of the whole study", "MB/s", cells, True, None))
    if "rendered" in samples:
        for q in (50, 95):
            cells = {name: (percentile(v, q), fmt(percentile(v, q))) for name, v in samples["rendered"].items()}
            out.append(row(f"Rendered frame (JPEG) p{q}", "ms", cells, False, None))
    return out


def markdown(results: dict[str, Any]) -> str:
    out = [
        "# Benchmark results: Pergamon vs Orthanc",
        "",
        "Generated by `benchmarks/run.py` (see README.md there for the method and what each number means). "
        "Ratio = Pergamon / Orthanc in the same run; the `better` column says which direction is good. "
        "Each section below carries its own date, command, machine and load. The machine this was produced "
        "on was shared with other test runs: treat single numbers as noisy, the ratios as the signal.",
        "",
    ]
    if results.get("notes"):
        out += ["Notes on this run:", "", *(f"- {note}" for note in results["notes"]), ""]
    def query_postgresql(section: dict[str, Any]) -> list[str]:
        return query(section, "Query at scale, PostgreSQL index (a run of its own)")

    for name, render in (("ingest", ingest), ("query", query), ("query-postgresql", query_postgresql),
                         ("viewer", viewer)):
        if name in results:
            section = results[name]
            if section.get("quick"):
                out += [f"> Section `{name}` comes from a `--quick` run (small data, 1 round): a smoke test, "
                        "not a measurement.", ""]
            out += [*render(section), ""]
    return "\n".join(out)


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else here / "results.json"
    (here / "RESULTS.md").write_text(markdown(json.loads(source.read_text())))
