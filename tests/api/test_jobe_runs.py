"""The Jobe face's runs through a real server: every outcome, every parameter,
Jobe's output rules, Java's class naming, and a fresh kernel for every run.

The programs and expectations of Jobe's own test client (testsubmit.py's
TEST_SET, docs/reference/jobe.md §6) are checked here case by case, written
anew; the server is the one CodeRunner would call, key-less from loopback.
"""

from __future__ import annotations

import signal
import textwrap

import pytest
from helpers.api_server import start_server, stop_server
from helpers.jobe import Jobe, settle, steady

C_HELLO = '#include <stdio.h>\nint main(void) { printf("Hello world\\nIsn\'t this fun!\\n"); }\n'
JAVA_TEST = textwrap.dedent("""\
    public class Test {
        public static void main(String[] args) {
            System.out.println("What a lot of code I need to write.");
        }
    }
""")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, server = start_server(
        str(tmp_path_factory.mktemp("jobe-data")), config='[faces]\nenabled = ["jobe"]\n'
    )
    yield server
    stop_server(proc)


@pytest.fixture(scope="module")
def jobe(server):
    return Jobe(server.endpoint, key="2AAA7A5415B4A9B394B54BF1D2E9D")  # testsubmit's key


def test_languages_are_jobe_pairs(jobe):
    r = jobe.http.get("/jobe/index.php/restapi/languages")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    pairs = r.json()
    assert all(isinstance(p, list) and len(p) == 2 for p in pairs), pairs
    served = dict(pairs)
    assert {"c", "cpp", "python3", "java", "nodejs", "php", "pascal"} <= set(served)
    assert served["python3"].startswith("3.")
    assert all(v and v[0].isdigit() for v in served.values()), served
    for path in ("/jobe/index.php/restapi/languages/", "/restapi/languages"):
        assert jobe.http.get(path).json() == pairs


# (comment, run_spec, expected outcome, expected stdout or None)
REFERENCE = [
    ("python3 hello", dict(language_id="python3", sourcefilename="test.py",
        sourcecode='print("Hello world!")\n'), 15, "Hello world!\n"),
    ("python3 stdin", dict(language_id="python3", sourcefilename="test.py",
        sourcecode="print(input())\nprint(input())\n", input="Line1\nLine2\n"),
        15, "Line1\nLine2\n"),
    ("python3 syntax error", dict(language_id="python3", sourcefilename="test.py",
        sourcecode='print("Hello world!"\n'), 11, ""),
    ("python3 runtime error", dict(language_id="python3", sourcefilename="test.py",
        sourcecode="data = []\nprint(data[1])\n"), 12, ""),
    ("python3 file i/o in the work directory", dict(language_id="python3",
        sourcefilename="test.py", sourcecode=(
            "with open('testoutput.txt', 'w') as f: f.write('One fish\\nTwo fish\\n')\n"
            "print(open('testoutput.txt').read(), end='')\n")), 15, "One fish\nTwo fish\n"),
    ("python3 interpreter args, read by the shell", dict(language_id="python3",
        sourcefilename="test.py", sourcecode="",
        parameters={"interpreterargs": ['-c "print(\\"Blah\\")"']}), 15, "Blah\n"),
    ("python3 runargs", dict(language_id="python3", sourcefilename="test.py",
        sourcecode="import sys\nfor arg in sys.argv[1:]: print(arg)\n",
        parameters={"runargs": ["Arg1", "Arg2"]}), 15, "Arg1\nArg2\n"),
    ("python3 a 10 s busy wait within cputime 15", dict(language_id="python3",
        sourcefilename="test.py", sourcecode=(
            "from time import perf_counter\nt = perf_counter()\n"
            "while perf_counter() < t + 10: pass\nprint('Hello Python')\n"),
        parameters={"cputime": 15}), 15, "Hello Python\n"),
    ("python3 utf-8 output", dict(language_id="python3", sourcefilename="test.py",
        sourcecode='print("Un rôle délétère")\n'), 15, "Un rôle délétère\n"),
    ("c hello", dict(language_id="c", sourcefilename="prog.c", sourcecode=C_HELLO),
        15, "Hello world\nIsn't this fun!\n"),
    ("c compile error", dict(language_id="c", sourcefilename="prog.c",
        sourcecode="int main(void) { return 0 }\n"), 11, ""),
    ("c compileargs replace the defaults", dict(language_id="c", sourcefilename="prog.c",
        sourcecode=C_HELLO, parameters={"compileargs": ["std=c89"]}), 11, ""),
    ("c null pointer", dict(language_id="c", sourcefilename="prog.c",
        sourcecode="int main(void) { int *p = 0; *p = 10; return *p; }\n"), 12, ""),
    ("c cpu time limit", dict(language_id="c", sourcefilename="prog.c",
        sourcecode="int main(void) { while (1) {} }\n", parameters={"cputime": 2}), 13, ""),
    ("c output flood until the time limit", dict(language_id="c", sourcefilename="prog.c",
        sourcecode='#include <stdio.h>\nint main(void) { while (1) printf("Hello"); }\n',
        parameters={"cputime": 2}), 13, None),
    ("c malloc beyond memorylimit returns NULL", dict(language_id="c",
        sourcefilename="prog.c", sourcecode=(
            "#include <stdio.h>\n#include <stdlib.h>\nint main(void) {\n"
            "  if (malloc(2000000000) == NULL) printf(\"Memory limit worked\\n\");\n"
            "  else printf(\"Memory limit failed\\n\");\n}\n")), 15, "Memory limit worked\n"),
    ("c infinite recursion", dict(language_id="c", sourcefilename="prog.c",
        sourcecode="int f(int n) { return f(n + 1) + 1; }\nint main(void) { return f(0); }\n",
        parameters={"compileargs": ["-O0"]}), 12, ""),
    ("c non-utf-8 output", dict(language_id="c", sourcefilename="prog.c",
        sourcecode="#include <stdio.h>\n"
                   'int main(void) { printf("Hello world\\n\\01\\006\\300\\311\\n"); }\n'),
        15, "Hello world\n\\x01\\x06\\xc0\\xc9\n"),
    ("nodejs hello", dict(language_id="nodejs", sourcefilename="test.js",
        sourcecode='console.log("Hello world!");\n', parameters={"memorylimit": 1000000}),
        15, "Hello world!\n"),
    ("nodejs syntax error is a runtime error", dict(language_id="nodejs",
        sourcefilename="test.js", sourcecode='console.log("Hello world!);\n',
        parameters={"memorylimit": 1000000}), 12, ""),
    ("php page", dict(language_id="php", sourcefilename="test.php",
        sourcecode='<p><?php echo "A paragraph"; ?></p>\n', parameters={"cputime": 15}),
        15, "<p>A paragraph</p>\n"),
    ("php syntax error", dict(language_id="php", sourcefilename="test.php",
        sourcecode='<?php echo "x"\necho 1;\n', parameters={"cputime": 15}), 11, ""),
    ("java hello", dict(language_id="java", sourcefilename="Test.java",
        sourcecode=JAVA_TEST, parameters={"cputime": 10}),
        15, "What a lot of code I need to write.\n"),
    ("java class inferred from the source", dict(language_id="java",
        sourcecode=JAVA_TEST, parameters={"cputime": 10}),
        15, "What a lot of code I need to write.\n"),
    ("java syntax error", dict(language_id="java", sourcefilename="Test.java",
        sourcecode=JAVA_TEST.replace(";", "", 1), parameters={"cputime": 10}), 11, ""),
    ("java unicode output", dict(language_id="java", sourcefilename="Test.java",
        sourcecode=JAVA_TEST.replace("What a lot of code I need to write.", "Un rôle délétère"),
        parameters={"cputime": 10}), 15, "Un rôle délétère\n"),
    ("cpp hello", dict(language_id="cpp", sourcefilename="prog.cpp", sourcecode=(
        "#include <iostream>\n"
        "int main() { std::cout << \"Hello world\\nIsn't this fun!\\n\"; }\n")),
        15, "Hello world\nIsn't this fun!\n"),
    ("c++ in a c run is a compile error", dict(language_id="c", sourcefilename="prog.c",
        sourcecode="#include <iostream>\nint main() { std::cout << 1; }\n"), 11, ""),
    ("pascal hello", dict(language_id="pascal", sourcefilename="prog.pas",
        sourcecode="program hello;\nbegin\n  writeln('Hello world!');\nend.\n"),
        15, "Hello world!\n"),
    ("pascal unterminated string", dict(language_id="pascal", sourcefilename="prog.pas",
        sourcecode="program hello;\nbegin\n  writeln('Hello world!);\nend.\n"), 11, ""),
]  # fmt: skip


@pytest.mark.parametrize("case", REFERENCE, ids=[c[0] for c in REFERENCE])
def test_jobe_reference_cases(jobe, case):
    comment, spec, outcome, stdout = case
    result = jobe.run(**spec)
    assert result["outcome"] == outcome, result
    if stdout is not None:
        assert result["stdout"] == stdout, result
    if outcome == 11:
        assert result["cmpinfo"], result
        assert result["stdout"] == result["stderr"] == ""
    else:
        assert result["cmpinfo"] == ""
    if outcome != 12 or comment in ("c null pointer", "c infinite recursion"):
        assert result["stderr"] == "", result  # nothing of ours; a SIGSEGV's is dropped
    assert result["run_id"] is None


def test_compile_error_names_the_error(jobe):
    result = jobe.run(language_id="c", sourcecode="int main(void) { return x; }\n")
    assert result["outcome"] == 11 and "error:" in result["cmpinfo"], result
    result = jobe.run(language_id="python3", sourcecode="def f(:\n")
    assert result["outcome"] == 11 and "SyntaxError" in result["cmpinfo"], result


def test_runtime_error_keeps_the_traceback_and_stdout(jobe):
    result = jobe.run(language_id="python3", sourcecode="print('before')\n1 / 0\n")
    assert result["outcome"] == 12
    assert result["stdout"] == "before\n"
    assert "ZeroDivisionError" in result["stderr"]


def test_the_exit_code_is_ignored_without_stderr(jobe):
    result = jobe.run(language_id="python3", sourcecode="print('x')\nraise SystemExit(3)\n")
    assert (result["outcome"], result["stdout"], result["stderr"]) == (15, "x\n", "")
    result = jobe.run(language_id="c", sourcecode="int main(void) { return 7; }\n")
    assert result["outcome"] == 15


def test_any_stderr_is_a_runtime_error(jobe):
    result = jobe.run(
        language_id="python3", sourcecode="import sys\nprint('ok')\nsys.stderr.write('warn')\n"
    )
    assert (result["outcome"], result["stdout"], result["stderr"]) == (12, "ok\n", "warn")


def test_wall_time_limit_is_twice_cputime_and_keeps_stdout(jobe):
    result = jobe.run(
        language_id="python3",
        sourcecode="import sys, time\nprint('started', flush=True)\n"
        "sys.stderr.write('noise')\ntime.sleep(30)\n",
        parameters={"cputime": 1},
    )
    assert (result["outcome"], result["stdout"], result["stderr"]) == (13, "started\n", "")


def test_a_signal_other_than_segv_is_named_on_stderr(jobe):
    result = jobe.run(
        language_id="c", sourcecode="#include <stdlib.h>\nint main(void) { abort(); }\n"
    )
    assert result["outcome"] == 12
    assert f"signal {signal.SIGABRT}" in result["stderr"], result


def test_out_of_kernel_memory_is_outcome_17(jobe):
    result = jobe.run(
        language_id="python3",
        sourcecode="print('allocating', flush=True)\nx = bytearray(1500 * 1024 * 1024)\n",
        parameters={"memorylimit": 0},  # no RLIMIT_AS: the kernel's memory limit strikes
    )
    assert (result["outcome"], result["stdout"]) == (17, "allocating\n"), result


def test_a_foreign_syscall_abi_is_outcome_19(jobe):
    code = (
        'int main(void) { int r; __asm__ volatile("int $0x80" : "=a"(r) : "a"(20)); return r; }\n'
    )
    result = jobe.run(language_id="c", sourcecode=code)
    assert result["outcome"] == 19, result


def test_streamsize_truncates_each_stream_silently(jobe):
    result = jobe.run(
        language_id="python3",
        sourcecode="import sys\nsys.stdout.write('o' * 3_000_000)\nsys.stdout.flush()\n",
        parameters={"streamsize": 1},
    )
    assert result["outcome"] == 15
    assert result["stdout"] == "o" * 1_024_000  # 1 MB as Jobe counts it: 1000 x 1024


def test_truncation_inside_a_utf8_character_escapes_the_bytes(jobe):
    result = jobe.run(
        language_id="python3",
        sourcecode="print('x' + 'é' * 600_000, end='')\n",  # the cut falls inside an é
        parameters={"streamsize": 1},
    )
    assert result["outcome"] == 15
    assert result["stdout"] == "x" + "\\xc3\\xa9" * 511_999 + "\\xc3"


def test_disklimit_stops_a_large_file(jobe):
    result = jobe.run(
        language_id="c",
        sourcecode='#include <stdio.h>\nint main(void) { FILE *f = fopen("big", "w");\n'
        "  for (int i = 0; i < 3000000; i++) fputc('x', f);\n  fclose(f); puts(\"done\"); }\n",
        parameters={"disklimit": 1},
    )
    assert result["outcome"] == 12
    assert f"signal {signal.SIGXFSZ}" in result["stderr"], result


def test_numprocs_bounds_forks(jobe):
    code = textwrap.dedent("""\
        #include <stdio.h>
        #include <stdlib.h>
        #include <sys/types.h>
        #include <unistd.h>
        int main(void) {
            int made = 0;
            for (int i = 0; i < 200; i++) {
                pid_t pid = fork();
                if (pid == 0) { sleep(3); _exit(0); }
                if (pid > 0) made++;
            }
            printf("%d\\n", made);
            return 0;
        }
    """)
    result = jobe.run(language_id="c", sourcecode=code, parameters={"numprocs": 10})
    assert result["outcome"] == 15, result
    assert 1 <= int(result["stdout"]) <= 10, result


def test_linkargs_follow_the_source(jobe):
    code = (
        "#include <math.h>\n#include <stdio.h>\n"
        'int main(int c, char **v) { printf("%.1f\\n", sqrt(c * 16.0)); }\n'
    )
    assert jobe.run(language_id="c", sourcecode=code)["outcome"] == 11  # no -lm
    result = jobe.run(language_id="c", sourcecode=code, parameters={"linkargs": ["-lm"]})
    assert (result["outcome"], result["stdout"]) == (15, "4.0\n"), result


def test_coderunner_source_names_work_in_every_language(jobe):
    programs = {
        "python3": "print(6 * 7)\n",
        "c": '#include <stdio.h>\nint main(void) { printf("42\\n"); }\n',
        "cpp": "#include <iostream>\nint main() { std::cout << 42 << std::endl; }\n",
        "nodejs": "console.log(42);\n",
        "php": '<?php echo 42, "\\n";\n',
        "pascal": "program p;\nbegin\n  writeln(42);\nend.\n",
    }
    for lang, code in programs.items():
        result = jobe.run(
            language_id=lang, sourcecode=code, sourcefilename=f"__tester__.{lang}",
            parameters={"memorylimit": 1000}, input="ignored\n",
        )  # fmt: skip
        assert (result["outcome"], result["stdout"]) == (15, "42\n"), (lang, result)


def test_java_class_names(jobe):
    code = JAVA_TEST.replace("class Test", "class HelloWorld")
    for name in (None, "HelloWorld.java", "prog.java"):  # prog.java: ignored, as Jobe does
        spec = {"language_id": "java", "sourcecode": code}
        if name:
            spec["sourcefilename"] = name
        result = jobe.run(**spec)
        assert result["outcome"] == 15, (name, result)
    two = code + "\npublic class Other { public static void main(String[] a) {} }\n"
    result = jobe.run(language_id="java", sourcecode=two)  # not exactly one: prog.java
    assert result["outcome"] == 11, result
    result = jobe.run(
        language_id="java", sourcecode=code, sourcefilename="HelloWorld.java",
        parameters={"main_class": "HelloWorld"},
    )  # fmt: skip
    assert result["outcome"] == 15


def test_language_id_is_case_insensitive(jobe):
    assert jobe.run(language_id="Python3", sourcecode="print(1)\n")["stdout"] == "1\n"


def test_input_zero_means_no_input_as_in_jobe(jobe):
    code = "import sys\nprint(repr(sys.stdin.read()))\n"
    assert jobe.run(language_id="python3", sourcecode=code, input="0")["stdout"] == "''\n"
    assert jobe.run(language_id="python3", sourcecode=code, input="01")["stdout"] == "'01'\n"


def test_every_run_gets_a_fresh_kernel(jobe):
    code = (
        "import os\nlisted = sorted(set(os.listdir('.')) - {'__pycache__'})  # py_compile's\n"
        "print(listed, os.path.exists('/tmp/mark'))\n"
        "open('mark', 'w').close(); open('/tmp/mark', 'w').close()\n"
    )
    first = jobe.run(language_id="python3", sourcecode=code, sourcefilename="t.py")
    second = jobe.run(language_id="python3", sourcecode=code, sourcefilename="t.py")
    assert first["stdout"] == second["stdout"] == "['t.py'] False\n"


def test_nothing_is_left_after_runs(server, jobe):
    before = steady(server)
    jobe.run(
        language_id="c",
        sourcecode="#include <unistd.h>\n"
        "int main(void) { if (fork() == 0) sleep(100); return 0; }\n",
    )
    jobe.run(
        language_id="python3",
        sourcecode="import time\ntime.sleep(100)\n",
        parameters={"cputime": 1},
    )
    assert settle(server, before) == before
