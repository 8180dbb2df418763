"""A run rendered three ways: a table for people, JUnit XML for CI pipelines, JSON for machines.

Everything shown went through the run's masking already: no key or token appears here.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from partner_gateway.certify.runner import Result, Run

STATUS_WIDTH = 4


def _stats(result: Result) -> str:
    if not result.stats:
        return ""
    s = result.stats
    return f"  ({s['requests']:.0f} parallel: p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms)"


def status(result: Result) -> str:
    return "SKIP" if result.skipped else "PASS" if result.passed else "FAIL"


def table(run: Run) -> str:
    width = max(len(result.check.id) for result in run.results)
    lines = [f"partner-gateway certify {run.url}  player {run.player}", ""]
    for result in run.results:
        millis = f"{result.seconds * 1000:6.0f} ms"
        title = result.check.title + _stats(result)
        lines.append(f"{status(result):<{STATUS_WIDTH}}  {result.check.id:<{width}}  {millis}  {title}")
        if result.skipped:
            lines.append(f"{'':{STATUS_WIDTH}}    not checked: {result.skipped}")
        if not result.passed:
            lines.append(f"{'':{STATUS_WIDTH}}    expected: {result.expected}")
            lines.append(f"{'':{STATUS_WIDTH}}    actual:   {result.actual}")
    failed = sum(not result.passed for result in run.results)
    skipped = sum(result.skipped is not None for result in run.results)
    lines += [
        "",
        f"{len(run.results) - failed - skipped} passed, {failed} failed, {skipped} skipped"
        f" in {run.seconds:.1f} s",
        run.cleanup.message,
        "CERTIFY PASSED" if run.passed else "CERTIFY FAILED",
    ]
    return "\n".join(lines)


def junit(run: Run) -> str:
    failures = sum(not result.passed for result in run.results)
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="partner-gateway certify",
        tests=str(len(run.results)),
        failures=str(failures),
        errors="0",
        skipped=str(sum(result.skipped is not None for result in run.results)),
        time=f"{run.seconds:.3f}",
        timestamp=run.started.isoformat(timespec="seconds"),
    )
    for result in run.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"certify.{result.check.group}",
            name=result.check.id,
            time=f"{result.seconds:.3f}",
        )
        if result.skipped:
            ET.SubElement(case, "skipped", message=result.skipped)
        if not result.passed:
            failure = ET.SubElement(case, "failure", message=f"expected: {result.expected}")
            failure.text = f"expected: {result.expected}\nactual: {result.actual}"
    ET.SubElement(suite, "system-out").text = f"{run.url} player {run.player}\n{run.cleanup.message}"
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def as_json(run: Run) -> str:
    document: dict[str, Any] = {
        "url": run.url,
        "player": run.player,
        "started": run.started.isoformat(timespec="seconds"),
        "seconds": round(run.seconds, 3),
        "passed": run.passed,
        "checks": [
            {
                "id": result.check.id,
                "title": result.check.title,
                "status": status(result),
                "seconds": round(result.seconds, 3),
                "expected": result.expected,
                "actual": result.actual,
                **({"skipped": result.skipped} if result.skipped else {}),
                **({"latency": result.stats} if result.stats else {}),
            }
            for result in run.results
        ],
        "cleanup": {"done": run.cleanup.done, "message": run.cleanup.message},
    }
    return json.dumps(document, indent=2, ensure_ascii=False)
