"""README.md and its Simplified Chinese translation README.zh-CN.md show the same shell commands.

A *command* is, in either file:

* every line of a fenced code block whose info string is `bash`, `sh`, `shell`, `zsh` or `console`
  (``` or ~~~ fences), except that in `console` blocks only lines starting with `$ ` count (the
  rest is output);
* outside fenced blocks, every line starting with `$ `.

A leading `$ ` is removed, lines ending in a backslash are joined with the next, `#` comments are
dropped (so comments may be translated), and blank lines are skipped. Two commands are the same
when their shell words are the same (`shlex`): spacing and quoting do not matter. Commands inside
inline code spans and in other languages' blocks (Python) are not compared.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TRANSLATION = ROOT / "README.zh-CN.md"
SHELL_LANGUAGES = {"bash", "sh", "shell", "zsh", "console"}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")


def _strip_comment(line: str) -> str:
    """`line` without a trailing `# comment` (a `#` outside quotes, at the start or after a space)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _canonical(command: str) -> str:
    try:
        return " ".join(shlex.split(command))
    except ValueError:  # Unbalanced quotes: compare the whitespace-normalized text instead.
        return " ".join(command.split())


def shell_commands(markdown: str) -> dict[str, tuple[int, str]]:
    """{canonical command: (line number, command as written)} for the commands defined above."""
    raw: list[tuple[int, str]] = []  # (line number, line), prompts removed, before joining.
    fence, language = None, ""
    for number, line in enumerate(markdown.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence, language = match.group(1), match.group(2).lower()
            continue
        if fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                fence, language = None, ""
                raw.append((number, ""))  # A block's end ends an unfinished continuation.
            elif language == "console":
                raw.append((number, line.strip()[2:] if line.strip().startswith("$ ") else ""))
            elif language in SHELL_LANGUAGES:
                stripped = line.strip()
                raw.append((number, stripped[2:] if stripped.startswith("$ ") else stripped))
            continue
        raw.append((number, line.strip()[2:] if line.startswith("$ ") else ""))

    commands: dict[str, tuple[int, str]] = {}
    pending, start = "", 0
    for number, line in raw:
        line = _strip_comment(line)
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command:
            commands.setdefault(_canonical(command), (start, command))
    return commands


def _missing(source: Path, target: Path) -> list[str]:
    have = shell_commands(target.read_text(encoding="utf-8"))
    return [
        f"  {source.name} line {line}: {command}"
        for key, (line, command) in shell_commands(source.read_text(encoding="utf-8")).items()
        if key not in have
    ]


def test_the_definition_of_a_command():
    text = "\n".join(
        [
            "Run `python -m not.a.command` inline.",
            "$ make run",
            "```bash",
            "make test    # all tests",
            "# a comment line",
            "python -m fashion_jax.run --workdir /shared/base \\",
            "  --config.num_epochs=2   # continued",
            "",
            'pip install "jax[cuda12]"',
            "```",
            "```python",
            "import jax",
            "```",
            "```console",
            "$ XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m pytest",
            "3 passed",
            "```",
        ]
    )
    assert list(shell_commands(text)) == [
        "make run",
        "make test",
        "python -m fashion_jax.run --workdir /shared/base --config.num_epochs=2",
        "pip install jax[cuda12]",
        "XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m pytest",
    ]
    assert shell_commands(text)["pip install jax[cuda12]"] == (9, 'pip install "jax[cuda12]"')


@pytest.mark.parametrize(
    "source, target",
    [(README, TRANSLATION), (TRANSLATION, README)],
    ids=["README.md->README.zh-CN.md", "README.zh-CN.md->README.md"],
)
def test_every_command_is_in_both_readmes(source, target):
    assert len(shell_commands(source.read_text(encoding="utf-8"))) >= 5, (
        f"no shell commands found in {source.name}"
    )
    missing = _missing(source, target)
    if missing:
        pytest.fail(
            f"{len(missing)} shell command(s) of {source.name} are missing from {target.name} "
            f"(add them there, or remove them here):\n" + "\n".join(missing),
            pytrace=False,
        )


@pytest.mark.parametrize(
    "source, target",
    [(README, TRANSLATION), (TRANSLATION, README)],
    ids=["README.md->README.zh-CN.md", "README.zh-CN.md->README.md"],
)
def test_each_readme_links_to_the_other(source, target):
    link = re.compile(r"(\]\(|href=\")(\./)?" + re.escape(target.name) + r"(#[^)\"]*)?[)\"]")
    if not link.search(source.read_text(encoding="utf-8")):
        pytest.fail(
            f"{source.name} has no link to {target.name}: add e.g. [{target.name}]({target.name})",
            pytrace=False,
        )


def _local_links(markdown: str) -> set[str]:
    """Targets of Markdown links and images that point into the repository (no URLs, no anchors)."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", markdown)
    return {t for t in targets if "://" not in t}


def test_both_front_pages_link_to_the_same_pages():
    english = _local_links(README.read_text(encoding="utf-8")) - {TRANSLATION.name}
    chinese = _local_links(TRANSLATION.read_text(encoding="utf-8")) - {README.name}
    assert any(t.startswith("docs/") for t in english), "README.md links to no docs/ page"
    assert english == chinese, (
        f"only in README.md: {english - chinese}; only in the translation: {chinese - english}"
    )
