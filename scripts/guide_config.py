#!/usr/bin/python3
"""The migration guide's outboxd config (docs/examples/debezium-outboxd.toml), as tests run it.

`make conformance` and make test's journeys_test run the very file the guide shows: this
replaces the values of the site (dsn, brokers, slot, publication, table, topic prefix, listen
address) and nothing else, each `--set` matching exactly one key of its table or failing, so a
renamed key in the file fails the tests instead of silently keeping the guide's value.
`--check-doc` fails when docs/migrating-from-debezium.md no longer shows the file verbatim.

usage: guide_config.py FILE [--set TABLE:KEY=VALUE ...] [--check-doc DOC]
  TABLE is the table the key is in as written in its header (source, sink.kafka, outbox, http);
  for [[outbox]] the first entry's. VALUE becomes a TOML basic string. The result goes to stdout.
"""
import json
import re
import sys

MARKER = "<!-- the file docs/examples/debezium-outboxd.toml, shown whole -->"


def render(text, sets):
    lines = text.split("\n")
    for table, key, value in sets:
        header = None
        hits = []
        for i, line in enumerate(lines):
            m = re.match(r"^\[\[?([^\]]+)\]\]?\s*(#.*)?$", line)
            if m:
                header = m.group(1).strip()
                continue
            k = re.match(r"^(\"[^\"]+\"|[A-Za-z0-9_]+)\s*=", line)
            if header == table and k and k.group(1).strip('"') == key.strip('"'):
                hits.append(i)
        if not hits:
            sys.exit(f"guide_config: no key {key} in [{table}]")
        i = hits[0]  # [[outbox]]: the first entry's
        comment = re.search(r"\s+#.*$", lines[i].split("=", 1)[1]) if '"' in lines[i] else None
        lines[i] = f"{lines[i].split('=', 1)[0].rstrip()} = {json.dumps(value)}" + \
            (comment.group(0) if comment else "")
    return "\n".join(lines)


def check_doc(text, doc_path):
    with open(doc_path) as f:
        doc = f.read()
    at = doc.find(MARKER)
    if at < 0:
        sys.exit(f"guide_config: {doc_path} lacks the line {MARKER}")
    block = re.search(r"```toml\n(.*?)```", doc[at:], re.S)
    if block is None or block.group(1) != text:
        sys.exit(f"guide_config: the TOML after {MARKER} in {doc_path} differs from the file; paste the file "
                 "there again")


def main(argv):
    path, sets, doc = None, [], None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--set":
            table_key, value = argv[i + 1].split("=", 1)
            table, key = table_key.split(":", 1)
            sets.append((table, key, value))
            i += 2
        elif a == "--check-doc":
            doc = argv[i + 1]
            i += 2
        else:
            path = a
            i += 1
    with open(path) as f:
        text = f.read()
    if doc:
        check_doc(text, doc)
    if sets or not doc:
        sys.stdout.write(render(text, sets))


if __name__ == "__main__":
    main(sys.argv[1:])
