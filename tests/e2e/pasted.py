"""Commands read out of the README's code blocks, and a bash to paste them into."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from domain import ImageGroupStatus

STATUS_WORDS = re.compile(r"\b(" + "|".join(s.value for s in ImageGroupStatus) + r")\b")
_COMMENT = re.compile(r"\s+#\s")


@dataclass(frozen=True)
class Command:
    """One line of a README code block: what a reader pastes, and the comment that explains it."""

    line: str

    @property
    def code(self) -> str:
        return _COMMENT.split(self.line, maxsplit=1)[0]

    @property
    def comment(self) -> str:
        parts = _COMMENT.split(self.line, maxsplit=1)
        return parts[1] if len(parts) > 1 else ""

    @property
    def keeps_running(self) -> bool:
        """A worker or the simulator: it gets a shell of its own and runs until stopped."""
        return "keeps running" in self.comment

    @property
    def promised_statuses(self) -> set[str]:
        """The group statuses its comment says the command will show."""
        return set(STATUS_WORDS.findall(self.comment))


def section_blocks(markdown: str, heading: str) -> list[list[Command]]:
    """The fenced code blocks under `heading`, up to the next heading of any level."""
    blocks: list[list[Command]] = []
    lines = markdown.splitlines()
    start = lines.index(heading) + 1
    current: list[Command] | None = None
    for line in lines[start:]:
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            if line.strip() and not line.lstrip().startswith("#"):
                current.append(Command(line))
        elif line.startswith("#"):
            break
    return blocks


def first_status(output: str) -> str | None:
    found = STATUS_WORDS.search(output)
    return None if found is None else found.group(1)


class Shell:
    """A bash reading its commands from stdin, line by line, as if they were pasted into it."""

    def __init__(self, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log.open("a")
        self.popen = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)

    def run(self, line: str, timeout: float = 60) -> tuple[int, str]:
        """Paste `line`; its exit status and everything it printed (stdout and stderr)."""
        assert self.popen.stdin is not None
        marker = f"--- {uuid.uuid4().hex} exit"
        self.popen.stdin.write(f"{line}\nprintf '\\n{marker} %s\\n' \"$?\"\n")
        self.popen.stdin.flush()
        printed: list[str] = []
        while True:
            try:
                got = self.lines.get(timeout=timeout)
            except queue.Empty:
                joined = "".join(printed)
                raise AssertionError(f"no end after {timeout}s of: {line}\n{joined}") from None
            if got.startswith(marker):
                output = "".join(printed).removesuffix("\n")  # the newline printf put first
                self.log.write(f"$ {line}\n{output}\n")
                self.log.flush()
                return int(got.split()[-1]), output
            printed.append(got)

    def close(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        self.popen.wait(10)
        self.log.close()
