"""The readable report: one table per workload, medians beside the baseline and runs."""

from __future__ import annotations

from typing import Any

from bench.registry import get_workload


def lookup(figures: dict[str, Any] | None, path: str) -> Any:
    value: Any = figures
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def number(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 0.1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.2g}"
    return f"{text} {unit}".rstrip() if unit and unit != "x" else text + unit


def machine_line(machine: dict[str, Any]) -> str:
    memory = f", {machine['memory_mib'] / 1024:.0f} GiB" if machine.get("memory_mib") else ""
    load = machine.get("load_average")
    busy = f"; load average {load[0]:.2f} at start" if load else ""
    return (
        f"{machine['cpu_count']} CPUs ({machine['cpu_model']}){memory}; "
        f"Python {machine['python']}, Django {machine['django']}; {machine['platform']}{busy}"
    )


def code_line(code: dict[str, Any] | None) -> str:
    if not code:
        return "code: unknown (not a git checkout)"
    return f"code: {code['commit']}" + (" with local changes" if code["modified"] else "")


def workload_table(key: str, entry: dict[str, Any]) -> list[str]:
    workload = get_workload(entry["workload"])
    if "error" in entry:
        last = entry["error"].strip().splitlines()[-1]
        return [f"{key}: {workload.title}", f"  FAILED ({entry['database_version']}): {last}"]
    runs = entry["runs"]
    figures = {**entry["median"], "baseline": entry["baseline"], "ratio": entry["ratio"]}
    lines = [
        f"{key}: {workload.title}",
        f"  {entry['database_version']}, {len(runs)} run(s), setup {entry['setup_seconds']:.1f} s",
    ]
    rows = [("figure", "median", "baseline", "runs")]
    for figure in workload.figures:
        rows.append(
            (
                figure.label,
                number(lookup(figures, figure.key), figure.unit),
                number(lookup(figures, figure.baseline), figure.unit) if figure.baseline else "",
                "  ".join(number(lookup(run, figure.key), figure.unit) for run in runs),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        lines.append(
            f"  {row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}"
        )
    return lines


def render(document: dict[str, Any]) -> str:
    options = document["options"]
    lines = [
        "notify bench: "
        f"{options['recipients']:,} recipients, {options['emails']:,} emails, "
        f"{options['runs']} run(s), database {options['database']}",
        machine_line(document["machine"]),
        code_line(document.get("code")),
        "",
    ]
    for key, entry in document["workloads"].items():
        lines += [*workload_table(key, entry), ""]
    lines.append(
        "baseline: fanout = the same rows inserted with raw executemany in one transaction; "
        "delivery = the same emails sent through one SMTP connection, no database, no rendering. "
        "ratio = time / baseline time."
    )
    return "\n".join(lines) + "\n"
