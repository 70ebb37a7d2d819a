// The code editor: CodeMirror 5 (a UMD global, loaded by index.html), one mode per
// kernel language, a draft of the code per language kept in localStorage so that a
// reload or a language switch does not lose what the student typed.

const CodeMirror = window.CodeMirror;

// lang (as GET web/v2/kernel/languages names it) -> CodeMirror mode (a MIME type
// where one mode file serves several languages).
const MODES = {
  python3: "python",
  c: "text/x-csrc",
  cpp: "text/x-c++src",
  java: "text/x-java",
  nodejs: "javascript",
  rust: "rust",
  go: "text/x-go",
  php: "application/x-httpd-php", // PHP in <?php ... ?>, as `php main.php` reads it
  pascal: "text/x-pascal",
  bash: "text/x-sh",
};

// What a language's editor holds before the student has typed anything.
const STARTERS = {
  python3: 'print("Hello, world!")\n',
  c: '#include <stdio.h>\n\nint main(void) {\n    printf("Hello, world!\\n");\n    return 0;\n}\n',
  cpp: '#include <iostream>\n\nint main() {\n    std::cout << "Hello, world!" << std::endl;\n    return 0;\n}\n',
  java: 'public class Main {\n    public static void main(String[] args) {\n        System.out.println("Hello, world!");\n    }\n}\n',
  nodejs: 'console.log("Hello, world!");\n',
  rust: 'fn main() {\n    println!("Hello, world!");\n}\n',
  go: 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("Hello, world!")\n}\n',
  php: '<?php\necho "Hello, world!\\n";\n',
  pascal: "program Hello;\nbegin\n  writeln('Hello, world!');\nend.\n",
  bash: 'echo "Hello, world!"\n',
};

const DRAFT_KEY = "playground-draft:";
const SAVE_DELAY_MS = 400;

function loadDraft(lang) {
  try {
    return localStorage.getItem(DRAFT_KEY + lang);
  } catch {
    return null; // storage disabled: no drafts, the editor still works
  }
}

function saveDraft(lang, text) {
  try {
    localStorage.setItem(DRAFT_KEY + lang, text);
  } catch {
    /* full or disabled: losing a draft beats breaking the editor */
  }
}

/**
 * Make the editor inside `container` (#editor). The CodeMirror instance is also
 * reachable as `container.querySelector(".CodeMirror").CodeMirror` (the tests use it).
 */
export function createEditor(container) {
  let lang = null;
  let saveTimer = 0;
  // Esc, then Tab: the Tab leaves the editor instead of indenting (keyboard users
  // must be able to get out; the hint in index.html says so).
  let escaped = false;

  const cm = CodeMirror(container, {
    value: "",
    theme: "playground",
    lineNumbers: true,
    indentUnit: 4,
    tabSize: 4,
    matchBrackets: true,
    // The hidden-textarea input (CodeMirror's desktop default): the browser tests
    // focus "#editor .CodeMirror textarea", and it needs no ARIA role patching.
    inputStyle: "textarea",
    screenReaderLabel: "Code editor",
    viewportMargin: 50,
    extraKeys: {
      Tab: (ed) => {
        if (ed.somethingSelected()) ed.execCommand("indentMore");
        else if (ed.getOption("indentWithTabs")) ed.execCommand("insertTab");
        else ed.execCommand("insertSoftTab");
      },
      "Shift-Tab": "indentLess",
    },
  });
  cm.getInputField().setAttribute("aria-describedby", "editor-hint run-hint");

  cm.on("keydown", (_ed, event) => {
    if (event.key === "Escape") {
      escaped = true;
    } else if (event.key === "Tab" && escaped) {
      event.codemirrorIgnore = true; // the browser moves the focus
      escaped = false;
    } else if (!["Shift", "Control", "Alt", "Meta"].includes(event.key)) {
      escaped = false;
    }
  });
  cm.on("blur", () => {
    escaped = false;
  });
  cm.on("changes", () => {
    if (lang === null) return;
    const saving = lang;
    clearTimeout(saveTimer);
    saveTimer = setTimeout(() => saveDraft(saving, cm.getValue()), SAVE_DELAY_MS);
  });

  return {
    cm,

    /** Switch to `name`'s mode and draft (the current text is saved first). */
    setLanguage(name) {
      if (lang !== null) {
        clearTimeout(saveTimer);
        saveDraft(lang, cm.getValue());
      }
      lang = name;
      cm.setOption("mode", MODES[name] || null);
      cm.setOption("indentWithTabs", name === "go"); // gofmt's style
      const draft = loadDraft(name);
      cm.setValue(draft !== null ? draft : STARTERS[name] || "");
      cm.clearHistory(); // undo must not bring back another language's code
    },

    code() {
      return cm.getValue();
    },

    focus() {
      cm.focus();
    },
  };
}
