#!/usr/bin/env python3
"""Writes the packages' copyright file (scripts/package.sh):
packaging/debian/copyright with a paragraph for the three binaries, which
names every crate they link statically, its licence and its copyright
notices, as cargo resolves them for this build.

Fails when a crate's licence cannot be met by the licences whose text
packaging/debian/copyright carries: a new dependency under another licence
needs its text there (and in the RPM's License tag) first.

Usage: scripts/copyright.py OUTPUT
"""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARIES = ["twofold-cli", "twofold-daemon", "pam-twofold"]
TARGET = "x86_64-unknown-linux-gnu"
PATHS = "usr/bin/twofold usr/sbin/twofoldd usr/lib/x86_64-linux-gnu/security/pam_twofold.so"


def cargo(*args):
    return subprocess.run(["cargo", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def linked_crates():
    """(name, version) of each crate linked into the binaries: normal
    dependencies for the target, without proc-macros and what they use (build time only)."""
    args = ["tree", "--edges", "normal,no-proc-macro", "--prefix", "none", "--format", "{p}", "--target", TARGET]
    for package in BINARIES:
        args += ["-p", package]
    crates = set()
    for line in cargo(*args).splitlines():
        if not line.strip() or "(proc-macro)" in line:
            continue
        name, version = line.split()[:2]
        crates.add((name, version.lstrip("v")))
    return crates


def satisfiable(expression, known):
    """Whether the SPDX expression can be met with licences in `known`
    (OR: one side; AND: both; `A/B` is the old spelling of `A OR B`)."""
    tokens = re.findall(r"\(|\)|[^\s()]+", expression.replace("/", " OR "))
    pos = 0

    def parse_or():
        nonlocal pos
        ok = parse_and()
        while pos < len(tokens) and tokens[pos].upper() == "OR":
            pos += 1
            ok = parse_and() or ok
        return ok

    def parse_and():
        nonlocal pos
        ok = parse_atom()
        while pos < len(tokens) and tokens[pos].upper() == "AND":
            pos += 1
            ok = parse_atom() and ok
        return ok

    def parse_atom():
        nonlocal pos
        token = tokens[pos]
        pos += 1
        if token == "(":
            ok = parse_or()
            pos += 1  # ")"
            return ok
        if pos < len(tokens) and tokens[pos].upper() == "WITH":
            pos += 2
            return False  # an exception is a licence of its own
        return token in known

    return parse_or()


NOTICE = re.compile(r"^\s*(copyright\s*(\(c\)|©|\d{4})|©).*", re.IGNORECASE)


def notices(crate_dir):
    """The copyright lines of the crate's licence files, as written there."""
    found = []
    for path in sorted(crate_dir.iterdir()):
        if re.match(r"(LICEN[CS]E|COPYING|COPYRIGHT|NOTICE)", path.name, re.IGNORECASE) and path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                if NOTICE.match(line) and "[yyyy]" not in line.lower() and "<year>" not in line.lower():
                    line = line.strip()
                    if line not in found:
                        found.append(line)
    return found


def main():
    out = Path(sys.argv[1])
    base = (ROOT / "packaging/debian/copyright").read_text()
    known = set(re.findall(r"^License: (\S+)$", base, re.MULTILINE))

    metadata = json.loads(cargo("metadata", "--format-version", "1", "--filter-platform", TARGET))
    packages = {(p["name"], p["version"]): p for p in metadata["packages"]}
    ours = {p["name"] for p in metadata["packages"] if p["source"] is None}

    holders, listing, unmet = ["2026 twofold maintainers"], [], []
    for name, version in sorted(linked_crates()):
        if name in ours:
            continue
        package = packages[(name, version)]
        licence = package.get("license") or "(none declared)"
        if not satisfiable(licence, known):
            unmet.append(f"{name} {version}: {licence}")
        listing.append(f"{name} {version}: {licence}")
        lines = notices(Path(package["manifest_path"]).parent)
        if not lines:
            authors = ", ".join(a for a in package.get("authors", []))
            lines = [f"the authors of {name}" + (f" ({authors})" if authors else "")]
        holders += [line for line in lines if line not in holders]
    if unmet:
        sys.exit("copyright: no licence text in packaging/debian/copyright can cover:\n  " + "\n  ".join(unmet))

    paragraph = "\n".join(
        [f"Files: {PATHS}", "Copyright: " + holders[0]]
        + [" " + h for h in holders[1:]]
        + [
            "License: MIT and Apache-2.0 and BSD-3-Clause and 0BSD and Unicode-3.0",
            "Comment: These binaries link these Rust crates statically (name, version",
            " and the licence it declares). Where a crate offers MIT, it is used under",
            " MIT; twofold's own code is under MIT or Apache-2.0.",
        ]
        + [" " + line for line in listing]
    )
    head, files_all, rest = base.split("\n\n", 2)
    out.write_text("\n\n".join([head, files_all, paragraph, rest]))


if __name__ == "__main__":
    main()
