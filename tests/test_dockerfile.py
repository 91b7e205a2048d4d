"""The Dockerfile parser and the variable substitution, against what Docker 20.10 does.

These are pure functions, so these are unit tests. Every expectation here was checked by
running ``DOCKER_BUILDKIT=0 docker build`` on the same text (dockerd 20.10.24): the case is
written as it was tried, and the comment says what Docker printed or stored where that is
not obvious. tests/test_docker_reference.py builds the whole corpus with Docker.
"""

from __future__ import annotations

import pytest

from edu_runtime.images import dockerfile as df
from edu_runtime.images.dockerfile import DockerfileError, expand, expand_words, parse


def one(text: str) -> df.Instruction:
    """The last instruction of ``FROM x`` + text."""
    return parse("FROM x\n" + text)[-1]


def error(text: str) -> DockerfileError:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    return info.value


# ---- the error type ------------------------------------------------------------------------

def test_error_names_the_line():
    exc = DockerfileError("something is wrong", 7)
    assert str(exc) == "Dockerfile:7: something is wrong" and exc.line == 7
    assert str(DockerfileError("no line")) == "Dockerfile: no line"


# ---- lines, comments, continuations --------------------------------------------------------

def test_instructions_keep_their_first_line_and_original_text():
    insts = parse("# comment\n\nFROM busybox AS Build\n  run   echo   hi  \nCMD [\"a\"]\n")
    assert [(i.cmd, i.line) for i in insts] == [("FROM", 3), ("RUN", 4), ("CMD", 5)]
    # What docker prints after "Step N/M :": trimmed, the keyword as written.
    assert insts[1].original == "run   echo   hi"
    assert insts[1].args == ["echo   hi"]


def test_continuation_lines_are_joined_without_the_backslash():
    # docker: Step 2/2 : RUN echo a   b   c  (comment and empty lines dropped, a warning)
    warnings: list[str] = []
    insts = parse("FROM x\nRUN echo a \\\n  b \\\n# comment in continuation\n\n  c\nENV A=1\n",
                  warnings)
    run = insts[1]
    assert run.original == "RUN echo a   b   c" and run.args == ["echo a   b   c"]
    assert (run.line, run.end_line) == (2, 6)
    assert insts[2].line == 7
    assert warnings[0] == "[WARNING]: Empty continuation line found in:\n    RUN echo a   b   c"
    assert "will become errors" in warnings[-1]


def test_a_comment_line_inside_a_continuation_ends_nothing():
    # docker: RUN echo "a \ + '  # comment" b' -> the second line is a comment: RUN echo "a
    assert one('RUN echo "a \\\n  # comment" b\n').args == ['echo "a']


def test_blanks_after_the_backslash_still_continue():
    assert one("RUN echo a \\  \t\n  b\n").original == "RUN echo a   b"


def test_an_escaped_backslash_at_the_end_does_not_continue():
    # docker: RUN echo a\\\\ (4 backslashes) and RUN echo a\\\ (3) end there; the next line is
    # an instruction of its own ("unknown instruction: B" for the 3-backslash case).
    insts = parse("FROM x\nRUN echo a\\\\\\\\\nRUN echo b\n")
    assert [i.original for i in insts[1:]] == ["RUN echo a\\\\\\\\", "RUN echo b"]
    assert error("FROM x\nRUN echo a\\\\\\\nb\n").line == 3


def test_a_line_of_only_a_backslash_joins_the_next():
    assert parse("FROM x\n\\\nRUN echo b\n")[1].original == "RUN echo b"


def test_continuation_at_end_of_file():
    assert one("ENV A=1 \\\n").pairs == [("A", "1")]


def test_windows_line_endings_and_bom():
    insts = parse("\ufeffFROM x\r\nENV A=1 \\\r\n  B=2\r\nRUN echo x\r\n")
    assert insts[1].original == "ENV A=1   B=2"
    assert insts[1].pairs == [("A", "1"), ("B", "2")]
    assert insts[2].args == ["echo x"]


def test_indented_comment_and_not_a_comment():
    # "ENV A=1 # x" is not a comment: docker: Syntax error - can't find = in "#"
    assert [i.cmd for i in parse("FROM x\n   # indented comment\nENV A=1\n")] == ["FROM", "ENV"]
    assert "can't find = in \"#\"" in str(error("FROM x\nENV A=1 # not a comment\n"))


def test_instructions_are_case_insensitive():
    assert [i.cmd for i in parse("from x\nenv A=1\nrUn true\n")] == ["FROM", "ENV", "RUN"]


def test_empty_and_comment_only_files():
    assert "empty" in str(error(""))
    # docker: failed to parse Dockerfile: file with no instructions
    assert "file with no instructions" in str(error("# hi\n\n   \n"))


def test_overlong_line():
    assert "max allowed size" in str(error("FROM x\nRUN " + "a" * 70000 + "\n"))


# ---- parser directives ---------------------------------------------------------------------

def test_escape_directive_backtick():
    # docker: ENV A=a\b B=a`b C="x`"y" -> A=a\b B=ab C=x"y; RUN echo a ` + b -> "RUN echo a   b"
    insts = parse('# escape=`\nFROM x\nENV A=a\\b B=a`b C="x`"y"\nRUN echo a `\n  b\n')
    env = insts[1]
    assert env.escape == "`"
    assert [(k, expand(v, {}, env.escape)) for k, v in env.pairs] == [
        ("A", "a\\b"), ("B", "ab"), ("C", 'x"y')]
    assert insts[2].original == "RUN echo a   b"


@pytest.mark.parametrize("text,honoured", [
    ("# escape=`\nFROM x\nENV A=a`b\n", True),
    ("#ESCAPE = ` \nFROM x\nENV A=a`b\n", True),           # any case, blanks around =
    ("  # escape=`\nFROM x\nENV A=a`b\n", True),           # leading blanks
    ("# syntax=docker/dockerfile:1\n# escape=`\nFROM x\nENV A=a`b\n", True),
    ("\n# escape=`\nFROM x\nENV A=a`b\n", False),          # a blank line ends directives
    ("# comment\n# escape=`\nFROM x\nENV A=a`b\n", False),  # so does a comment
    ("# foo=bar\n# escape=`\nFROM x\nENV A=a`b\n", False),  # or an unknown directive
    ("FROM x\n# escape=`\nENV A=a`b\n", False),            # or an instruction
])
def test_escape_directive_only_at_the_top(text, honoured):
    env = parse(text)[-1]
    assert expand(env.pairs[0][1], {}, env.escape) == ("ab" if honoured else "a`b")


def test_bad_directives():
    assert "invalid escape token 'x'" in str(error("# escape=x\nFROM x\n"))
    assert "only one escape parser directive" in str(error("# escape=`\n# escape=`\nFROM x\n"))
    assert "only one syntax parser directive" in str(error("# syntax=a\n# syntax=b\nFROM x\n"))


def test_heredocs_are_not_supported_by_the_classic_builder():
    # docker: dockerfile parse error line 3: unknown instruction: ECHO
    exc = error("FROM x\nRUN <<EOF\necho hi\nEOF\n")
    assert exc.line == 3 and "unknown instruction: ECHO" in str(exc)
    assert "BuildKit" in str(exc)


def test_unknown_instruction():
    exc = error("FROM x\nBOGUS x\n")
    assert exc.line == 2 and "unknown instruction: BOGUS" in str(exc)


def test_line_errors_come_before_argument_errors():
    # docker reports ENV's (line 3) before BOGUS (line 2): lines are split first.
    assert "ENV must have two arguments" in str(error("FROM x\nBOGUS\nENV A\n"))


# ---- stages --------------------------------------------------------------------------------

def test_from_forms():
    insts = parse("ARG B=x\nFROM --platform=linux/amd64 $B AS Build\nFROM build\n")
    assert insts[1].args == ["$B", "AS", "Build"] and insts[1].flags == {"platform": "linux/amd64"}
    assert "FROM requires either one or three arguments" in str(error("FROM\n"))
    assert "one or three" in str(error("FROM a b\n"))
    # docker: invalid name for build stage: "1bad", name can't start with a number or ...
    assert 'invalid name for build stage: "1bad"' in str(error("FROM x AS 1bad\n"))
    assert "Unknown flag: bogus" in str(error("FROM --bogus=1 x\n"))


def test_only_arg_before_from_and_unique_stage_names():
    # docker: no build stage in current context
    assert "no build stage in current context" in str(error("ENV A=1\nFROM x\n"))
    # docker: a stage name already used (at build time; the name is matched without case)
    exc = error("FROM x AS a\nFROM x AS A\n")
    assert exc.line == 2 and "a stage name already used" in str(exc)
    assert "no FROM" in str(error("ARG A=1\n"))


# ---- argument forms ------------------------------------------------------------------------

def test_exec_and_shell_forms():
    assert one('CMD [ "echo" , "a b" ]  ').args == ["echo", "a b"]
    assert one('CMD [ "echo" ]').json
    # Not JSON: the shell form, kept as written.
    assert one('CMD ["a" "b"]').args == ['["a" "b"]'] and not one('CMD ["a" "b"]').json
    assert one("CMD ['a']").args == ["['a']"]
    assert one('CMD ["a", ').args == ['["a",']
    # docker reads the first JSON value and ignores the rest: Entrypoint ["a"]
    assert one('ENTRYPOINT ["a"] x').args == ["a"]
    assert one('CMD ["a\\u00e9\\n"]').args == ["a\u00e9\n"]
    inst = one("CMD []")
    assert inst.args == [] and inst.json


def test_json_of_non_strings_is_an_error():
    # docker: when using JSON array syntax, arrays must be comprised of strings only
    assert "strings only" in str(error('FROM x\nCMD ["a", 1]\n'))
    assert "strings only" in str(error('FROM x\nRUN ["a", null]\n'))
    # NaN is not JSON (Go refuses it): the shell form.
    assert one("CMD [NaN]").args == ["[NaN]"]


def test_copy_add_volume_split_on_blanks_quotes_kept():
    assert one('COPY "a b" /x').args == ['"a', 'b"', "/x"]
    assert one('COPY ["a b", "/x/"]').args == ["a b", "/x/"]
    # docker: VOLUME /data ["/logs"] -> volumes /data and [/logs] (not JSON)
    assert one('VOLUME /data ["/logs"]').args == ["/data", '["/logs"]']


def test_one_string_instructions():
    # docker: USER a b -> "a b"; WORKDIR a b -> "/a b"
    assert one("USER a b").args == ["a b"]
    assert one("WORKDIR a b").args == ["a b"]
    assert one("MAINTAINER me <me@x>").args == ["me <me@x>"]


def test_argument_counts():
    assert "COPY requires at least two arguments" in str(error("FROM x\nCOPY Dockerfile\n"))
    assert "ADD requires at least two arguments" in str(error("FROM x\nADD --chown=1 f\n"))
    assert "VOLUME requires at least one argument" in str(error("FROM x\nVOLUME []\n"))
    assert "VOLUME specified can not be an empty string" in str(error('FROM x\nVOLUME [""]\n'))
    assert "EXPOSE requires at least one argument" in str(error("FROM x\nEXPOSE\n"))
    assert "STOPSIGNAL requires exactly one argument" in str(error("FROM x\nSTOPSIGNAL\n"))
    assert "SHELL requires the arguments to be in JSON form" in str(error("FROM x\nSHELL sh\n"))
    assert "SHELL requires at least one argument" in str(error("FROM x\nSHELL []\n"))
    assert "ONBUILD requires at least one argument" in str(error("FROM x\nONBUILD\n"))
    assert "ARG requires at least one argument" in str(error("FROM x\nARG\n"))
    assert "ENV requires at least one argument" in str(error("FROM x\nENV\n"))


def test_empty_run_and_cmd():
    # docker: RUN alone runs "/bin/sh -c" (which fails); CMD alone stores ["/bin/sh", "-c"]
    assert one("RUN").args == [] and not one("RUN").json
    assert one("CMD").args == []


# ---- ENV, LABEL, ARG -----------------------------------------------------------------------

def test_env_name_value_forms():
    inst = one('ENV A="a b"c D=e "K"=v E=a\\ b F= G==b')
    assert inst.pairs == [("A", '"a b"c'), ("D", "e"), ('"K"', "v"), ("E", "a\\ b"),
                          ("F", ""), ("G", "=b")]
    # docker: A=a bc D=e K=v E=a b F= G==b
    assert [(expand(k, {}), expand(v, {})) for k, v in inst.pairs] == [
        ("A", "a bc"), ("D", "e"), ("K", "v"), ("E", "a b"), ("F", ""), ("G", "=b")]


def test_env_old_form_keeps_the_rest_of_the_line():
    # docker: ENV OLD  x  "y z"  'q'   \$X -> OLD=x  y z  q   $X
    inst = one("ENV OLD  x  \"y z\"  'q'   \\$X")
    assert inst.pairs == [("OLD", "x  \"y z\"  'q'   \\$X")]
    assert expand(inst.pairs[0][1], {"X": "no"}) == "x  y z  q   $X"
    assert one("ENV A b=c").pairs == [("A", "b=c")]


def test_env_errors():
    assert "ENV must have two arguments" in str(error("FROM x\nENV A\n"))
    assert "LABEL must have two arguments" in str(error("FROM x\nLABEL a\n"))
    assert "can't find = in \"b\"" in str(error("FROM x\nLABEL a=1 b\n"))
    assert "ENV names can not be blank" in str(error("FROM x\nENV =x\n"))
    # A space inside ${...} splits the word: docker: can't find = in "b}"
    assert "can't find = in \"b}\"" in str(error("FROM x\nENV A=${X:-a b}\n"))


def test_label_forms():
    inst = one('LABEL "k 1"=v1 k2="a b" k3=a\\ b k4=\'$X\' k5="$X"')
    got = {expand(k, {"X": "x"}): expand(v, {"X": "x"}) for k, v in inst.pairs}
    assert got == {"k 1": "v1", "k2": "a b", "k3": "a b", "k4": "$X", "k5": "x"}


def test_arg_forms():
    inst = one('ARG A=$X B C="x y" D=')
    assert inst.pairs == [("A", "$X"), ("B", None), ("C", '"x y"'), ("D", "")]
    assert "ARG names can not be blank" in str(error("FROM x\nARG =x\n"))
    # ARG never looks at its flags: docker builds ARG --x=1 A
    assert one("ARG --x=1 A").pairs == [("A", None)]


# ---- flags ---------------------------------------------------------------------------------

def test_flags_are_parsed_per_instruction():
    inst = one('COPY --chown="a b" --from=build src /dst')
    assert inst.flags == {"chown": "a b", "from": "build"} and inst.args == ["src", "/dst"]
    assert one("COPY --chown=a\\ b f /x").flags == {"chown": "a b"}
    assert one("COPY --chown= f /x").flags == {"chown": ""}
    # -- ends the flags; a single dash is a source
    assert one("COPY -- --from=0 /x").args == ["--from=0", "/x"]
    assert one("COPY -chown=1 f /x").args == ["-chown=1", "f", "/x"]


@pytest.mark.parametrize("text,message", [
    ("COPY --chown 1:1 f /x", "Missing a value on flag: chown"),
    ("COPY --chown=1 --chown=2 f /x", "Duplicate flag specified: chown"),
    ("COPY --foo=1 f /x", "Unknown flag: foo"),
    ("COPY --CHOWN=1 f /x", "Unknown flag: CHOWN"),
    ("COPY --link f /x", "Unknown flag: link"),
    ("COPY --=x f /x", "Unknown flag: "),
    ("ADD --from=x f /x", "Unknown flag: from"),
    ("RUN --network=none true", "Unknown flag: network"),
    ("RUN --security=insecure true", "Unknown flag: security"),
    ("RUN --mount true", "Missing a value on flag: mount"),
    ("ENV --x=1 A=1", "Unknown flag: x"),
    ("WORKDIR --x=1 /a", "Unknown flag: x"),
    ("CMD --x=1 echo", "Unknown flag: x"),
    ("EXPOSE --x=1 80", "Unknown flag: x"),
    ("ONBUILD --x=1 RUN true", "Unknown flag: x"),
    ("MAINTAINER --x=1 me", "Unknown flag: x"),
    ("HEALTHCHECK --start-interval=1s CMD true", "Unknown flag: start-interval"),
    ("HEALTHCHECK --interval=1s --interval=2s CMD true", "Duplicate flag specified: interval"),
])
def test_flag_errors(text, message):
    exc = error("FROM x\n" + text + "\n")
    assert exc.line == 2 and message in str(exc)


def test_flags_docker_reads_but_refuses_later():
    # --mount and --chmod parse; the builder then says they need BuildKit, as docker does.
    assert one("RUN --mount=type=cache,target=/x true").flags == {"mount": "type=cache,target=/x"}
    assert one("COPY --chmod=755 f /x").flags == {"chmod": "755"}
    assert one("ADD --chmod=755 f /x").flags == {"chmod": "755"}


def test_flags_ignored_where_docker_ignores_them():
    assert one("STOPSIGNAL --x=1 9").args == ["9"]
    assert one("HEALTHCHECK --bogus=5s NONE").args == ["NONE"]


# ---- HEALTHCHECK and ONBUILD ---------------------------------------------------------------

def test_healthcheck_forms():
    inst = one("HEALTHCHECK --interval=1m30s --timeout=5s --start-period=2s --retries=3 "
               'CMD ["true"]')
    assert inst.next.cmd == "CMD" and inst.next.args == ["true"] and inst.next.json
    assert df.healthcheck(inst) == {"Test": ["CMD", "true"], "Interval": 90_000_000_000,
                                    "Timeout": 5_000_000_000, "StartPeriod": 2_000_000_000,
                                    "Retries": 3}
    shell = one("HEALTHCHECK cmd  curl -f x || exit 1")
    assert df.healthcheck(shell) == {"Test": ["CMD-SHELL", "curl -f x || exit 1"]}
    none = one("HEALTHCHECK none")
    assert none.args == ["NONE"] and none.next is None
    assert df.healthcheck(none) == {"Test": ["NONE"]}
    exact = one('HEALTHCHECK --interval=1h2m3.5s CMD ["a", "b"]')
    assert df.healthcheck(exact) == {"Test": ["CMD", "a", "b"], "Interval": 3_723_500_000_000}


def test_merge_healthcheck_keeps_what_the_image_below_had():
    # tests/dockerfiles/healthcheck: docker stores NONE with the durations from below.
    first = df.healthcheck(one("HEALTHCHECK --interval=1m30s --timeout=5s --start-period=2s "
                               "--retries=3 CMD test -e /etc/passwd || exit 1"))
    second = df.merge_healthcheck(df.healthcheck(one('HEALTHCHECK --interval=10s CMD ["true"]')),
                                  first)
    assert second == {"Test": ["CMD", "true"], "Interval": 10_000_000_000,
                      "Timeout": 5_000_000_000, "StartPeriod": 2_000_000_000, "Retries": 3}
    assert df.merge_healthcheck(df.healthcheck(one("HEALTHCHECK NONE")), second) == {
        **second, "Test": ["NONE"]}
    assert df.merge_healthcheck({"Test": ["NONE"]}, None) == {"Test": ["NONE"]}


@pytest.mark.parametrize("text,message", [
    ("HEALTHCHECK --interval=0.5ms CMD true", 'Interval "interval" cannot be less than 1ms'),
    ("HEALTHCHECK --interval=0s CMD true", 'Interval "interval" cannot be less than 1ms'),
    ("HEALTHCHECK --timeout=5 CMD true", 'time: missing unit in duration "5"'),
    ("HEALTHCHECK --retries=-1 CMD true", "--retries must be at least 1 (not -1)"),
    ("HEALTHCHECK --retries=0 CMD true", "--retries must be at least 1 (not 0)"),
    ("HEALTHCHECK --retries=x CMD true", 'strconv.ParseInt: parsing "x": invalid syntax'),
    ("HEALTHCHECK FOO true", 'Unknown type "FOO" in HEALTHCHECK (try CMD)'),
    ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
    ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
    ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
])
def test_healthcheck_errors(text, message):
    exc = error("FROM x\n" + text + "\n")
    assert exc.line == 2 and message in str(exc)


def test_onbuild():
    inst = one("ONBUILD   RUN echo $X   ")
    # docker stores "RUN echo $X   " in OnBuild: ONBUILD and the blanks after it go.
    assert inst.args == ["RUN echo $X   "]
    assert inst.next.cmd == "RUN" and inst.next.args == ["echo $X"]
    assert one("ONBUILD COPY --chown=1:1 a b").args == ["COPY --chown=1:1 a b"]
    # The trigger's own problems wait until a child build runs it (docker builds these):
    assert one("ONBUILD COPY --bogus=1 a b").next.raw_flags == ["--bogus=1"]
    assert one("ONBUILD BOGUS x").next.cmd == "BOGUS"


@pytest.mark.parametrize("text,message", [
    ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
    ("ONBUILD MAINTAINER x", "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("ONBUILD ENV A", "ENV must have two arguments"),
])
def test_onbuild_errors(text, message):
    assert message in str(error("FROM x\n" + text + "\n"))


def test_parse_trigger():
    inst = df.parse_trigger("COPY --chown=1:1 a b")
    assert inst.cmd == "COPY" and inst.flags == {"chown": "1:1"}
    with pytest.raises(DockerfileError, match="unknown instruction: BOGUS"):
        df.parse_trigger("BOGUS x")
    with pytest.raises(DockerfileError, match="Unknown flag: bogus"):
        df.parse_trigger("COPY --bogus=1 a b")


# ---- substitution --------------------------------------------------------------------------

ENV = {"X": "hello", "E": ""}


@pytest.mark.parametrize("word,expected", [
    ("$X", "hello"), ("${X}", "hello"), ("${X}_y", "hello_y"), ("$X_y", ""),
    ("${X:+alt}", "alt"), ("${E:+alt}", ""), ("${U:+alt}", ""),
    ("${X:-d}", "hello"), ("${E:-d}", "d"), ("${U:-d}", "d"),
    ("${X:?e}", "hello"), ("${X?err}", "hello"), ("${E?err}", ""),
    ("${X:-${X}}", "hello"), ("${U:-\"a b\"}", "a b"), ("${U:-'a b'}", "a b"),
    ("${U:-\\}}", "}"), ('"${U:-"x"}"', "x"), ("${X}}", "hello}"), ("${X:-}", "hello"),
    ("${X:+}", ""),
    # names: digits run on, and one special character is a name of its own
    ("$1", ""), ("$12", ""), ("$1x", "x"), ("${12}", ""), ("$$", ""), ("$@", ""), ("${$}", ""),
    ("$*", ""), ("$#", ""), ("$?", ""), ("$-", ""), ("$!", ""), ("$0", ""), ("$_a", ""),
    ("$Xé", ""), ("$", "$"), ("a$", "a$"),
    # quotes and escapes
    ("\\$X", "$X"), ('"$X"', "hello"), ("'$X'", "$X"), ('"a\\"b"', 'a"b'), ('"a\\\\b"', "a\\b"),
    ('"a\\xb"', "a\\xb"), ("a\\xb", "axb"), ("'a\\b'", "a\\b"), ('"$X\\$X"', "hello$X"),
    ("a\\", "a"),
])
def test_expand(word, expected):
    assert expand(word, ENV) == expected


@pytest.mark.parametrize("word,message", [
    ("${X-def}", "missing ':' in substitution"),
    ("${X+alt}", "missing ':' in substitution"),
    ("${X#he}", "missing ':' in substitution"),
    ("${X%lo}", "missing ':' in substitution"),
    ("${X/l/L}", "missing ':' in substitution"),
    ("${#X}", "missing ':' in substitution"),
    ("${X", "missing ':' in substitution"),
    ("${X:1}", "unsupported modifier (1) in substitution"),
    ("${X:=a}", "unsupported modifier (=) in substitution"),
    ("${}", "syntax error: bad substitution"),
    ("${:X}", "syntax error: bad substitution"),
    ("${{X}}", "syntax error: bad substitution"),
    ("${X:}", "syntax error: missing '}'"),
    ("${", "syntax error: missing '}'"),
    ("${U?err}", "U: err"),
    ("${U?}", "U: is not allowed to be unset"),
    ("${U:?}", "U: is not allowed to be unset"),
    ("${E:?err}", "E: err"),
    ("${E:?}", "E: is not allowed to be empty"),
    ('"a', "unexpected end of statement while looking for matching double-quote"),
    ("'a", "unexpected end of statement while looking for matching single-quote"),
])
def test_expand_errors(word, message):
    with pytest.raises(DockerfileError) as info:
        expand(word, ENV)
    # docker: failed to process "${X-def}": missing ':' in substitution
    assert f"failed to process {df._go_quote(word)}: {message}" in str(info.value)


def test_expand_with_backtick_escape():
    assert expand("a`$X", ENV, "`") == "a$X"
    assert expand("a\\b", ENV, "`") == "a\\b"
    assert expand('"a`"b"', ENV, "`") == 'a"b'


def test_expand_words_splits_values_not_quotes():
    env = {"P": "80 443/udp", "Q": "  spaced  "}
    assert expand_words("$P 9", env) == ["80", "443/udp", "9"]
    assert expand_words('"$P" x', env) == ["80 443/udp", "x"]
    assert expand_words("a$Q", env) == ["a", "spaced"]
    assert expand_words('"" x', env) == ["x"]


def test_substitution_table():
    assert df.substitutes("copy") and df.substitutes("ENV") and df.substitutes("ARG")
    for cmd in ("RUN", "CMD", "ENTRYPOINT", "SHELL", "HEALTHCHECK", "ONBUILD", "MAINTAINER"):
        assert not df.substitutes(cmd)


def test_expand_instruction_as_the_builder_does():
    env = {"X": "hello", "P": "80 443/udp", "U": "nobody"}
    # every value of one ENV sees the env from before it: docker: ENV a=1 b=$a -> b=
    inst = df.expand_instruction(one("ENV a=1 b=$a c=$X"), env)
    assert inst.pairs == [("a", "1"), ("b", ""), ("c", "hello")]
    assert df.expand_instruction(one("EXPOSE $P 9"), env).args == ["80", "443/udp", "9"]
    copy = df.expand_instruction(one("COPY --chown=$U --from=$X $X.txt /$X/"), env)
    # docker does not substitute --from: "invalid from flag value $X"
    assert copy.flags == {"chown": "nobody", "from": "$X"} and copy.args == ["hello.txt",
                                                                            "/hello/"]
    assert df.expand_instruction(one("USER $X:$X"), env).args == ["hello:hello"]
    assert df.expand_instruction(one("RUN echo $X"), env).args == ["echo $X"]
    assert df.expand_instruction(parse("ARG B\nFROM ${B:-x}")[1], {}).args == ["x"]
    # quotes inside JSON are processed too: docker: failed to process "Docker'file"
    with pytest.raises(DockerfileError, match="single-quote") as info:
        df.expand_instruction(one('COPY ["Docker\'file", "/x"]'), env)
    assert info.value.line == 2


# ---- EXPOSE, durations, signals ------------------------------------------------------------

def test_expose_ports():
    assert df.expose_ports(["80", "443/udp", "8000-8002/tcp", "53/UDP", "82/Tcp", "81/sctp"]) == [
        "443/udp", "53/udp", "80/tcp", "8000/tcp", "8001/tcp", "8002/tcp", "81/sctp", "82/tcp"]
    # docker: the host part is checked, then ignored; "80/" is 80/tcp; 0 is allowed
    assert df.expose_ports(["127.0.0.1:80:80", "8080:81", "82/", "0", "65535"]) == [
        "0/tcp", "65535/tcp", "80/tcp", "81/tcp", "82/tcp"]


@pytest.mark.parametrize("spec,message", [
    ("abc", "Invalid containerPort: abc"), ("65536", "Invalid containerPort: 65536"),
    ("8002-8000", "Invalid containerPort: 8002-8000"), ("80/xyz", "Invalid proto: xyz"),
    ("1.2.3.4:80", "Invalid hostPort: 1.2.3.4"), ("", "No port specified"),
])
def test_expose_errors(spec, message):
    with pytest.raises(DockerfileError, match=message.replace(".", r"\.")):
        df.expose_ports([spec])


@pytest.mark.parametrize("text,ns", [
    ("30s", 30_000_000_000), ("1m30s", 90_000_000_000), ("1.5h", 5_400_000_000_000),
    ("250ms", 250_000_000), ("10us", 10_000), ("1µs", 1_000), ("0", 0), ("-1s", -10 ** 9),
    ("1h2m3.5s", 3_723_500_000_000), (".5s", 500_000_000),
])
def test_duration_ns(text, ns):
    assert df.duration_ns(text) == ns


@pytest.mark.parametrize("text,message", [
    ("5", 'time: missing unit in duration "5"'), ("", 'time: invalid duration ""'),
    ("x", 'time: invalid duration "x"'), ("1d", 'time: unknown unit "d" in duration "1d"'),
    (".s", 'time: invalid duration ".s"'),
])
def test_duration_errors(text, message):
    with pytest.raises(DockerfileError, match=message):
        df.duration_ns(text)


def test_stop_signal():
    # docker accepts these (and stores them as written)...
    assert df.stop_signal("SIGQUIT") == 3 and df.stop_signal("KILL") == 9
    assert df.stop_signal("sigterm") == 15 and df.stop_signal("9") == 9
    assert df.stop_signal("99") == 99 and df.stop_signal("-1") == -1
    assert df.stop_signal("SIGRTMIN+3") == 37 and df.stop_signal("RTMAX-3") == 61
    # ...and refuses these: "Invalid signal: SIGFOO"
    for bad in ("SIGFOO", "0", "SIGUNUSED", ""):
        with pytest.raises(DockerfileError, match="Invalid signal"):
            df.stop_signal(bad)
