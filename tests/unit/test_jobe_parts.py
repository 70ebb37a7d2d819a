"""The Jobe face's pure parts: output cleaning, run_spec parameters, the file
cache's bound."""

from __future__ import annotations

import json
import os
import time

import pytest

from server.faces.jobe.file_cache import FileCache
from server.faces.jobe.outcomes import clean
from server.faces.jobe.run_spec import JobeError, parse

SERVED = {"c": "12", "python3": "3.11", "java": "17"}


def spec(**fields) -> bytes:
    return json.dumps({"run_spec": {"language_id": "c", "sourcecode": "", **fields}}).encode()


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"plain\n", "plain\n"),
        ("Un rôle\n".encode(), "Un rôle\n"),
        (b"\x01\x7f ok", "\x01\x7f ok"),  # valid UTF-8 stays as it is
        (b"Hello world\n\x01\x06\xc0\xc9\n", "Hello world\n\\x01\\x06\\xc0\\xc9\n"),
        ("é".encode() + b"\xff\t\r", "\\xc3\\xa9\\xff\t\r"),  # invalid: every byte escaped
    ],
)
def test_clean_is_jobes(data, text):
    assert clean(data) == text


def test_parameters_defaults_and_jobe_quirks():
    p = parse(spec(), SERVED, 120).params
    assert (p.cputime, p.memorylimit, p.streamsize, p.numprocs, p.disklimit) == (5, 400, 2, 30, 20)
    assert p.compileargs == ("-Wall", "-Werror", "-std=c99", "-x c")
    p = parse(spec(parameters={"cputime": "7", "streamsize": 500, "numprocs": -3}), SERVED, 120)
    assert (p.params.cputime, p.params.streamsize, p.params.numprocs) == (7, 8, 1)
    compile_params = p.params.for_compile()
    assert (compile_params.cputime, compile_params.memorylimit, compile_params.numprocs) == (
        7, 500, 5,
    )  # fmt: skip
    java = parse(spec(language_id="java", parameters={"memorylimit": 100}), SERVED, 120).params
    assert (java.memorylimit, java.numprocs) == (0, 256)
    assert parse(spec(language_id="python3"), SERVED, 120).params.memorylimit == 1000


def test_source_names():
    assert parse(spec(), SERVED, 120).sourcefilename == "prog.c"
    assert parse(spec(sourcefilename="prog.java"), SERVED, 120).sourcefilename == "prog.c"
    assert parse(spec(sourcefilename="my prog%.c"), SERVED, 120).sourcefilename == "my prog%.c"
    java = "public class Hi {\n public static void main(String[] a) {}\n}\n"
    found = parse(spec(language_id="java", sourcecode=java), SERVED, 120)
    assert (found.sourcefilename, found.main_class) == ("Hi.java", "Hi")
    none = parse(spec(language_id="java", sourcecode="class Hi {}"), SERVED, 120)
    assert none.sourcefilename == "prog.java"
    for bad in ("a/b.c", "-x.c", "a;b.c", "a\x00.c", "x" * 201):
        with pytest.raises(JobeError, match="sourcefilename"):
            parse(spec(sourcefilename=bad), SERVED, 120)


def test_unserved_language_is_unknown():
    with pytest.raises(JobeError, match="Language 'pascal' is not known"):
        parse(spec(language_id="PASCAL"), SERVED, 120)


def test_file_cache_keeps_the_recently_used_within_its_bound(tmp_path):
    cache = FileCache(str(tmp_path / "files"), max_bytes=2500)
    for n, file_id in enumerate(("aaaa", "bbbb", "cccc")):
        cache.put(file_id, b"x" * 1000)
        os.utime(os.path.join(cache.directory, file_id), (n, n))  # oldest first
    assert not cache.has("aaaa")  # past the bound: the least recently used went
    assert cache.get("bbbb") == b"x" * 1000  # a use: now the newest
    time.sleep(0.01)
    cache.put("dddd", b"y" * 1000)
    assert (cache.has("bbbb"), cache.has("cccc"), cache.has("dddd")) == (True, False, True)
    with pytest.raises(ValueError):
        cache.put("../x", b"")
    assert cache.get("../x") is None and not cache.has("no-such")


def test_file_cache_drops_half_written_files_at_start(tmp_path):
    directory = tmp_path / "files"
    directory.mkdir()
    (directory / "abcd.123.part").write_bytes(b"half")
    (directory / "abcd").write_bytes(b"whole")
    cache = FileCache(str(directory), max_bytes=10_000)
    assert sorted(os.listdir(directory)) == ["abcd"] and cache.get("abcd") == b"whole"
