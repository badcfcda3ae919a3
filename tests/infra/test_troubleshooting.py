"""docs/troubleshooting.md quotes log lines and errors: each must be one the code emits (run by
tests/infra/run's `templates` check).

A quoted message is a `code span` that starts with a letter, has a space, and is not a command or
a setting (see NOT_MESSAGES). `…` and '…'-quoted values stand for what the code fills in.

    tests/emulator/.venv/bin/python -m pytest -q tests/infra/test_troubleshooting.py
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "troubleshooting.md"
# Spans that are commands, settings, AWS names or prose, not messages.
NOT_MESSAGES = re.compile(
    r"^(aws|bake|bake-agent|journalctl|systemctl|sudo|curl|exec|on_change|RUST_LOG|DefaultResult|"
    r"HealthCheckType|Restart|StartLimit|Type=|agent\.toml|code=|active|ss |\[|-v)"
)


def _sources():
    text = []
    for d in ("agent/src", "bake/src", "common/src"):
        for f in sorted((ROOT / d).rglob("*.rs")):
            text.append(f.read_text())
    # Messages split over Rust string continuation lines ("…\<newline>   …") joined.
    return re.sub(r"\\\n\s*", "", "\n".join(text))


def quoted_messages(doc_text):
    prose = re.sub(r"^```.*?^```", "", doc_text, flags=re.S | re.M)  # not the command blocks
    spans = {re.sub(r"\s+", " ", m) for m in re.findall(r"`([^`]+)`", prose)}
    return sorted(s for s in spans if re.match(r"^[A-Za-z]", s) and " " in s and not NOT_MESSAGES.match(s))


def _pattern(message):
    """A regex over the source: `…` and '…'-quoted values match any text (a {placeholder})."""
    parts = re.split(r"'[^']*'|…", message)
    quotes = re.findall(r"'[^']*'|…", message)
    out = re.escape(parts[0])
    for q, p in zip(quotes, parts[1:]):
        out += ("'[^'\n]*'" if q.startswith("'") else "[^\n]*?") + re.escape(p)
    return out


def test_every_quoted_message_is_in_the_code():
    src = _sources()
    messages = quoted_messages(DOC.read_text())
    assert len(messages) >= 30, messages
    missing = [m for m in messages if not re.search(_pattern(m), src)]
    assert missing == []


def test_the_check_finds_a_message_the_code_does_not_have():
    src = _sources()
    assert not re.search(_pattern("app is ready to serve"), src)
    assert re.search(_pattern("no SSM parameters under '/x' (a missing path fails closed: …)"), src)
    assert quoted_messages("`aws logs tail x` `app started` `[logs] x` `x`") == ["app started"]
