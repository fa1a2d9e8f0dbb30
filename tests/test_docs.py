"""Every ```sql block of the READMEs runs, so that a renamed function or option fails here
instead of in front of a reader.

Each README's blocks run in order, through psql, in a fresh database of a fresh cluster (with the
stream-table scheduler, as a reader's would have it). A block preceded by
`<!-- docs-test: skip (reason) -->` is not run; the reason is required.
"""

import pathlib
import re
import subprocess

import pytest

from conftest import ROOT, another_cluster

READMES = ["README.md", "fdw/README.md", "ivm/README.md", "dbt/README.md"]
SKIP = re.compile(r"^<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->$")
MARKER = re.compile(r"docs-test")


def sql_blocks(path):
    """(line number, sql, skip reason or None) of each ```sql block of a Markdown file."""
    lines = path.read_text().split("\n")
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```sql":
            start = i + 1
            end = start
            while lines[end].strip() != "```":
                end += 1
            previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            skip = SKIP.match(previous)
            blocks.append((start, "\n".join(lines[start:end]), skip.group("reason").strip() if skip else None))
            i = end
        i += 1
    return blocks


def test_skip_markers_are_well_formed():
    """A marker names its reason and precedes a sql block: no marker is silently ignored."""
    for name in READMES:
        path = ROOT / name
        lines = path.read_text().split("\n")
        skipped = {line for line, _, reason in sql_blocks(path) if reason is not None}
        for number, line in enumerate(lines, start=1):
            if not MARKER.search(line):
                continue
            match = SKIP.match(line.strip())
            assert match and match.group("reason").strip(), f"{name}:{number}: malformed marker {line!r}"
            following = next(j for j in range(number, len(lines)) if lines[j].strip())
            assert following + 1 in skipped, f"{name}:{number}: the marker does not precede a sql block"


@pytest.fixture(scope="module")
def fresh_cluster(pg):
    with another_cluster(pg, scheduler=True) as cluster:
        yield cluster


@pytest.mark.parametrize("name", [n for n in READMES if any(r is None for _, _, r in sql_blocks(ROOT / n))])
def test_readme_sql_runs(fresh_cluster, name):
    dbname = "docs_" + re.sub(r"[^a-z0-9]+", "_", name.lower())
    fresh_cluster.execute(f'CREATE DATABASE "{dbname}"')
    psql = pathlib.Path(subprocess.run([fresh_cluster.pg_config, "--bindir"], check=True, capture_output=True,
                                       text=True).stdout.strip()) / "psql"
    for line, sql, reason in sql_blocks(ROOT / name):
        if reason is not None:
            continue
        result = subprocess.run(
            [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", fresh_cluster.dsn(dbname)],
            input=sql, capture_output=True, text=True,
        )
        assert result.returncode == 0, f"{name}, the sql block at line {line} failed:\n{result.stderr}"
