#!/usr/bin/env python3
"""Prints the values table of deploy/chart/konnector/README.md from values.yaml: one row per leaf key, its default,
and the comment lines above it (or above its nearest commented parent). Paste the output between the README's
table markers; tests/tests/deploy_chart.rs checks every leaf key is in the README. The comments are read from the
text (no YAML library needed), so values.yaml keeps one key per line or a flow mapping on one line."""
import re
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "deploy/chart/konnector/values.yaml"
stack = []  # (indent, key, comment)
pending = []
rows = []
for raw in open(path, encoding="utf-8"):
    line = raw.rstrip("\n")
    if not line.strip():
        pending = []
        continue
    stripped = line.lstrip()
    indent = len(line) - len(stripped)
    if stripped.startswith("#"):
        pending.append(stripped.lstrip("# ").rstrip())
        continue
    m = re.match(r"([A-Za-z0-9_]+):\s*(.*)$", stripped)
    if not m:
        continue
    key, rest = m.group(1), m.group(2)
    while stack and stack[-1][0] >= indent:
        stack.pop()
    trailing = ""
    t = re.match(r"""^("[^"]*"|'[^']*'|[^#]*?)\s+#\s*(.*)$""", rest)
    if t:
        rest, trailing = t.group(1).strip(), t.group(2).strip()
    comment = " ".join(pending + ([trailing] if trailing else []))
    pending = []
    parents = [k for _, k, _ in stack]
    inherited = next((c for _, _, c in reversed(stack) if c), "")
    if rest == "":
        stack.append((indent, key, comment))
        continue
    full = ".".join(parents + [key])
    flow = re.match(r"^\{(.*)\}$", rest)
    if flow and flow.group(1).strip() and ":" in flow.group(1):
        for part in re.split(r",\s*(?![^{]*\})", flow.group(1)):
            k, v = part.split(":", 1)
            rows.append((f"{full}.{k.strip()}", v.strip(), comment or inherited))
    else:
        rows.append((full, rest, comment or inherited))

print("| Key | Default | Description |")
print("|---|---|---|")
shown = set()
for key, default, desc in rows:
    # A parent's comment is printed once, at its first child.
    if desc in shown:
        desc = ""
    shown.add(desc)
    desc = desc.replace("|", "\\|")
    print(f"| `{key}` | `{default}` | {desc} |")
