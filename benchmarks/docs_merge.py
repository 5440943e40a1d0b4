"""docs/benchmarks.md after a run of some benchmarks (`--only`): their sections replaced,
the others' kept as the file has them.

The page is the intro, the full run's machine header, a `## title` section per
benchmark and a `## Summary` table. The kept sections stay under that header; each
replaced one carries the machine header of the run that made it, since the two runs
may differ in machine, kernel or commit.
"""

from __future__ import annotations

import re

from benchmarks.report import table

SUMMARY = "Summary"
SUMMARY_HEADER = ["benchmark", "exit", "minutes", "command"]
_FENCE = re.compile(r"```text\n.*?\n```", re.S)


def split(page: str) -> tuple[str, list[tuple[str, str]]]:
    """(the text before the first heading, [(title, text under it)]); a `## ` line inside
    a fence is output, not a heading."""
    preamble: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    fenced = False
    for line in page.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            sections.append((line[3:].strip(), []))
        elif sections:
            sections[-1][1].append(line)
        else:
            preamble.append(line)
    return "".join(preamble), [(title, "".join(text)) for title, text in sections]


def bench_of(title: str, text: str, titles: dict[str, str]) -> str | None:
    """Which benchmark a section is: its title, or (a title since renamed) the command
    on its status line; None for the summary or a section of no known benchmark."""
    if title in titles:
        return titles[title]
    status = text.strip().split("\n", 1)[0]
    m = re.match(r"`python -m benchmarks\.(\w+)", status)
    return m.group(1) if m and m.group(1) in titles.values() else None


def summary_rows(text: str) -> dict[str, list[str]]:
    """The summary table's rows by benchmark name."""
    rows: dict[str, list[str]] = {}
    block = _FENCE.search(text)
    for line in (block.group(0).splitlines()[3:-1] if block else []):  # past the rule
        cells = re.split(r"\s{2,}", line.strip(), maxsplit=3)
        if len(cells) == len(SUMMARY_HEADER):
            rows[cells[0]] = cells
    return rows


def merge(old_page: str, fresh_page: str, head: str, ran: list[str],
          titles: dict[str, str]) -> str:
    """`fresh_page` (rendered from the benchmarks in `ran` alone, under `head`) merged
    into `old_page`; `titles`: section title -> benchmark name, in page order."""
    old_pre, old_sections = split(old_page)
    fresh_pre, fresh_sections = split(fresh_page)
    fresh_head, old_head = _FENCE.search(fresh_pre), _FENCE.search(old_pre)
    preamble = fresh_pre
    if fresh_head and old_head:  # the new intro, the header of the sections kept
        preamble = fresh_pre.replace(fresh_head.group(0), old_head.group(0))
    by_name: dict[str, tuple[str, str]] = {}
    for title, text in old_sections:
        if (name := bench_of(title, text, titles)) is not None:
            by_name[name] = (title, text)
    for title, text in fresh_sections:
        if (name := bench_of(title, text, titles)) in ran:
            status, _, rest = text.strip("\n").partition("\n")
            by_name[name] = (title, f"\n{status}\n\n```text\n{head}\n```\n{rest}\n")
    rows = {**summary_rows(dict(old_sections).get(SUMMARY, "")),
            **summary_rows(dict(fresh_sections).get(SUMMARY, ""))}
    order = list(dict.fromkeys(titles.values()))
    parts = [preamble.rstrip("\n") + "\n"]
    parts += [f"## {by_name[n][0]}\n{by_name[n][1].rstrip()}\n" for n in order if n in by_name]
    summary = table(SUMMARY_HEADER, [rows[n] for n in order if n in rows])
    parts.append(f"## {SUMMARY}\n\n```text\n{summary}\n```\n")
    return "\n".join(parts)
