#!/usr/bin/env python3
"""Regenerates docs/errors.md: one section per diagnostic code, each with its example
(tools/errors_doc/examples/CODE/example.cnn), the report cnnc prints for it, and the
prose in sections.py. Run from the repository root after `cargo build --release`:

    python3 tools/errors_doc/generate.py
"""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "tools", "errors_doc")
EXAMPLES = os.path.join(HERE, "examples")
CNNC = os.path.join(ROOT, "target", "release", "cnnc")


def titles():
    codes = open(os.path.join(ROOT, "compiler/src/diagnostics/codes.rs")).read()
    return {m.group(2): m.group(3) for m in re.finditer(r'(\w+) = "(\w\d{4})", "([^"]+)";', codes)}


def report(code, keep_only=None):
    directory = os.path.join(EXAMPLES, code)
    result = subprocess.run([CNNC, "check", "example.cnn"], cwd=directory, capture_output=True,
                            text=True, env={**os.environ, "NO_COLOR": "1"})
    err = result.stderr.rstrip("\n")
    if keep_only:
        blocks = re.split(r"\n(?=[EW]\d{4}\n)", err)
        err = "\n".join(b for b in blocks if b.startswith(keep_only))
    lines = [line.rstrip() for line in err.split("\n")]
    return "\n".join(lines).strip("\n") + "\n" + result.stdout.rstrip("\n")


def snippet(code):
    return open(os.path.join(EXAMPLES, code, "example.cnn")).read().rstrip("\n")


def main():
    scope = {}
    exec(open(os.path.join(HERE, "sections.py")).read(), scope)
    sections, intro = scope["S"], scope["INTRO"]
    parts = [intro.strip() + "\n"]
    for code, title in titles().items():
        meaning, fix = sections[code][0], sections[code][1]
        keep = sections[code][2] if len(sections[code]) > 2 else None
        parts.append(f"## {code}: {title}\n\n{meaning.strip()}\n\n```\n{snippet(code)}\n```\n\n"
                     f"```text\n{report(code, keep)}\n```\n\n{fix.strip()}\n")
    open(os.path.join(ROOT, "docs", "errors.md"), "w").write("\n".join(parts))


if __name__ == "__main__":
    main()
