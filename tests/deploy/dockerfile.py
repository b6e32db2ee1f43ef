"""A small Dockerfile reader and .dockerignore matcher, enough to check this repo's image.

``parse`` follows the Dockerfile reference for what this repository uses: comments and parser
directives, line continuations with the default escape character, JSON ("exec") and shell forms,
and here-documents (``COPY <<'EOF' /path`` ... ``EOF``). ``DockerIgnore`` follows the moby
pattern matcher: patterns are cleaned paths with ``*``, ``?``, ``[...]`` and ``**``, a pattern
that matches a directory matches everything below it, ``!`` re-includes, and the last matching
pattern wins.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

_HEREDOC = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # the arguments, continuation lines joined with a space
    line: int  # 1-based line of the keyword
    heredocs: list[str] = field(default_factory=list)

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction (ENTRYPOINT, CMD, RUN), else None."""
        try:
            loaded = json.loads(self.value)
        except ValueError:
            return None
        if isinstance(loaded, list) and all(isinstance(item, str) for item in loaded):
            return loaded
        return None

    def flags(self) -> dict[str, str]:
        """Leading --flag=value options (COPY --from=builder, RUN --mount=...)."""
        found: dict[str, str] = {}
        for word in self.value.split():
            if not word.startswith("--"):
                break
            name, _, value = word[2:].partition("=")
            found[name] = value
        return found

    def args(self) -> list[str]:
        """The shell-form words after the flags (COPY sources and destination, EXPOSE ports)."""
        words = self.value.split()
        while words and words[0].startswith("--"):
            words.pop(0)
        return words


@dataclass
class Stage:
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def resolve_base(self, stage: Stage) -> str:
        """The stage's FROM with ${ARG}/$ARG references to global ARGs substituted."""

        def sub(match: re.Match[str]) -> str:
            key = match.group(1) or match.group(2)
            return self.global_args.get(key, "")

        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, stage.base)


def _logical_lines(text: str) -> list[tuple[int, str, list[str]]]:
    """(line number, instruction text, here-documents) for every instruction."""
    raw = text.splitlines()
    out: list[tuple[int, str, list[str]]] = []
    index = 0
    in_directives = True
    while index < len(raw):
        line = raw[index]
        stripped = line.strip()
        if in_directives and re.match(r"^#\s*[a-zA-Z]+\s*=", stripped):
            index += 1  # a parser directive (# syntax=..., # escape=...)
            continue
        in_directives = False
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        start = index + 1
        parts = [line.rstrip()]
        while parts[-1].endswith("\\"):
            parts[-1] = parts[-1][:-1]
            index += 1
            # Comment lines inside a continuation are removed, empty lines skipped.
            while index < len(raw) and (
                not raw[index].strip() or raw[index].lstrip().startswith("#")
            ):
                index += 1
            if index >= len(raw):
                break
            parts.append(raw[index].rstrip())
        joined = " ".join(part.strip() for part in parts)
        index += 1
        heredocs: list[str] = []
        for match in _HEREDOC.finditer(joined):
            strip_tabs, _quote, word = match.groups()
            body: list[str] = []
            while (
                index < len(raw) and (raw[index].lstrip("\t") if strip_tabs else raw[index]) != word
            ):
                body.append(raw[index].lstrip("\t") if strip_tabs else raw[index])
                index += 1
            index += 1  # the terminator
            heredocs.append("\n".join(body) + "\n")
        out.append((start, joined, heredocs))
    return out


def parse(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, instruction, heredocs in _logical_lines(text):
        keyword, _, value = instruction.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword == "FROM":
            words = [w for w in value.split() if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name, line=number))
            continue
        if not stages:
            if keyword != "ARG":
                raise ValueError(f"line {number}: {keyword} before the first FROM")
            key, _, default = value.partition("=")
            global_args[key.strip()] = default.strip().strip('"')
            continue
        stages[-1].instructions.append(Instruction(keyword, value, number, heredocs))
    if not stages:
        raise ValueError("no FROM instruction")
    return Dockerfile(global_args, stages)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A moby-style pattern (already cleaned) as a regex over slash-separated paths."""
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    i += 1
                    out += "(?:.*/)?"  # **/ : zero or more directories
                else:
                    out += ".*"
                continue
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.find("]", i)
            if end < 0:
                out += re.escape(char)
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out += f"[{body}]"
                i = end
        else:
            out += re.escape(char)
        i += 1
    return re.compile(f"^{out}$")


@dataclass
class DockerIgnore:
    rules: list[tuple[bool, re.Pattern[str]]]  # (exclude?, pattern)

    @classmethod
    def parse(cls, text: str) -> DockerIgnore:
        rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclude = not line.startswith("!")
            if not exclude:
                line = line[1:].strip()
            cleaned = str(PurePosixPath("/" + line)).lstrip("/") or "."
            rules.append((exclude, _pattern_regex(cleaned)))
        return cls(rules)

    def excluded(self, path: str) -> bool:
        """Whether a context-relative file path is left out of the build context."""
        parts = PurePosixPath(path).parts
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for exclude, regex in self.rules:
            if any(regex.match(candidate) for candidate in candidates):
                result = exclude
        return result
