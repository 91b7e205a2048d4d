"""The Dockerfile parser: the text of a Dockerfile into instructions, as Docker 20.10 reads it.

A Dockerfile looks like a shell script, and it is not one. It is read in two passes, and most
surprises come from not knowing which pass does what:

1. **Lines into instructions** (Docker's ``parser`` package). Parser directives are read from
   the very top (``# escape=`` and ``# syntax=``; anything else, even a blank line, ends the
   directives). Comments are whole lines that start with ``#``. A line ending in the escape
   character (``\\``, or a backtick after ``# escape=```) goes on on the next line; comment
   lines and empty lines inside such a run are dropped. Each instruction's arguments are then
   split the way that instruction wants: JSON arrays (exec form), the rest of the line (shell
   form), whitespace-separated words, or ``KEY=VALUE`` pairs. Quotes are *kept* here.
2. **Variable substitution** (Docker's ``shell`` lexer), done by the builder just before it
   runs an instruction, with the environment at that point: ``$VAR``, ``${VAR}``,
   ``${VAR:-default}``, ``${VAR:+alternative}``, ``${VAR:?message}`` and ``${VAR?message}``.
   This pass also removes the quotes. Only some instructions are substituted
   (:data:`SUBSTITUTED`): ``RUN``, ``CMD`` and ``ENTRYPOINT`` are left to the shell that runs
   them, which is why ``RUN echo $HOME`` sees the container's ``HOME``.

What this module matches is the *classic* builder of Docker 20.10, the one that still runs
with ``DOCKER_BUILDKIT=0``: heredocs (``RUN <<EOF``) are not supported, so the heredoc's body
is read as instructions (and fails as an unknown one, as Docker's does); ``${VAR#pattern}``
and friends are errors; ``RUN --mount`` and ``COPY --chmod`` are read but need BuildKit.
Every behaviour here was checked against ``docker build`` (tests/test_dockerfile.py names the
cases). Where Docker's own message is terse, ours keeps its words first and adds the fix.

Introduced in notebooks/05-dockerfile.
"""

from __future__ import annotations

import json as _json
import re
from dataclasses import dataclass, field

DEFAULT_ESCAPE = "\\"
#: Instructions whose arguments get variable substitution (Docker 20.10's classic builder).
#: FROM is substituted with the ARGs declared before the first FROM only; EXPOSE splits the
#: result into words (``EXPOSE $PORTS`` with ``PORTS="80 443"`` exposes two ports).
SUBSTITUTED = frozenset({"ADD", "ARG", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL",
                         "USER", "VOLUME", "WORKDIR"})
#: Every instruction the classic builder knows.
INSTRUCTIONS = ("ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM",
                "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL",
                "USER", "VOLUME", "WORKDIR")
#: The flags each instruction accepts. ARG and STOPSIGNAL (and HEALTHCHECK NONE) never look at
#: their flags: Docker ignores whatever is there. --mount and --chmod are read, and the builder
#: refuses them as Docker 20.10 does: they need BuildKit.
FLAGS: dict[str, tuple[str, ...]] = {
    "ADD": ("chown", "chmod"),
    "COPY": ("chown", "from", "chmod"),
    "FROM": ("platform",),
    "HEALTHCHECK": ("interval", "timeout", "start-period", "retries"),
    "RUN": ("mount",),
}
_FLAGS_IGNORED = ("ARG", "STOPSIGNAL")
#: Go's time.Duration of 1ms: the shortest HEALTHCHECK interval Docker accepts.
MINIMUM_DURATION_NS = 1_000_000
#: bufio.Scanner's limit: Docker refuses a longer physical line.
MAX_LINE = 64 * 1024 - 1

_WHITESPACE = re.compile(r"[\t\v\f\r ]+")  # Docker's reWhitespace and tokenWhitespace
# Go's \s is [\t\n\f\r ], narrower than Python's.
_DIRECTIVE = re.compile(r"^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)"
                        r"[\t\n\f\r ]*$")
_ONBUILD_PREFIX = re.compile(r"^[\t\n\f\r ]*ONBUILD[\t\n\f\r ]*", re.IGNORECASE)
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")
_BOM = "\ufeff"


class DockerfileError(Exception):
    """A Dockerfile cannot be parsed or expanded; the message says what is wrong and the fix.

    Introduced in notebooks/05-dockerfile.
    """

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        if self.line is None:
            return f"Dockerfile: {self.message}"
        return f"Dockerfile:{self.line}: {self.message}"


@dataclass
class Instruction:
    """One instruction, as Docker's parser leaves it: quotes kept, nothing substituted yet.

    ``args``: for the exec (JSON) form the JSON list; for the shell form of RUN, CMD,
    ENTRYPOINT and the command of HEALTHCHECK one string, the rest of the line; for ENV, LABEL
    and ARG the words as written (see ``pairs``); for ONBUILD the trigger as written; for
    USER, WORKDIR, STOPSIGNAL and MAINTAINER the rest of the line as one string; for the others
    the whitespace-separated words. ``original`` is what ``docker build`` prints after
    ``Step N/M :``. ``next`` is ONBUILD's trigger, or HEALTHCHECK's CMD (``None`` for
    ``HEALTHCHECK NONE``, whose ``args`` are ``["NONE"]``).

    Introduced in notebooks/05-dockerfile.
    """

    cmd: str
    args: list[str] = field(default_factory=list)
    json: bool = False
    flags: dict[str, str] = field(default_factory=dict)
    pairs: list[tuple[str, str | None]] = field(default_factory=list)
    line: int = 0
    original: str = ""
    next: Instruction | None = None
    end_line: int = 0
    escape: str = DEFAULT_ESCAPE
    #: The flags as written (``--chown=1:1``), before they were checked.
    raw_flags: list[str] = field(default_factory=list)


# ---- pass 1: lines into instructions -------------------------------------------------------

def parse(text: str, warnings: list[str] | None = None) -> list[Instruction]:
    """Parse a whole Dockerfile; ``warnings`` collects Docker's warnings (empty continuations).

    Introduced in notebooks/05-dockerfile.
    """
    if text == "" or text == _BOM:
        raise DockerfileError("the Dockerfile is empty: start it with FROM IMAGE", 1)
    instructions = _parse_text(text, warnings)
    _check_stages(instructions)
    return instructions


def parse_trigger(expression: str) -> Instruction:
    """Parse one ONBUILD trigger as the child build does when it runs it.

    Introduced in notebooks/05-dockerfile.
    """
    instructions = _parse_text(expression, None)
    if len(instructions) != 1:
        raise DockerfileError(f"the ONBUILD trigger {expression!r} is not one instruction")
    inst = instructions[0]
    if inst.cmd == "ONBUILD":
        raise DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", inst.line)
    if inst.cmd in ("MAINTAINER", "FROM"):
        raise DockerfileError(f"{inst.cmd} isn't allowed as an ONBUILD trigger", inst.line)
    return inst


def _parse_text(text: str, warnings: list[str] | None) -> list[Instruction]:
    """Both steps of Docker's parse: every line into a node first, then each node checked.

    Docker reports a malformed line (pass 1) before anything wrong with an instruction's
    arguments (pass 2), whatever their order in the file; so do we.
    """
    nodes = _read_nodes(text, warnings)
    if not nodes:
        raise DockerfileError("file with no instructions: the Dockerfile has only comments "
                              "or blank lines; start it with FROM IMAGE", 1)
    heredoc = False
    for inst in nodes:
        _check_instruction(inst, heredoc)
        heredoc = heredoc or "<<" in inst.original
    return nodes


def _lines(text: str) -> list[str]:
    """Physical lines as Go's bufio.Scanner gives them: split on \\n, a trailing \\r dropped."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out = []
    for number, line in enumerate(lines, 1):
        line = line.removesuffix("\r")
        if len(line.encode()) > MAX_LINE:
            raise DockerfileError(f"dockerfile line greater than max allowed size of {MAX_LINE}"
                                  ": split it with a backslash at the end of each part", number)
        out.append(line)
    return out


class _Directives:
    """The parser directives seen so far, and the escape character they set."""

    def __init__(self) -> None:
        self.escape = DEFAULT_ESCAPE
        self.continuation = _continuation(DEFAULT_ESCAPE)
        self.done = False
        self.seen: set[str] = set()

    def consider(self, line: str, number: int) -> None:
        """Read ``line`` as a directive while directives may still come (the top of the file)."""
        if self.done:
            return
        match = _DIRECTIVE.match(line)
        if not match or match.group(1).lower() not in ("escape", "syntax"):
            self.done = True
            return
        key, value = match.group(1).lower(), match.group(2)
        if key in self.seen:
            raise DockerfileError(f"only one {key} parser directive can be used: remove the "
                                  "second one", number)
        self.seen.add(key)
        if key == "escape":
            if value not in ("`", "\\"):
                raise DockerfileError(f"invalid escape token '{value}' does not match ` or \\: "
                                      "use `# escape=\\` or `# escape=``", number)
            self.escape = value
            self.continuation = _continuation(value)


def _continuation(escape: str) -> re.Pattern:
    """The escape character at the end of a line (blanks may follow): the line goes on.

    Not when the escape character before it is doubled: ``RUN echo a\\\\`` ends there, and
    so, as Docker's regular expression cannot tell, does a line ending in three.
    """
    e = re.escape(escape)
    return re.compile(f"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")


def _is_comment(line: str) -> bool:
    return _lstrip(line).startswith("#")


def _read_nodes(text: str, warnings: list[str] | None) -> list[Instruction]:
    """Docker's parser.Parse: join continuation lines, and split each instruction's line."""
    lines = _lines(text)
    directives = _Directives()
    nodes: list[Instruction] = []
    warned = False
    i = 0
    while i < len(lines):
        raw = lines[i]
        if i == 0:
            raw = raw.removeprefix(_BOM)
        token = _lstrip(raw)
        directives.consider(token, i + 1)
        token = "" if token.startswith("#") else token
        i += 1
        start = i
        line, complete = _trim_continuation(token, directives)
        if complete and line == "":
            continue
        empty_continuation = False
        while not complete and i < len(lines):
            raw = lines[i]
            directives.consider(raw, i + 1)
            i += 1
            if _is_comment(raw):
                continue  # a comment inside a continued instruction is dropped
            if _lstrip(raw) == "":
                empty_continuation = True
                continue
            part = "" if raw.startswith("#") else raw
            part, complete = _trim_continuation(part, directives)
            line += part
        if empty_continuation and warnings is not None:
            warnings.append(f"[WARNING]: Empty continuation line found in:\n    {line}")
            warned = True
        nodes.append(_node(line, directives.escape, start, i))
    if warned:
        warnings.append("[WARNING]: Empty continuation lines will become errors in a future "
                        "release.")
    return nodes


def _trim_continuation(line: str, directives: _Directives) -> tuple[str, bool]:
    """Strip a trailing escape character: (line, whether the instruction ends here)."""
    if directives.continuation.search(line):
        return directives.continuation.sub(r"\1", line), False
    return line, True


def _node(line: str, escape: str, start: int, end: int) -> Instruction:
    """One logical line into an Instruction with its arguments split (Docker's pass 1)."""
    parts = _WHITESPACE.split(_strip(line), maxsplit=1)
    cmd = parts[0].upper()
    rest, raw_flags = _extract_flags(parts[1]) if len(parts) == 2 else ("", [])
    rest = _strip(rest)
    inst = Instruction(cmd=cmd, line=start, end_line=end, original=_strip(line),
                       escape=escape, raw_flags=raw_flags)
    try:
        _split_arguments(inst, rest, line)
    except DockerfileError as exc:
        raise DockerfileError(exc.message, start) from None
    return inst


def _split_arguments(inst: Instruction, rest: str, line: str) -> None:
    """Fill ``args`` (and ``pairs``, ``json``, ``next``) the way ``inst.cmd`` wants them."""
    cmd = inst.cmd
    if cmd in ("RUN", "CMD", "ENTRYPOINT", "SHELL"):
        inst.args, inst.json = _maybe_json(rest)
    elif cmd in ("ADD", "COPY", "VOLUME"):
        parsed = _json_array(rest)
        if parsed is not None:
            inst.args, inst.json = parsed, True
        else:
            inst.args = _split_whitespace(rest)
    elif cmd in ("EXPOSE", "FROM"):
        inst.args = _split_whitespace(rest)
    elif cmd in ("ENV", "LABEL"):
        inst.args, inst.pairs = _name_values(rest, cmd, inst.escape)
    elif cmd == "ARG":
        inst.args = _words(rest, inst.escape)
        inst.pairs = [_arg_pair(word) for word in inst.args]
    elif cmd in ("USER", "WORKDIR", "STOPSIGNAL", "MAINTAINER"):
        inst.args = [rest] if rest else []
    elif cmd == "HEALTHCHECK":
        _split_healthcheck(inst, rest)
    elif cmd == "ONBUILD":
        if rest:
            inst.next = _node(rest, inst.escape, inst.line, inst.end_line)
            inst.args = [_ONBUILD_PREFIX.sub("", line)]  # trailing blanks kept, as Docker
    # Unknown instructions keep no arguments: pass 2 reports them.


def _split_healthcheck(inst: Instruction, rest: str) -> None:
    """HEALTHCHECK TYPE [COMMAND]: the type, then the command like CMD's (JSON or shell)."""
    sep = 0
    while sep < len(rest) and not _is_space(rest[sep]):
        sep += 1
    if sep == 0:
        return
    kind = rest[:sep]
    command, is_json = _maybe_json(_lstrip(rest[sep:]))
    inst.args = [kind] + command
    inst.json = is_json
    if kind.upper() != "NONE":
        inst.next = Instruction(cmd="CMD", args=command, json=is_json, line=inst.line,
                                end_line=inst.end_line, original=_lstrip(rest[sep:]),
                                escape=inst.escape)


def _maybe_json(rest: str) -> tuple[list[str], bool]:
    """Exec form if ``rest`` starts with a JSON array of strings, else the shell form."""
    if rest == "":
        return [], False
    parsed = _json_array(rest)
    if parsed is not None:
        return parsed, True
    return [rest], False


def _json_array(rest: str) -> list[str] | None:
    """The JSON array at the start of ``rest``, or None when it does not start with one.

    Like Go's json.Decoder, only the first JSON value is read: ``CMD ["a"] junk`` is
    ``["a"]``. A valid array holding anything but strings is an error, not the shell form.
    """
    rest = _lstrip(rest)
    if not rest.startswith("["):
        return None
    try:
        value, _ = _json.JSONDecoder(parse_constant=_no_constant).raw_decode(rest)
    except ValueError:
        return None
    if not all(isinstance(item, str) for item in value):
        raise DockerfileError("when using JSON array syntax, arrays must be comprised of "
                              "strings only: quote every element, as in [\"sleep\", \"10\"]")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _split_whitespace(rest: str) -> list[str]:
    """Docker's parseStringsWhitespaceDelimited: split on blanks, quotes are not special."""
    if rest == "":
        return []
    return _WHITESPACE.split(rest)


def _name_values(rest: str, cmd: str, escape: str) -> tuple[list[str], list[tuple[str, str]]]:
    """ENV and LABEL: ``NAME VALUE`` (the rest of the line) or ``NAME=VALUE ...`` words."""
    words = _words(rest, escape)
    if not words:
        return [], []
    if "=" not in words[0]:
        parts = _WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise DockerfileError(f"{cmd} must have two arguments: write {cmd} NAME=VALUE (or "
                                  f"the old form {cmd} NAME VALUE)")
        return parts, [(parts[0], parts[1])]
    pairs = []
    for word in words:
        if "=" not in word:
            raise DockerfileError(f"Syntax error - can't find = in {_go_quote(word)}. Must be "
                                  f"of the form: name=value (quote a value that has spaces: "
                                  f"{cmd} NAME=\"a value\")")
        key, value = word.split("=", 1)
        pairs.append((key, value))
    return words, pairs


def _arg_pair(word: str) -> tuple[str, str | None]:
    if "=" in word:
        key, value = word.split("=", 1)
        return key, value
    return word, None


def _words(rest: str, escape: str) -> list[str]:
    """Docker's parseWords: split on whitespace outside quotes, keeping quotes and escapes."""
    words: list[str] = []
    in_spaces, in_word, in_quote = 0, 1, 2
    phase = in_spaces
    quote = ""
    blank_ok = False
    word: list[str] = []
    pos = 0
    n = len(rest)
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if phase == in_spaces:
            if pos == n:
                break
            if _is_space(ch):
                pos += 1
                continue
            phase = in_word
        if pos == n:  # in a word or a quote at the end
            if blank_ok or word:
                words.append("".join(word))
            break
        if phase == in_word:
            if _is_space(ch):
                phase = in_spaces
                if blank_ok or word:
                    words.append("".join(word))
                word, blank_ok = [], False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote, blank_ok, phase = ch, True, in_quote
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue  # an escape at the very end is dropped
                word.append(ch)  # kept, with the character it escapes, for pass 2
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        # in a quote
        if ch == quote:
            phase = in_word
        if ch == escape and quote != "'":
            if pos + 1 == n:
                phase = in_word
                pos += 1
                continue
            pos += 1
            word.append(ch)
            ch = rest[pos]
        word.append(ch)
        pos += 1
    return words


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """Docker's extractBuilderFlags: leading ``--name=value`` words, and the rest of the line.

    Flags lose their quotes and backslashes here (``--chown="a b"`` is ``--chown=a b``); the
    first word that does not start with ``--`` (or a lone ``--``) ends them.
    """
    words: list[str] = []
    in_spaces, in_word, in_quote = 0, 1, 2
    phase = in_spaces
    word: list[str] = []
    quote = ""
    blank_ok = False
    pos = 0
    n = len(line)
    while pos <= n:
        ch = line[pos] if pos < n else ""
        if phase == in_spaces:
            if pos == n:
                break
            if _is_space(ch):
                pos += 1
                continue
            if ch != "-" or pos + 1 == n or line[pos + 1] != "-":
                return line[pos:], words
            phase = in_word
        if pos == n:
            text = "".join(word)
            if text != "--" and (blank_ok or text):
                words.append(text)
            break
        if phase == in_word:
            if _is_space(ch):
                phase = in_spaces
                text = "".join(word)
                if text == "--":
                    return line[pos:], words
                if blank_ok or text:
                    words.append(text)
                word, blank_ok = [], False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote, blank_ok, phase = ch, True, in_quote
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word.append(ch)
            pos += 1
            continue
        if ch == quote:
            phase = in_word
            pos += 1
            continue
        if ch == "\\":
            if pos + 1 == n:
                phase = in_word
                pos += 1
                continue
            pos += 1
            ch = line[pos]
        word.append(ch)
        pos += 1
    return "", words


# ---- pass 2: each instruction's arguments checked ------------------------------------------

def _check_instruction(inst: Instruction, heredoc: bool = False) -> None:
    """Docker's instructions.Parse for one node: flags, argument counts, forms."""
    try:
        if inst.cmd not in INSTRUCTIONS:
            raise DockerfileError(_unknown(inst.cmd, heredoc))
        _check(inst)
    except DockerfileError as exc:
        raise DockerfileError(exc.message, inst.line) from None


def _check(inst: Instruction) -> None:
    cmd, args = inst.cmd, inst.args
    if cmd == "FROM":
        _stage_name(args)
        _parse_flags(inst)
    elif cmd in ("ENV", "LABEL"):
        _parse_flags(inst)
        if not inst.pairs:
            raise DockerfileError(f"{cmd} requires at least one argument: {cmd} NAME=VALUE")
        if any(key == "" for key, _ in inst.pairs):
            raise DockerfileError(f"{cmd} names can not be blank: write {cmd} NAME=VALUE")
    elif cmd == "MAINTAINER":
        if len(args) != 1:
            raise DockerfileError("MAINTAINER requires exactly one argument (better: "
                                  "LABEL maintainer=\"NAME\")")
        _parse_flags(inst)
    elif cmd in ("ADD", "COPY"):
        if len(args) < 2:
            raise DockerfileError(f"{cmd} requires at least two arguments, but only one was "
                                  f"provided. Destination could not be determined: write "
                                  f"{cmd} SOURCE... DESTINATION")
        _parse_flags(inst)
    elif cmd == "ONBUILD":
        if not args:
            raise DockerfileError("ONBUILD requires at least one argument: ONBUILD INSTRUCTION")
        _parse_flags(inst)
        trigger = inst.next.cmd if inst.next else ""
        if trigger == "ONBUILD":
            raise DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger in ("MAINTAINER", "FROM"):
            raise DockerfileError(f"{trigger} isn't allowed as an ONBUILD trigger")
    elif cmd in ("WORKDIR", "USER", "STOPSIGNAL"):
        if len(args) != 1:
            raise DockerfileError(f"{cmd} requires exactly one argument: {cmd} "
                                  f"{_ONE_ARGUMENT[cmd]}")
        if cmd != "STOPSIGNAL":
            _parse_flags(inst)
    elif cmd in ("RUN", "CMD", "ENTRYPOINT"):
        _parse_flags(inst)
    elif cmd == "HEALTHCHECK":
        _check_healthcheck(inst)
    elif cmd == "EXPOSE":
        if not args:
            raise DockerfileError("EXPOSE requires at least one argument: EXPOSE PORT[/PROTO]")
        _parse_flags(inst)
    elif cmd == "VOLUME":
        if not args:
            raise DockerfileError("VOLUME requires at least one argument: VOLUME /PATH")
        _parse_flags(inst)
        if any(_strip(v) == "" for v in args):
            raise DockerfileError("VOLUME specified can not be an empty string: name a path")
    elif cmd == "ARG":
        if not args:
            raise DockerfileError("ARG requires at least one argument: ARG NAME[=DEFAULT]")
        if any(key == "" for key, _ in inst.pairs):
            raise DockerfileError("ARG names can not be blank: write ARG NAME=DEFAULT")
    elif cmd == "SHELL":
        _parse_flags(inst)
        if not args:
            raise DockerfileError("SHELL requires at least one argument: SHELL "
                                  "[\"/bin/sh\", \"-c\"]")
        if not inst.json:
            raise DockerfileError("SHELL requires the arguments to be in JSON form: "
                                  "SHELL [\"/bin/sh\", \"-c\"]")


_ONE_ARGUMENT = {"WORKDIR": "/PATH", "USER": "NAME[:GROUP]", "STOPSIGNAL": "SIGNAL"}


def _unknown(cmd: str, heredoc: bool) -> str:
    if heredoc:
        hint = ("heredocs (RUN <<EOF) need BuildKit; the classic builder reads each line of "
                "one as an instruction. Join the commands with && and backslashes instead")
    else:
        hint = ("every line starts with an instruction (" + ", ".join(INSTRUCTIONS) + "); a "
                "command that goes on over several lines needs the escape character at the "
                "end of each line but the last")
    return f"unknown instruction: {cmd}: {hint}"


def _stage_name(args: list[str]) -> str:
    """FROM IMAGE [AS NAME]: the stage name (lower case), or ""."""
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise DockerfileError(f"invalid name for build stage: {_go_quote(args[2])}, name "
                                  "can't start with a number or contain symbols")
        return name
    if len(args) != 1:
        raise DockerfileError("FROM requires either one or three arguments: FROM IMAGE "
                              "[AS NAME]")
    return ""


def _parse_flags(inst: Instruction) -> None:
    """Docker's BFlags.Parse: every flag known to the instruction, once, with its value."""
    known = FLAGS.get(inst.cmd, ())
    flags: dict[str, str] = {}
    for raw in inst.raw_flags:
        if raw == "--":
            break
        name, eq, value = raw[2:].partition("=")
        if name not in known:
            accepted = ", ".join("--" + k for k in known) or "no flags"
            raise DockerfileError(f"Unknown flag: {name} ({inst.cmd} accepts {accepted})")
        if name in flags and name != "mount":
            raise DockerfileError(f"Duplicate flag specified: {name}: give --{name} once")
        if not eq:
            raise DockerfileError(f"Missing a value on flag: {name}: write --{name}=VALUE")
        flags[name] = value  # a repeated --mount keeps the last (the builder refuses it)
    inst.flags = flags


def _check_healthcheck(inst: Instruction) -> None:
    args = inst.args
    if not args:
        raise DockerfileError("HEALTHCHECK requires at least one argument: HEALTHCHECK CMD "
                              "COMMAND, or HEALTHCHECK NONE")
    kind = args[0].upper()
    if kind == "NONE":
        if len(args) != 1:
            raise DockerfileError("HEALTHCHECK NONE takes no arguments")
        inst.args = ["NONE"]
        return  # Docker does not look at the flags of HEALTHCHECK NONE
    _parse_flags(inst)
    if kind != "CMD":
        raise DockerfileError(f"Unknown type {_go_quote(kind)} in HEALTHCHECK (try CMD)")
    if not args[1:]:
        raise DockerfileError("Missing command after HEALTHCHECK CMD")
    healthcheck(inst)  # the durations and retries


def healthcheck(inst: Instruction) -> dict:
    """The image config's Healthcheck for a HEALTHCHECK instruction, as docker inspect shows it.

    Durations left out are 0 here (and left out of the dict); the image gets them from the one
    below through :func:`merge_healthcheck`.

    Introduced in notebooks/05-dockerfile.
    """
    if inst.args[:1] == ["NONE"] or not inst.args:
        return {"Test": ["NONE"]}
    command = inst.args[1:]
    test = ["CMD"] + command if inst.json else ["CMD-SHELL", " ".join(command)]
    config: dict = {"Test": test}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                      ("start-period", "StartPeriod")):
        value = inst.flags.get(flag, "")
        if value == "":
            continue
        try:
            ns = duration_ns(value)
        except DockerfileError as exc:
            raise DockerfileError(exc.message + f" (--{flag}=30s, 1m30s ...)", inst.line) from None
        if ns < MINIMUM_DURATION_NS:
            raise DockerfileError(f"Interval \"{flag}\" cannot be less than 1ms", inst.line)
        config[key] = ns
    retries = inst.flags.get("retries", "")
    if retries != "":
        try:
            count = _go_parse_int(retries, bits=32)
        except ValueError as exc:
            raise DockerfileError(f"strconv.ParseInt: parsing {_go_quote(retries)}: {exc}: "
                                  "--retries wants a whole number", inst.line) from None
        if count < 1:
            raise DockerfileError(f"--retries must be at least 1 (not {count})", inst.line)
        config["Retries"] = count
    return config


def merge_healthcheck(new: dict, below: dict | None) -> dict:
    """What Docker 20.10 stores: ``new`` with its empty fields taken from the image below.

    Docker's commit merges the two, field by field, so ``HEALTHCHECK NONE`` over an image with
    ``--interval=10s`` keeps ``Interval`` (tests/dockerfiles/healthcheck shows it).

    Introduced in notebooks/05-dockerfile.
    """
    if not below:
        return dict(new)
    merged = dict(new)
    for key in ("Test", "Interval", "Timeout", "StartPeriod", "Retries"):
        if not merged.get(key) and below.get(key):
            merged[key] = below[key]
    return merged


def _check_stages(instructions: list[Instruction]) -> None:
    """Only ARG before the first FROM, a FROM somewhere, and no stage name used twice."""
    names: dict[str, int] = {}
    seen_from = False
    for inst in instructions:
        if inst.cmd == "FROM":
            seen_from = True
            name = _stage_name(inst.args)
            if name and name in names:
                raise DockerfileError(f"a stage name already used: {name!r} names the stage of "
                                      f"line {names[name]} too; give each stage its own name",
                                      inst.line)
            if name:
                names[name] = inst.line
        elif not seen_from and inst.cmd != "ARG":
            raise DockerfileError(f"no build stage in current context: {inst.cmd} comes before "
                                  "the first FROM; only ARG may come before it", inst.line)
    if not seen_from:
        raise DockerfileError("no FROM instruction: a Dockerfile starts its first stage with "
                              "FROM IMAGE", instructions[-1].line if instructions else None)


# ---- pass 2 at build time: variable substitution -------------------------------------------

def substitutes(cmd: str) -> bool:
    """Whether Docker substitutes variables in ``cmd``'s arguments.

    Introduced in notebooks/05-dockerfile.
    """
    return cmd.upper() in SUBSTITUTED


def expand(word: str, env: dict[str, str], escape: str = DEFAULT_ESCAPE) -> str:
    """Substitute variables in ``word`` and remove its quotes: Docker's ProcessWord.

    Introduced in notebooks/05-dockerfile.
    """
    return _Lexer(word, env, escape).run()[0]


def expand_words(text: str, env: dict[str, str], escape: str = DEFAULT_ESCAPE) -> list[str]:
    """Substitute, then split into words (quotes keep spaces): Docker's ProcessWords.

    Introduced in notebooks/05-dockerfile.
    """
    return _Lexer(text, env, escape).run()[1]


def expand_instruction(inst: Instruction, env: dict[str, str]) -> Instruction:
    """A copy of ``inst`` with its arguments substituted as Docker 20.10's builder does.

    ``env`` is the environment at this point of the build: the image's Env with the build
    args in scope (for FROM: the ARGs before the first FROM). Every value of one ENV, LABEL or
    ARG sees ``env`` as it was before the instruction: ``ENV A=1 B=$A`` does not see the new A.
    COPY --from is not substituted, --chown is.

    Introduced in notebooks/05-dockerfile.
    """
    def word(text: str) -> str:
        try:
            return expand(text, env, inst.escape)
        except DockerfileError as exc:
            raise DockerfileError(exc.message, inst.line) from None

    out = Instruction(**{**inst.__dict__, "args": list(inst.args), "flags": dict(inst.flags),
                         "pairs": list(inst.pairs)})
    cmd = inst.cmd
    if cmd not in SUBSTITUTED:
        return out
    if cmd in ("ENV", "LABEL", "ARG"):
        out.pairs = [(word(k), None if v is None else word(v)) for k, v in inst.pairs]
    elif cmd == "EXPOSE":
        ports: list[str] = []
        for port in inst.args:
            try:
                ports += expand_words(port, env, inst.escape)
            except DockerfileError as exc:
                raise DockerfileError(exc.message, inst.line) from None
        out.args = ports
    elif cmd == "FROM":
        out.args = [word(inst.args[0])] + inst.args[1:]
        if "platform" in inst.flags:
            out.flags["platform"] = word(inst.flags["platform"])
    else:
        out.args = [word(a) for a in inst.args]
        if "chown" in inst.flags:
            out.flags["chown"] = word(inst.flags["chown"])
    return out


class _Lexer:
    """Docker's shell lexer (shell/lex.go in BuildKit 0.8, which Docker 20.10 uses)."""

    def __init__(self, text: str, env: dict[str, str], escape: str):
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape

    def run(self) -> tuple[str, list[str]]:
        try:
            return self.until(None)
        except _LexError as exc:
            raise DockerfileError(f"failed to process {_go_quote(self.text)}: {exc}") from None

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def until(self, stop: str | None) -> tuple[str, list[str]]:
        """Process up to ``stop`` (consumed) or the end: (the text, the text split in words)."""
        result: list[str] = []
        words = _Words()
        while self.peek():
            ch = self.peek()
            if stop is not None and ch == stop:
                self.next()
                return "".join(result), words.get()
            if ch in ("'", '"', "$"):
                if ch == "'":
                    value = self.single_quote()
                elif ch == '"':
                    value = self.double_quote()
                else:
                    value = self.dollar()
                result.append(value)
                if ch == "$":
                    words.add_string(value)  # a variable's value is split into words
                else:
                    words.add_raw_string(value)
                continue
            ch = self.next()
            if ch == self.escape:
                ch = self.next()
                if ch == "":
                    break  # an escape character at the end is dropped
                words.add_raw_char(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop is not None:
            raise _LexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get()

    def single_quote(self) -> str:
        """'...': everything literal, no escapes."""
        self.next()
        result = []
        while True:
            ch = self.next()
            if ch == "":
                raise _LexError("unexpected end of statement while looking for matching "
                                "single-quote")
            if ch == "'":
                return "".join(result)
            result.append(ch)

    def double_quote(self) -> str:
        """"...": variables substituted; the escape character escapes only " $ and itself."""
        self.next()
        result = []
        while True:
            ch = self.peek()
            if ch == "":
                raise _LexError("unexpected end of statement while looking for matching "
                                "double-quote")
            if ch == '"':
                self.next()
                return "".join(result)
            if ch == "$":
                result.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                following = self.peek()
                if following == "":
                    continue
                if following in ('"', "$", self.escape):
                    ch = self.next()
            result.append(ch)

    def dollar(self) -> str:
        """$NAME, ${NAME} and ${NAME:-word}, ${NAME:+word}, ${NAME:?word}, ${NAME?word}."""
        self.next()
        if self.peek() != "{":
            name = self.name()
            if name == "":
                return "$"
            return self.env.get(name, "")
        self.next()
        if self.peek() == "":
            raise _LexError("syntax error: missing '}'")
        if self.peek() in ("{", "}", ":"):
            raise _LexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            return self.env.get(name, "")
        if ch == "?":
            word = self.modifier_word()
            if name not in self.env:
                raise _LexError(f"{name}: {word or 'is not allowed to be unset'}")
            return self.env[name]
        if ch == ":":
            modifier = self.next()
            word = self.modifier_word()
            value = self.env.get(name, "")
            if modifier == "+":
                return word if value != "" else value
            if modifier == "-":
                return value if value != "" else word
            if modifier == "?":
                if name not in self.env:
                    raise _LexError(f"{name}: {word or 'is not allowed to be unset'}")
                if value == "":
                    raise _LexError(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            raise _LexError(f"unsupported modifier ({modifier}) in substitution: the classic "
                            "builder knows ${VAR:-default}, ${VAR:+alternative} and "
                            "${VAR:?message}")
        raise _LexError("missing ':' in substitution: the classic builder knows "
                        "${VAR:-default}, ${VAR:+alternative}, ${VAR:?message} and "
                        "${VAR?message}")

    def modifier_word(self) -> str:
        """The word after a modifier, up to the closing brace (variables substituted)."""
        try:
            return self.until("}")[0]
        except _LexError:
            if self.peek() == "":
                raise _LexError("syntax error: missing '}'") from None
            raise

    def name(self) -> str:
        """A variable name: letters, digits and _; or a run of digits; or one of @*#?-$!0."""
        name: list[str] = []
        while self.peek():
            ch = self.peek()
            if not name and ch.isdecimal():
                while self.peek().isdecimal():
                    name.append(self.next())
                return "".join(name)
            if not name and ch in "@*#?-$!0":
                return self.next()
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            name.append(self.next())
        return "".join(name)


class _LexError(Exception):
    pass


class _Words:
    """The words ProcessWords returns, built as the lexer goes."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.word = ""
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if _is_space(ch):
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word, self.in_word = "", False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def get(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word, self.in_word = "", False
        return self.words


# ---- helpers for the builder: EXPOSE, durations, signals -----------------------------------

_PROTOCOLS = ("tcp", "udp", "sctp")


def expose_ports(specs: list[str]) -> list[str]:
    """EXPOSE's (substituted) words as the config's ExposedPorts keys, sorted like docker inspect.

    ``80`` is ``80/tcp``; ``8000-8002/udp`` is three keys; ``8080:80`` and ``127.0.0.1:8080:80``
    expose 80 (the host part is checked, then ignored, as Docker does).

    Introduced in notebooks/05-dockerfile.
    """
    ports: set[str] = set()
    for spec in specs:
        ports.update(_port_spec(spec))
    return sorted(ports)


def _port_spec(raw: str) -> list[str]:
    parts = raw.split(":")
    container = parts[-1]
    host = parts[-2] if len(parts) >= 2 else ""
    proto, container = _split_proto(container)
    if container == "":
        raise DockerfileError(f"No port specified: {raw}<empty>: EXPOSE PORT[/PROTO]")
    try:
        start, end = _port_range(container)
    except ValueError:
        raise DockerfileError(f"Invalid containerPort: {container}: a port is 0-65535, a range "
                              "is LOW-HIGH") from None
    if host:
        try:
            host_start, host_end = _port_range(host)
        except ValueError:
            raise DockerfileError(f"Invalid hostPort: {host}") from None
        if end - start != host_end - host_start and end != start:
            raise DockerfileError(f"Invalid ranges specified for container and host Ports: "
                                  f"{container} and {host}")
    if proto.lower() not in _PROTOCOLS:
        raise DockerfileError(f"Invalid proto: {proto}: use tcp, udp or sctp")
    return [f"{port}/{proto.lower()}" for port in range(start, end + 1)]


def _split_proto(raw: str) -> tuple[str, str]:
    parts = raw.split("/")
    if raw == "" or parts[0] == "":
        return "", ""
    if len(parts) == 1 or parts[1] == "":
        return "tcp", parts[0]
    return parts[1], parts[0]


def _port_range(text: str) -> tuple[int, int]:
    if "-" not in text:
        port = _go_parse_uint16(text)
        return port, port
    parts = text.split("-")
    start, end = _go_parse_uint16(parts[0]), _go_parse_uint16(parts[1])
    if end < start:
        raise ValueError("invalid range")
    return start, end


def _go_parse_uint16(text: str) -> int:
    if not text or not all("0" <= c <= "9" for c in text):
        raise ValueError(text)
    value = int(text)
    if value > 0xFFFF:
        raise ValueError(text)
    return value


def _go_parse_int(text: str, bits: int) -> int:
    """strconv.ParseInt(text, 10, bits): an optional sign and decimal digits, in range."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not all("0" <= c <= "9" for c in digits):
        raise ValueError("invalid syntax")
    value = int(text)
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise ValueError("value out of range")
    return value


_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
          "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)")


def duration_ns(text: str) -> int:
    """Go's time.ParseDuration in nanoseconds: "30s", "1m30s", "1.5h", "250ms".

    Introduced in notebooks/05-dockerfile.
    """
    quoted = _go_quote(text)
    rest = text
    sign = 1
    if rest[:1] in ("+", "-"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    if rest == "":
        raise DockerfileError(f"time: invalid duration {quoted}")
    total = 0
    while rest:
        match = _DURATION_PART.match(rest)
        number, unit = match.group(1), match.group(2)
        if number in ("", "."):
            raise DockerfileError(f"time: invalid duration {quoted}")
        if unit == "":
            raise DockerfileError(f"time: missing unit in duration {quoted}")
        # The unit runs to the next digit or dot; it must be one Go knows.
        if unit not in _UNITS:
            raise DockerfileError(f"time: unknown unit {_go_quote(unit)} in duration {quoted}")
        whole, _, frac = number.partition(".")
        scale = _UNITS[unit]
        value = int(whole or "0") * scale
        if frac:
            value += int(frac) * scale // (10 ** len(frac))
        total += value
        rest = rest[match.end():]
    if total > (1 << 63) - 1:
        raise DockerfileError(f"time: invalid duration {quoted}")
    return sign * total


_SIGNALS = {
    "ABRT": 6, "ALRM": 14, "BUS": 7, "CHLD": 17, "CLD": 17, "CONT": 18, "FPE": 8, "HUP": 1,
    "ILL": 4, "INT": 2, "IO": 29, "IOT": 6, "KILL": 9, "PIPE": 13, "POLL": 29, "PROF": 27,
    "PWR": 30, "QUIT": 3, "SEGV": 11, "STKFLT": 16, "STOP": 19, "SYS": 31, "TERM": 15,
    "TRAP": 5, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "USR1": 10, "USR2": 12,
    "VTALRM": 26, "WINCH": 28, "XCPU": 24, "XFSZ": 25, "RTMIN": 34, "RTMAX": 64,
    **{f"RTMIN+{i}": 34 + i for i in range(1, 16)},
    **{f"RTMAX-{i}": 64 - i for i in range(1, 15)},
}


def stop_signal(raw: str) -> int:
    """STOPSIGNAL's (substituted) value as a signal number, checked as Docker 20.10 checks it.

    A number is taken as it is (except 0); a name may have ``SIG`` or not, in any case.
    The config keeps the text as written; this is only the check (and what ``stop`` sends).

    Introduced in notebooks/05-dockerfile.
    """
    try:
        number = _go_parse_int(raw, bits=64)
    except ValueError:
        name = raw.upper().removeprefix("SIG")
        if name in _SIGNALS:
            return _SIGNALS[name]
        raise DockerfileError(f"Invalid signal: {raw}: use a name such as SIGTERM or SIGQUIT, "
                              "or a number") from None
    if number == 0:
        raise DockerfileError(f"Invalid signal: {raw}: 0 is not a signal")
    return number


# ---- Go's notions of space and quoting ----------------------------------------------------

def _is_space(ch: str) -> bool:
    """Go's unicode.IsSpace (Python's isspace also counts \\x1c-\\x1f, Go does not)."""
    return ch in "\t\n\v\f\r \x85\xa0" or (ch > "\xff" and ch.isspace())


def _lstrip(text: str) -> str:
    i = 0
    while i < len(text) and _is_space(text[i]):
        i += 1
    return text[i:]


def _strip(text: str) -> str:
    text = _lstrip(text)
    end = len(text)
    while end and _is_space(text[end - 1]):
        end -= 1
    return text[:end]


def _go_quote(text: str) -> str:
    """Go's %q of a string, as Docker's messages show it."""
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)
