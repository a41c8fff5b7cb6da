"""The README's configuration table names exactly the variables the code reads: what `Settings.from_env`
asks its environment for (watched, not grepped), every other CHAT_* name in chatmesh/ and services/
(the launcher, the CLI, the event loop, bench), and `ENV_VARS`, which the error messages quote. A
variable added to the code without a row, or a row left for a variable gone, fails here."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from chatmesh.config import ENV_VARS, Settings

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"\bCHAT_[A-Z0-9_]*[A-Z0-9]\b")  # whole names: not a prefix such as `CHAT_TLS_*`


def readme_table() -> list[str]:
    """The first column of the table under "## Configuration", one or more `CHAT_*` names a row."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Configuration") :]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "no settings table under ## Configuration"
    names = [name for row in rows for name in re.findall(r"`(CHAT_[A-Z0-9_]+)`", row.split("|")[1])]
    assert len(names) == len(set(names)), "a variable has two rows"
    return names


class Watched(Mapping[str, str]):
    """An empty environment that remembers every key asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.asked = values, set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.values[key]

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return self.values.get(key, default)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return key in self.values

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("Settings.from_env reads named variables, it does not list the environment")

    def __len__(self) -> int:
        return len(self.values)


def read_by_settings() -> set[str]:
    env = Watched({"CHAT_JWT_SECRET": "x"})
    Settings.from_env(env)
    jwks = Watched({"CHAT_JWT_JWKS_URL": "https://id.example.com/jwks.json"})  # the branch without a secret
    Settings.from_env(jwks)
    return env.asked | jwks.asked


def named_in_code() -> set[str]:
    files = [
        p
        for folder in ("chatmesh", "services")
        for p in (ROOT / folder).rglob("*.py")
        if "gen" not in p.relative_to(ROOT).parts
    ]
    return {name for path in files for name in NAME.findall(path.read_text())}


def test_the_readme_table_is_every_variable_the_code_reads() -> None:
    table = set(readme_table())
    read = read_by_settings()
    assert read, "the watched environment saw nothing"
    # OpenTelemetry's standard variables (OTEL_*) are not ours: the CHAT_TRACING row names them.
    standard = {name for name in read if name.startswith("OTEL_")}
    tracing_row = next(
        row for row in (ROOT / "README.md").read_text().splitlines() if row.startswith("| `CHAT_TRACING`")
    )
    assert not {n for n in standard if n not in tracing_row}, "an OTEL_* variable read is not in CHAT_TRACING's row"
    read -= standard
    assert not read - table, f"read by chatmesh/config.py, missing from the README's table: {sorted(read - table)}"
    elsewhere = named_in_code()
    assert not elsewhere - table, f"named in the code, missing from the README's table: {sorted(elsewhere - table)}"
    assert not table - (read | elsewhere), f"in the README's table, read nowhere: {sorted(table - read - elsewhere)}"
    assert set(ENV_VARS) == table, f"ENV_VARS and the README differ: {sorted(set(ENV_VARS) ^ table)}"


def test_the_table_has_the_settings_the_issue_found_missing() -> None:
    """The check above has teeth: these were read but undocumented once."""
    assert {"CHAT_LOG_LEVEL", "CHAT_WS_SEND_QUEUE", "CHAT_WS_SEND_TIMEOUT"} <= set(readme_table()) & read_by_settings()
