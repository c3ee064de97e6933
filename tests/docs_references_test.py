#!/usr/bin/python3
"""Every section a message of outboxd names exists in the doc it names.

Messages point users at runbook sections: `docs/operations.md, "Invalidated slot"` or
`docs/operations.md ("PostgreSQL 16 and older", under "Database failover")`. This reads every
C++ source under src/ (adjacent string literals joined, as the compiler joins them), finds each
such reference and fails when the doc has no heading of that name.

usage: docs_references_test.py SOURCE_DIR
"""
import glob
import os
import re
import sys

src = sys.argv[1]
failures = []
checked = 0
headings = {}


def doc_headings(doc):
    if doc not in headings:
        path = os.path.join(src, "docs", doc + ".md")
        with open(path) as f:
            headings[doc] = {line.lstrip("#").strip() for line in f if line.startswith("#")}
    return headings[doc]


ref = re.compile(r'docs/([a-z-]+)\.md(?:, | \(| )((?:\\"[^"\\]+\\"(?:,? under )?)+)')
for path in sorted(glob.glob(os.path.join(src, "src", "**", "*.cc"), recursive=True) +
                   glob.glob(os.path.join(src, "src", "**", "*.h"), recursive=True)):
    with open(path) as f:
        text = f.read()
    joined = re.sub(r'"\s*\n\s*"', "", text)  # "a "\n   "b" -> "a b"
    for m in ref.finditer(joined):
        doc = m.group(1)
        for heading in re.findall(r'\\"([^"\\]+)\\"', m.group(2)):
            checked += 1
            if heading not in doc_headings(doc):
                failures.append(f'{os.path.relpath(path, src)}: docs/{doc}.md has no section "{heading}"')

for f in failures:
    print("FAIL " + f)
print(f"{checked} section reference(s) checked, {len(failures)} missing")
sys.exit(1 if failures or checked == 0 else 0)
