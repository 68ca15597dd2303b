"""The docs a newcomer reads can be trusted: links resolve, `.env.example` matches `Settings`, the README
stays short.

* every relative link in README.md and docs/**/*.md points to a file that exists, and its #fragment (if
  any) to a heading of that file (GitHub's anchor slugs);
* `.env.example` names every setting of `config.Settings` (as `KEY=`, commented out or not) and nothing
  that is not one, and used as `.env` it gives exactly the defaults;
* README.md is at most 250 lines: the page a newcomer reads; the rest lives in docs/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config import Settings

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
_ENV_LINE = re.compile(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=", re.M)


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _strip_code(text: str) -> str:
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and '_' (Unicode too)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; repeated headings get -1, -2, … as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, title in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = github_slug(title)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def broken_links(files: list[Path], root: Path = ROOT) -> list[str]:
    """`file: target (why)` for each relative link that does not resolve."""
    problems = []
    for path in files:
        for target in _LINK.findall(_strip_code(path.read_text(encoding="utf-8"))):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: …
                continue
            file_part, _, fragment = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(root)}: {target}"
            if not dest.exists():
                problems.append(f"{where} (no such file)")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                problems.append(f"{where} (no heading #{fragment} in {dest.name})")
    return problems


def env_example_names(text: str) -> set[str]:
    return set(_ENV_LINE.findall(text))


def setting_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def test_relative_links_resolve() -> None:
    files = doc_files()
    assert len(files) > 1, "docs/ has no pages"
    assert broken_links(files) == []


def test_the_link_check_reports_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "ops.md").write_text("# Operations\n\n## Running `several` instances!\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/ops.md#running-several-instances) [gone](docs/nope.md) "
        "[bad anchor](docs/ops.md#scaling) [web](https://example.com/x.md) `[code](nope.md)`\n"
        "```\n[fenced](nope.md)\n```\n"
    )
    problems = broken_links(doc_files(tmp_path), tmp_path)
    assert len(problems) == 2, problems
    assert "docs/nope.md (no such file)" in problems[0]
    assert "(no heading #scaling in ops.md)" in problems[1]


def test_github_slugs() -> None:
    assert github_slug("Security and reliability") == "security-and-reliability"
    assert github_slug("Speech (embedded) — `python -m bench.speech_bench`") == (
        "speech-embedded--python--m-benchspeech_bench"
    )
    assert github_slug("Outbound at SDR scale: campaigns, do-not-call") == (
        "outbound-at-sdr-scale-campaigns-do-not-call"
    )


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    listed = env_example_names((ROOT / ".env.example").read_text(encoding="utf-8"))
    settings = setting_names()
    assert sorted(settings - listed) == [], "settings missing from .env.example"
    assert sorted(listed - settings) == [], ".env.example names that are not settings"


def test_env_example_used_as_env_file_gives_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its header says "copy to .env; every value shown is the default": so it must parse to exactly the
    defaults (an empty `KEY=  # comment` would read the comment as the value)."""
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    copied = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    differing = {
        name: getattr(copied, name)
        for name in Settings.model_fields
        if getattr(copied, name) != getattr(defaults, name)
    }
    assert differing == {}


def test_env_example_names_include_commented_lines() -> None:
    text = "A=1  # on\n# B=2\n#C=\n# a comment, D=3 is prose\n  E=x\n"
    assert env_example_names(text) == {"A", "B", "C", "E"}


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def readme_sdk_example() -> str:
    """The README's Python block that uses the ElevenLabs SDK."""
    blocks = re.findall(
        r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S | re.M
    )
    found = [block for block in blocks if "ElevenLabs(" in block]
    assert len(found) == 1, "README.md should have one Python block using the ElevenLabs SDK"
    return found[0]


@pytest.mark.asyncio
async def test_the_readme_sdk_example_runs_against_a_live_server(tmp_path: Path) -> None:
    """The newcomer's first REST call: the README's block, as written, with only the key file and the
    server's address swapped for the test's."""
    import asyncio
    import contextlib
    import io

    from tests.conftest import API_KEY, LiveServer, make_settings

    (tmp_path / ".api_key").write_text(API_KEY + "\n")
    code = readme_sdk_example()
    assert 'open(".api_key")' in code and '"http://localhost:9001"' in code
    async with LiveServer(make_settings(tmp_path)) as server:
        code = code.replace('open(".api_key")', f"open({str(tmp_path / '.api_key')!r})")
        code = code.replace('"http://localhost:9001"', repr(server.base_url))
        out = io.StringIO()

        def run() -> None:  # the SDK's client is synchronous: off the server's event loop
            with contextlib.redirect_stdout(out):
                exec(compile(code, "README.md", "exec"), {})

        await asyncio.to_thread(run)
        async with server.client() as client:
            agents = (await client.get("/v1/convai/agents")).json()["agents"]
    assert [a["name"] for a in agents] == ["Ava"]
    assert out.getvalue().splitlines()[0] == f"{agents[0]['agent_id']} Ava"
