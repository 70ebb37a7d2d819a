"""Every language over HTTP: query mode, compile errors, multi-file batch projects,
stdin through waiting-input (query and batch), and floods of output (spec §6.4, §8).

One kernel per language serves all of that language's tests; a batch run with a
custom exec command empties /home/work between projects.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import httpx
import pytest
from helpers.multipart import upload
from helpers.problems import problem

from sandbox.kernel_uids import DEFAULT_RANGE

# 50,000 lines of 100 bytes: "000000 xxx...x\n"
FLOOD_LINES = 50_000
FLOOD = "".join(f"{i:06d} {'x' * 92}\n" for i in range(FLOOD_LINES))


@dataclass(frozen=True)
class Case:
    hello: str  # prints "hello world"
    broken: str  # does not compile (or parse)
    stdin_file: str  # the batch-mode name of `stdin`
    stdin: str  # reads two integers from stdin, prints their sum after "sum "
    flood: str  # prints FLOOD
    project: dict[str, str] = field(default_factory=dict)  # a tree; "*" build prints "42"
    error_mark: str = "error"  # in the compiler's message about `broken`


C_STDIN = r"""
#include <stdio.h>
int main(void) {
    int a, b;
    printf("a? ");
    if (scanf("%d", &a) != 1) return 2;
    printf("b? ");
    if (scanf("%d", &b) != 1) return 2;
    printf("sum %d\n", a + b);
    return 0;
}
"""

CASES: dict[str, Case] = {
    "python3": Case(
        hello='print("hello world")',
        broken='print("x"',
        stdin_file="main.py",
        stdin='a = int(input("a? "))\nb = int(input("b? "))\nprint("sum", a + b)\n',
        flood=(
            "import sys\n"
            f"for i in range({FLOOD_LINES}):\n"
            "    sys.stdout.write('%06d %s\\n' % (i, 'x' * 92))\n"
        ),
        project={
            "main.py": "from pkg.util import twice\nprint(twice(21))\n",
            "pkg/__init__.py": "",
            "pkg/util.py": "def twice(x):\n    return 2 * x\n",
        },
    ),
    "c": Case(
        hello='#include <stdio.h>\nint main(void) { puts("hello world"); return 0; }\n',
        broken="int main(void) { return undeclared_thing; }\n",
        stdin_file="main.c",
        stdin=C_STDIN,
        flood=(
            "#include <stdio.h>\n#include <string.h>\n"
            "int main(void) { char x[93]; memset(x, 'x', 92); x[92] = 0;\n"
            f'  for (int i = 0; i < {FLOOD_LINES}; i++) printf("%06d %s\\n", i, x);\n'
            "  return 0; }\n"
        ),
        project={  # no Makefile: every .c file, subdirectories included, into ./main
            "main.c": '#include <stdio.h>\n#include "lib/twice.h"\n'
            'int main(void) { printf("%d\\n", twice(21)); return 0; }\n',
            "lib/twice.h": "int twice(int x);\n",
            "lib/twice.c": '#include "twice.h"\nint twice(int x) { return 2 * x; }\n',
        },
    ),
    "cpp": Case(
        hello='#include <iostream>\nint main() { std::cout << "hello world" << std::endl; }\n',
        broken="#include <iostream>\nint main() { std::cout << 1 }\n",
        stdin_file="main.cpp",
        stdin=(
            "#include <iostream>\nint main() { int a, b;\n"
            '  std::cout << "a? "; std::cin >> a; std::cout << "b? "; std::cin >> b;\n'
            '  std::cout << "sum " << a + b << std::endl; }\n'
        ),
        flood=(
            "#include <cstdio>\n#include <string>\n"
            "int main() { std::string x(92, 'x');\n"
            f'  for (int i = 0; i < {FLOOD_LINES}; i++) std::printf("%06d %s\\n", i, x.c_str());'
            " }\n"
        ),
        project={  # with a Makefile, which "*" prefers
            "Makefile": "main: main.cpp src/twice.cpp\n\tg++ -o main main.cpp src/twice.cpp\n"
            "clean:\n\trm -f main\n",
            "main.cpp": '#include <iostream>\n#include "src/twice.h"\n'
            "int main() { std::cout << twice(21) << std::endl; }\n",
            "src/twice.h": "int twice(int x);\n",
            "src/twice.cpp": '#include "twice.h"\nint twice(int x) { return 2 * x; }\n',
        },
    ),
    "java": Case(
        hello=(
            "public class Hello {\n  public static void main(String[] args) {\n"
            '    System.out.println("hello world");\n  }\n}\n'
        ),
        broken="public class Broken { public static void main(String[] a) { int x = } }\n",
        stdin_file="Main.java",
        stdin=(
            "import java.util.Scanner;\npublic class Main {\n"
            "  public static void main(String[] args) {\n"
            "    Scanner in = new Scanner(System.in);\n"
            '    System.out.print("a? "); int a = in.nextInt();\n'
            '    System.out.print("b? "); int b = in.nextInt();\n'
            '    System.out.println("sum " + (a + b));\n  }\n}\n'
        ),
        flood=(
            "public class Flood {\n  public static void main(String[] args) {\n"
            '    String x = "x".repeat(92);\n'
            f"    for (int i = 0; i < {FLOOD_LINES}; i++)"
            ' System.out.print(String.format("%06d %s\\n", i, x));\n  }\n}\n'
        ),
        project={  # packages: exec "*" finds com/example/Main.class
            "com/example/Main.java": "package com.example;\nimport com.example.util.Twice;\n"
            "public class Main { public static void main(String[] a) {"
            " System.out.println(Twice.of(21)); } }\n",
            "com/example/util/Twice.java": "package com.example.util;\n"
            "public class Twice { public static int of(int x) { return 2 * x; } }\n",
        },
    ),
    "nodejs": Case(
        hello='console.log("hello world")',
        broken="console.log(",
        stdin_file="main.js",
        stdin=(
            "const rl = require('readline').createInterface({ input: process.stdin });\n"
            "const n = [];\nprocess.stdout.write('a? ');\n"
            "rl.on('line', (line) => {\n  n.push(Number(line));\n"
            "  if (n.length === 2) {\n"
            "    console.log('sum ' + (n[0] + n[1]));\n"
            "    rl.close();\n"
            "    process.stdin.destroy(); // a pipe stays open after rl.close()\n"
            "  }\n"
            "  else process.stdout.write('b? ');\n});\n"
        ),
        flood=(
            "const x = 'x'.repeat(92);\n"
            f"for (let i = 0; i < {FLOOD_LINES}; i++)"
            " process.stdout.write(String(i).padStart(6, '0') + ' ' + x + '\\n');\n"
        ),
        project={
            "main.js": "const { twice } = require('./lib/twice');\nconsole.log(twice(21));\n",
            "lib/twice.js": "exports.twice = (x) => 2 * x;\n",
        },
    ),
    "rust": Case(
        hello='fn main() { println!("hello world"); }\n',
        broken='fn main() { let x: i32 = "text"; }\n',
        stdin_file="main.rs",
        stdin=(
            "use std::io::{self, Write};\nfn read() -> i32 {\n"
            "    let mut s = String::new();\n    io::stdin().read_line(&mut s).unwrap();\n"
            "    s.trim().parse().unwrap()\n}\nfn main() {\n"
            '    print!("a? "); io::stdout().flush().unwrap(); let a = read();\n'
            '    print!("b? "); io::stdout().flush().unwrap(); let b = read();\n'
            '    println!("sum {}", a + b);\n}\n'
        ),
        flood=(
            "use std::io::Write;\nfn main() {\n    let out = std::io::stdout();\n"
            "    let mut out = std::io::BufWriter::new(out.lock());\n"
            '    let x = "x".repeat(92);\n'
            f'    for i in 0..{FLOOD_LINES} {{ writeln!(out, "{{:06}} {{}}", i, x).unwrap(); }}\n'
            "}\n"
        ),
        project={  # a Cargo project with no dependencies
            "Cargo.toml": '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n',
            "src/main.rs": 'mod twice;\nfn main() { println!("{}", twice::twice(21)); }\n',
            "src/twice.rs": "pub fn twice(x: i32) -> i32 { 2 * x }\n",
        },
    ),
    "go": Case(
        hello='package main\nimport "fmt"\nfunc main() { fmt.Println("hello world") }\n',
        broken="package main\nfunc main() { undefinedThing() }\n",
        stdin_file="main.go",
        stdin=(
            'package main\nimport "fmt"\nfunc main() {\n  var a, b int\n'
            '  fmt.Print("a? "); fmt.Scan(&a)\n  fmt.Print("b? "); fmt.Scan(&b)\n'
            '  fmt.Println("sum", a+b)\n}\n'
        ),
        flood=(
            'package main\nimport ("bufio"; "fmt"; "os"; "strings")\nfunc main() {\n'
            '  w := bufio.NewWriter(os.Stdout); defer w.Flush()\n  x := strings.Repeat("x", 92)\n'
            f'  for i := 0; i < {FLOOD_LINES}; i++ {{ fmt.Fprintf(w, "%06d %s\\n", i, x) }}\n}}\n'
        ),
        project={  # a module with a package in a subdirectory
            "go.mod": "module example.com/app\n\ngo 1.19\n",
            "main.go": 'package main\nimport ("fmt"; "example.com/app/twice")\n'
            "func main() { fmt.Println(twice.Twice(21)) }\n",
            "twice/twice.go": "package twice\nfunc Twice(x int) int { return 2 * x }\n",
        },
        error_mark="undefined: undefinedThing",
    ),
    "php": Case(
        hello='<?php echo "hello world\\n";',
        broken='<?php echo "never"\necho 1;\n',
        stdin_file="main.php",
        stdin=(
            '<?php\necho "a? "; $a = (int) trim(fgets(STDIN));\n'
            'echo "b? "; $b = (int) trim(fgets(STDIN));\necho "sum " . ($a + $b) . "\\n";\n'
        ),
        flood=(
            "<?php\n$x = str_repeat('x', 92);\n"
            f'for ($i = 0; $i < {FLOOD_LINES}; $i++) printf("%06d %s\\n", $i, $x);\n'
        ),
        project={
            "main.php": "<?php\nrequire __DIR__ . '/lib/twice.php';\necho twice(21), \"\\n\";\n",
            "lib/twice.php": "<?php\nfunction twice($x) { return 2 * $x; }\n",
        },
    ),
    "pascal": Case(
        hello="program hello;\nbegin\n  writeln('hello world');\nend.\n",
        broken="program broken;\nvar x: integer;\nbegin\n  x := 'text';\nend.\n",
        stdin_file="main.pas",
        stdin=(
            "program sum;\nvar a, b: integer;\nbegin\n"
            "  write('a? '); readln(a);\n  write('b? '); readln(b);\n"
            "  writeln('sum ', a + b);\nend.\n"
        ),
        flood=(
            "program flood;\nuses sysutils;\nvar i: longint; x: string;\nbegin\n"
            "  x := StringOfChar('x', 92);\n"
            f"  for i := 0 to {FLOOD_LINES - 1} do writeln(Format('%.6d %s', [i, x]));\n"
            "end.\n"
        ),
        project={  # a unit beside the program
            "main.pas": "program main;\nuses twice;\nbegin\n  writeln(twiceof(21));\nend.\n",
            "twice.pas": "unit twice;\ninterface\nfunction twiceof(x: integer): integer;\n"
            "implementation\nfunction twiceof(x: integer): integer;\n"
            "begin\n  twiceof := 2 * x;\nend;\nend.\n",
        },
    ),
    "bash": Case(
        hello="echo hello world",
        broken="if true; then echo never",
        stdin_file="main.sh",
        stdin='read a\nread b\necho "sum $((a + b))"\n',
        flood=(
            "x=$(printf 'x%.0s' $(seq 92))\n"
            f"for ((i = 0; i < {FLOOD_LINES}; i++)); do printf '%06d %s\\n' $i $x; done\n"
        ),
        project={
            "main.sh": ". ./lib/twice.sh\ntwice 21\n",
            "lib/twice.sh": "twice() { echo $(($1 * 2)); }\n",
        },
    ),
}
LANGS = list(CASES)


@dataclass
class Run:
    statuses: list[str] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    exit_codes: list[int | None] = field(default_factory=list)
    console: list[list] = field(default_factory=list)

    @property
    def exit_code(self) -> int | None:
        return self.exit_codes[-1]


def drive(api, kid: str, first: dict, inputs: tuple[str, ...] = (), rounds: int = 200) -> Run:
    """Run to "finished": continue while "continued"/"build-finished", feed `inputs`
    on "waiting-input" (failing if there are none left)."""
    run = Run()
    pending = list(inputs)
    body = first
    for _ in range(rounds):
        r = api.execute(kid, **body)
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        run.statuses.append(result["status"])
        run.exit_codes.append(result.get("exitCode"))
        for kind, text in result["console"]:
            run.console.append([kind, text])
            if kind == "stdout":
                run.stdout += text
            elif kind == "stderr":
                run.stderr += text
        if result["status"] == "finished":
            return run
        if result["status"] == "waiting-input":
            assert pending, f"unexpected waiting-input; output so far: {run.stdout!r}"
            body = {"mode": "input", "code": pending.pop(0)}
        else:
            body = {"mode": "continue", "code": ""}
    raise AssertionError(f"no 'finished' after {rounds} calls: {run.statuses[-5:]}")


def query(api, kid: str, code: str, inputs: tuple[str, ...] = ()) -> Run:
    return drive(api, kid, {"mode": "query", "code": code}, inputs)


def batch(api, kid: str, inputs: tuple[str, ...] = (), **options: str) -> Run:
    return drive(api, kid, {"mode": "batch", "code": "", "options": options}, inputs)


def fresh_project(api, kid: str, files: dict[str, str]) -> None:
    """Empty /home/work (with a custom exec command), then upload `files`."""
    wiped = batch(api, kid, build="", exec="find . -mindepth 1 -delete")
    assert wiped.exit_code == 0, wiped.stderr
    r = upload(api, kid, [(name, text.encode()) for name, text in files.items()])
    assert r.status_code == 204, r.text


@pytest.fixture(scope="module")
def client(api_server):
    return api_server.client(**api_server.new_key(concurrency=len(CASES) + 2))


@pytest.fixture(scope="module")
def kernels(client):
    made: dict[str, str] = {}

    def get(lang: str) -> str:
        if lang not in made:
            r = client.create(lang=lang)
            assert r.status_code == 201, r.text
            made[lang] = r.json()["kernelId"]
        return made[lang]

    yield get
    for kid in made.values():
        client.request("DELETE", f"/v2/kernel/{kid}")


@pytest.mark.parametrize("lang", LANGS)
def test_hello_world_in_query_mode(client, kernels, lang):
    run = query(client, kernels(lang), CASES[lang].hello)
    assert run.stdout == "hello world\n", run
    assert run.exit_code == 0
    assert run.statuses[-1] == "finished"


@pytest.mark.parametrize("lang", LANGS)
def test_compile_error_is_reported_with_a_nonzero_exit_code(client, kernels, lang):
    kid = kernels(lang)
    run = query(client, kid, CASES[lang].broken)
    assert run.exit_code not in (0, None), run
    assert run.stdout == ""
    assert CASES[lang].error_mark.lower() in run.stderr.lower(), run.stderr
    assert query(client, kid, CASES[lang].hello).stdout == "hello world\n"  # still serves


@pytest.mark.parametrize("lang", LANGS)
def test_two_lines_of_stdin_in_query_mode(client, kernels, lang):
    run = query(client, kernels(lang), CASES[lang].stdin, inputs=("3", "4"))
    assert run.statuses.count("waiting-input") == 2, run.statuses
    assert run.stdout.endswith("sum 7\n"), run.stdout
    assert run.exit_code == 0


@pytest.mark.parametrize("lang", LANGS)
def test_two_lines_of_stdin_in_batch_mode(client, kernels, lang):
    kid = kernels(lang)
    fresh_project(client, kid, {CASES[lang].stdin_file: CASES[lang].stdin})
    run = batch(client, kid, inputs=("30", "12"), build="*", exec="*")
    assert run.statuses.count("waiting-input") == 2, run
    assert "build-finished" in run.statuses
    assert run.stdout.endswith("sum 42\n"), run.stdout
    assert run.exit_code == 0


@pytest.mark.parametrize("lang", LANGS)
def test_multi_file_project_builds_and_runs_with_defaults(client, kernels, lang):
    kid = kernels(lang)
    fresh_project(client, kid, CASES[lang].project)
    run = batch(client, kid, build="*", exec="*")
    build_done = run.statuses.index("build-finished")
    assert run.exit_codes[build_done] == 0, run.stderr
    assert run.stdout.splitlines()[-1:] == ["42"], (run.stdout, run.stderr)
    assert run.exit_code == 0


@pytest.mark.parametrize("lang", LANGS)
def test_several_mib_of_output_arrive_whole_and_in_order(client, kernels, lang):
    run = query(client, kernels(lang), CASES[lang].flood)
    assert run.exit_code == 0, run.stderr[-2000:]
    assert len(run.stdout) == len(FLOOD)
    assert run.stdout == FLOOD
    assert run.statuses.count("continued") >= 4  # it came in several responses


def test_a_failed_build_skips_the_program(client, kernels):
    kid = kernels("c")
    fresh_project(client, kid, {"main.c": CASES["c"].broken})
    run = batch(client, kid, build="*", exec="*")
    build_done = run.statuses.index("build-finished")
    assert run.exit_codes[build_done] == 1
    assert run.exit_code == 127
    assert "not running the program" in run.stderr


def test_clean_star_runs_make_clean(client, kernels):
    kid = kernels("cpp")
    fresh_project(client, kid, CASES["cpp"].project)
    assert batch(client, kid, build="*", exec="").exit_code == 0
    run = batch(client, kid, clean="*", build="", exec="ls")
    assert run.statuses[0] == "clean-finished"
    listing = run.stdout.splitlines()
    assert "main" not in listing  # make clean removed it
    assert "main.cpp" in listing


def test_end_of_input_lets_a_program_read_to_the_end(client, kernels):
    kid = kernels("bash")
    run = query(client, kid, 'n=0; while read line; do n=$((n+1)); done; echo "lines $n"',
                inputs=("a", "b", "\x04"))  # fmt: skip
    assert run.stdout == "lines 2\n"
    assert run.exit_code == 0


def test_nodejs_keeps_its_context_between_queries(client, kernels):
    kid = kernels("nodejs")
    assert query(client, kid, "var kept = 20; function add(a) { return kept + a; }").exit_code == 0
    assert query(client, kid, "console.log(add(22))").stdout == "42\n"
    later = query(client, kid, "setTimeout(() => console.log('later'), 300)")
    assert later.stdout == "later\n"  # the query waits for what it started
    thrown = query(client, kid, "setTimeout(() => { throw new Error('async boom') }, 10)")
    assert thrown.exit_code == 1 and "async boom" in thrown.stderr
    assert query(client, kid, "console.log(typeof add)").stdout == "function\n"


def test_nodejs_survives_process_exit_with_a_fresh_context(client, kernels):
    kid = kernels("nodejs")
    query(client, kid, "var gone = 1")
    run = query(client, kid, "process.exit(3)")
    assert run.exit_code == 3
    assert "fresh context" in run.stderr
    assert query(client, kid, "console.log(typeof gone)").stdout == "undefined\n"


def test_compiled_queries_do_not_touch_the_users_files(client, kernels):
    kid = kernels("c")
    fresh_project(client, kid, {"data.txt": "from the work dir\n"})
    code = textwrap.dedent("""
        #include <stdio.h>
        int main(void) {
            char line[64];
            FILE *f = fopen("data.txt", "r");
            if (!f || !fgets(line, sizeof line, f)) return 3;
            fputs(line, stdout);
            return 0;
        }
    """)
    assert query(client, kid, code).stdout == "from the work dir\n"
    listing = batch(client, kid, build="", exec="ls -A").stdout.split()
    assert listing == ["data.txt"]  # the snippet and its binary lived in /tmp


def test_languages_endpoint_lists_every_runtime(api_server):
    r = httpx.get(api_server.endpoint + "/v2/kernel/languages")
    assert r.status_code == 200
    rows = {row["lang"]: row for row in r.json()["languages"]}
    assert set(rows) == set(CASES)
    for row in rows.values():
        assert row["available"] is True and row["version"], row
    assert "node" in rows["nodejs"]["aliases"]


@pytest.mark.parametrize("alias,canonical", [("node", "nodejs"), ("golang", "go"),
                                             ("java8", "java"), ("sh", "bash")])  # fmt: skip
def test_aliases_create_the_canonical_language(client, alias, canonical):
    r = client.create(lang=alias)
    assert r.status_code == 201, r.text
    kid = r.json()["kernelId"]
    try:
        assert client.request("GET", f"/v2/kernel/{kid}").json()["lang"] == canonical
    finally:
        client.request("DELETE", f"/v2/kernel/{kid}")


def test_unknown_lang_names_the_available_ones(client):
    title = problem(client.create(lang="cobol"), 404, "image-not-found")
    assert "cobol" in title and "python3" in title and "rust" in title


def test_same_token_with_another_language_is_refused(client):
    token = "lang-clash-token"
    first = client.create(lang="python3", token=token)
    assert first.status_code == 201
    try:
        title = problem(client.create(lang="c", token=token), 400, "kernel-already-exists")
        assert "python3" in title
    finally:
        client.request("DELETE", f"/v2/kernel/{first.json()['kernelId']}")


def test_java_gets_the_kernels_memory_limit(client, kernels):
    """The JVM cannot see the cgroup: the wrapper tells it, so garbage is collected
    instead of the kernel being killed at the limit."""
    code = textwrap.dedent("""
        public class Garbage {
            public static void main(String[] args) {
                long total = 0;
                for (int i = 0; i < 2000; i++) { byte[] b = new byte[1 << 20]; total += b.length; }
                System.out.println("allocated " + (total >> 20) + " MiB, max heap "
                    + (Runtime.getRuntime().maxMemory() >> 20) + " MiB");
            }
        }
    """)
    run = query(client, kernels("java"), code)
    assert run.exit_code == 0, run.stderr
    assert run.stdout.startswith("allocated 2000 MiB")
    max_heap = int(run.stdout.split()[-2])
    assert max_heap < 256, run.stdout  # sized from the 256 MiB limit, not the host's RAM


def test_build_steps_run_inside_the_kernel(client, kernels):
    """A compiler is untrusted input too: the build runs jailed, as the program does."""
    run = batch(
        client, kernels("c"), build="id -u; id -un; hostname; ls /etc/shadow; touch /usr/x", exec=""
    )
    build_done = run.statuses.index("build-finished")
    uid, name, hostname = run.stdout.split()
    assert int(uid) in DEFAULT_RANGE and (name, hostname) == ("work", "sandbox")
    assert "/etc/shadow" in run.stderr and "Read-only file system" in run.stderr
    assert run.exit_codes[build_done] != 0


def test_file_requests_are_answered_during_an_output_flood(client, kernels):
    """The host stops reading a flooding kernel; a file request must still get its
    reply, which sits behind the output in the kernel's stream."""
    kid = kernels("bash")
    r = client.execute(kid, mode="query", code="yes 0123456789012345678901234567890123456789")
    assert r.json()["result"]["status"] == "continued"
    import time

    time.sleep(1)  # let the buffer fill and the reader pause
    r = client.request("GET", f"/v2/kernel/{kid}/files", {"path": "."})
    assert r.status_code == 200, r.text
    client.request("POST", f"/v2/kernel/{kid}/interrupt")
    for _ in range(100):
        result = client.execute(kid, mode="continue", code="").json()["result"]
        if result["status"] == "finished":
            break
    assert result["status"] == "finished"
