"""Score one module's mutmut run (tools/mutation.sh), counting only behaviour-changing mutants.

A surviving mutant is *message-text-only* when the only tokens it changes are string literals
and every changed line lies inside a ``raise`` statement or a logging/warning call: it alters
what an error says, never whether or when it is raised. Those are listed but left out of the
score; every other mutant counts. Killed = killed, timed out or crashed (a mutant that hangs
is caught); survived = survived, no test reached it, or suspicious. Mutants the time budget
left unchecked are reported as ``not_checked`` and left out of the score (rerun with a larger
``--budget`` to check them). Survivors listed in tools/mutation_equivalent.txt (one name per
line, ``#`` and the reason the mutant cannot change behaviour) are *equivalent* and also left
out: e.g. ``start = 0`` -> ``start = None`` before ``data.find(DELIMITER, start)``.

    python tools/mutation_score.py WORKDIR MODULE [--json]
"""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import tokenize
from pathlib import Path

_TEXT_CALLS = {"warn", "warning", "info", "debug", "error", "exception", "print", "log"}
_KILLED = {"killed", "timeout", "segfault"}
_UNCHECKED = {"not checked", "skipped"}


def _message_lines(source: str) -> set[int]:
    """Line numbers inside raise statements and logging/warning calls."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        call = isinstance(node, ast.Call) and (
            (isinstance(node.func, ast.Attribute) and node.func.attr in _TEXT_CALLS)
            or (isinstance(node.func, ast.Name) and node.func.id in _TEXT_CALLS))
        if isinstance(node, ast.Raise) or call:
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def _tokens(text: str) -> list[tuple[int, str]]:
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(text.strip() + "\n").readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return [(-1, text)]
    strings = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -2)}
    return [(t.type, "<str>" if t.type in strings else t.string) for t in toks
            if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER)]


def text_only(diff: str, source: str) -> bool:
    """True when ``diff`` (``mutmut show``) only rewords a message (see the module doc)."""
    old = [ln[1:] for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    new = [ln[1:] for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    if not old or len(old) != len(new):
        return False
    src_lines = source.splitlines()
    where = _message_lines(source)
    for a, b in zip(old, new, strict=True):
        if _tokens(a) != _tokens(b):
            return False
        found = [i + 1 for i, s in enumerate(src_lines) if s.strip() == a.strip()]
        if not found or not all(n in where for n in found):
            return False
    return True


def equivalents() -> dict[str, str]:
    """Mutant name -> why it is equivalent, from tools/mutation_equivalent.txt."""
    path = Path(__file__).with_name("mutation_equivalent.txt")
    out: dict[str, str] = {}
    if os.environ.get("MUTATION_EQUIVALENTS") == "none":  # e.g. scoring an older tree (--rev)
        return out
    for line in path.read_text().splitlines() if path.exists() else []:
        name, _, why = line.partition("#")
        if name.strip():
            out[name.strip()] = why.strip()
    return out


def score(work: Path, module: str) -> dict:
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=work, capture_output=True,
                         text=True, check=False).stdout
    status: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, state = line.strip().rpartition(": ")
        if sep and name:
            status[name] = state.strip()
    source = (work / module).read_text()
    survivors, text, unchecked, equivalent = [], [], [], []
    known = equivalents()
    for name, state in sorted(status.items()):
        if state in _KILLED:
            continue
        if state in _UNCHECKED:
            unchecked.append(name)
            continue
        if name in known:
            equivalent.append(name)
            continue
        diff = subprocess.run(["mutmut", "show", name], cwd=work, capture_output=True, text=True,
                              check=False).stdout
        (text if state == "survived" and text_only(diff, source) else survivors).append((name, state))
    total = len(status)
    counted = total - len(text) - len(unchecked) - len(equivalent)
    killed = counted - len(survivors)
    return {"module": module, "mutants": total, "not_checked": len(unchecked),
            "message_text_only": len(text), "equivalent": len(equivalent), "counted": counted,
            "killed": killed, "score": round(100.0 * killed / counted, 1) if counted else None,
            "survivors": [f"{n} ({s})" for n, s in survivors],
            "message_text_survivors": [n for n, _ in text]}


def main() -> None:
    work, module = Path(sys.argv[1]), sys.argv[2]
    r = score(work, module)
    (work / "score.json").write_text(json.dumps(r, indent=1))
    print(f"| {module} | {r['mutants']} | {r['not_checked']} | {r['message_text_only']} | {r['equivalent']} "
          f"| {r['counted']} | {r['killed']} "
          f"| {r['score']} % | {len(r['survivors'])} |")
    if "--json" in sys.argv:
        print(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
