// The playground page's entry point: sign-in state, the kernel's life (create,
// restart, destroy, poll its use), the toolbar, the tabs, and the wiring between
// the editor (editor.js), the console (console.js), the terminal (terminal.js) and
// the files (files.js); tabs.js and languages.js hold the tabs and the language
// menu. The server side is server/faces/web/ (the page, the session
// cookie) and the v2 API it proxies (api.js: API; docs/api.md).
//
// body[data-state] tells tests (and CSS, if ever needed) where the page is:
// "starting" (a kernel is being made or restarted), "ready" (attached, idle),
// "running", "waiting-input", or "no-kernel" (it ended or could not start; Run or
// New kernel starts one).

import { API, ApiError, kernelPath, onSessionEnded, request, setCsrfToken } from "./api.js";
import { ExecStream, Output } from "./console.js";
import { createEditor } from "./editor.js";
import { FilesView } from "./files.js";
import { loadLanguages, saveLanguage } from "./languages.js";
import { selectTab, setUpTabs } from "./tabs.js";
import { TerminalView } from "./terminal.js";

const POLL_MS = 3000;
const TAB_KEY = "playground-tab";

const $ = (id) => document.getElementById(id);

const page = {
  lang: null,
  kernelId: null,
  busy: "", // "starting kernel", "restarting kernel", ...: a kernel operation in flight
  runState: "idle", // the execute stream's: "idle" | "running" | "waiting-input"
  stream: null,
  pollTimer: 0,
  polling: false,
  leaving: false, // on the way to the sign-in page: stop reacting
};

let editor;
let output;
let terminal;
let files;

// ---------------------------------------------------------------- messages

/** The alert area (#message, role=alert): a problem's title and detail, as text. */
function showMessage(title, detail = "") {
  $("message").textContent = detail ? `${title}\n${detail}` : title;
}

function clearMessage() {
  $("message").textContent = "";
}

/** Every failed request ends here: a gone kernel is a state change, not just text. */
function handleProblem(error) {
  if (page.leaving) return;
  if (!(error instanceof ApiError)) {
    showMessage("Something went wrong in the page", String(error?.message || error));
    return;
  }
  if (error.status === 401) return; // onSessionEnded is already taking us to sign-in
  if (error.status === 404 && error.type.endsWith("kernel-not-found") && page.kernelId !== null) {
    kernelGone(error.title, error.detail);
    return;
  }
  showMessage(error.title, error.detail);
}

onSessionEnded((problem) => {
  if (page.leaving) return;
  page.leaving = true;
  stopPolling();
  showMessage("Your session has ended. Taking you to the sign-in page…", problem.title);
  setTimeout(() => location.assign("signin"), 1500);
});

// ---------------------------------------------------------------- state display

function updateState() {
  let state;
  let status;
  if (page.busy) {
    state = "starting";
    status = page.busy;
  } else if (page.kernelId === null) {
    state = "no-kernel";
    status = "no kernel";
  } else if (page.runState === "running") {
    state = "running";
    status = "running";
  } else if (page.runState === "waiting-input") {
    state = "waiting-input";
    status = "waiting for input";
  } else {
    state = "ready";
    status = "idle";
  }
  document.body.dataset.state = state;
  $("status").textContent = status;

  const idle = !page.busy && page.runState === "idle";
  $("run").disabled = !idle || page.lang === null; // no kernel: Run starts one
  $("interrupt").disabled = page.runState === "idle" || page.kernelId === null;
  $("restart").disabled = !!page.busy || page.kernelId === null;
  $("language").disabled = !idle || page.lang === null;
  $("new-kernel").disabled = !!page.busy;

  const waiting = page.runState === "waiting-input";
  const form = $("input-form");
  if (!waiting && !form.hidden) {
    const hadFocus = form.contains(document.activeElement);
    form.hidden = true;
    if (hadFocus) editor.focus(); // never leave the keyboard on a hidden control
  }
}

function setBusy(what) {
  page.busy = what;
  updateState();
}

// ---------------------------------------------------------------- the kernel

/** This browser tab's id: a reload keeps it (and so its kernels), a new tab does not. */
function tabId() {
  let id = sessionStorage.getItem(TAB_KEY);
  if (!id || !/^[0-9a-f]{16}$/.test(id)) {
    const bytes = crypto.getRandomValues(new Uint8Array(8));
    id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    sessionStorage.setItem(TAB_KEY, id);
  }
  return id;
}

/** Create (or, after a reload, find again) this tab's kernel of the current language. */
async function startKernel(mounts = []) {
  if (page.lang === null) return;
  setBusy("starting kernel");
  try {
    const token = `web-${tabId()}-${page.lang}`;
    const body = { lang: page.lang, clientSessionToken: token, mounts };
    const answer = await request("POST", `${API}kernel/create`, { json: body });
    attach(String(answer.kernelId));
  } catch (error) {
    handleProblem(error);
  } finally {
    setBusy("");
  }
}

function attach(kernelId) {
  page.stream?.dispose();
  page.kernelId = kernelId;
  page.runState = "idle";
  page.stream = new ExecStream(kernelId, output, {
    onState: (state) => {
      page.runState = state;
      updateState();
    },
    onWaitingInput: (options) => showInputForm(!!options.is_password),
    onRunEnd: () => {
      files.runEnded();
      pollInfo();
    },
    onClosed: (event, wasRunning) => {
      if (wasRunning && event.code === 1006) {
        showMessage("The connection to the kernel was lost or refused.", "Run again to reconnect.");
      }
      checkKernel();
    },
  });
  page.stream.connect();
  $("kernel-info").dataset.kernelId = kernelId; // for tests and for support questions
  terminal.attach(kernelId);
  files.attach(kernelId);
  startPolling();
  pollInfo();
}

/** Forget the kernel (it ended, or is being replaced). */
function detach() {
  page.stream?.dispose();
  page.stream = null;
  page.kernelId = null;
  page.runState = "idle";
  stopPolling();
  delete $("kernel-info").dataset.kernelId;
  terminal.attach(null);
  files.attach(null);
  updateState();
}

/** The kernel ended on the server (idle timeout, CPU credit, exec timeout...). */
function kernelGone(title, detail = "") {
  detach();
  // The API's title is "No such kernel. (<why it ended>)": the part in brackets says it.
  const bracketed = /\((.+)\)\s*$/.exec(title);
  const why = detail || (bracketed ? bracketed[1] : title);
  showMessage(`The kernel has ended: ${why}`, "Press Run or New kernel to start a new one.");
  $("kernel-info").textContent = "No kernel.";
}

/** After a stream closed: does the kernel live? (A 404 comes back as kernelGone.) */
async function checkKernel() {
  if (page.kernelId === null || page.leaving) return;
  try {
    await request("GET", kernelPath(page.kernelId));
  } catch (error) {
    handleProblem(error);
  }
}

async function destroyKernel() {
  const id = page.kernelId;
  detach();
  if (id === null) return;
  try {
    await request("DELETE", kernelPath(id));
  } catch (error) {
    if (error.status !== 404) handleProblem(error); // already gone is fine
  }
}

async function newKernel() {
  clearMessage();
  setBusy("starting kernel");
  await destroyKernel();
  output.clear();
  await startKernel(files.mounts());
}

async function restartKernel() {
  const id = page.kernelId;
  if (id === null) return;
  clearMessage();
  setBusy("restarting kernel");
  try {
    await request("PATCH", kernelPath(id));
    output.note("[the kernel restarted: variables are gone, files are kept]");
    // The shell died with the old processes: a fresh one if the terminal is open.
    terminal.attach(null);
    terminal.attach(id);
  } catch (error) {
    handleProblem(error);
  } finally {
    setBusy("");
  }
}

async function interruptRun() {
  if (page.kernelId === null) return;
  try {
    await request("POST", kernelPath(page.kernelId, "/interrupt"));
  } catch (error) {
    handleProblem(error);
  }
}

// ---------------------------------------------------------------- kernel info

function startPolling() {
  stopPolling();
  page.pollTimer = setInterval(pollInfo, POLL_MS);
}

function stopPolling() {
  clearInterval(page.pollTimer);
  page.pollTimer = 0;
}

/** "12.5" but "256": one decimal only where it says something. */
function number(value) {
  const text = (Number(value) || 0).toFixed(1);
  return text.endsWith(".0") ? text.slice(0, -2) : text;
}

async function pollInfo() {
  // Hidden tabs do not poll: the requests count against the key's rate limit.
  if (document.visibilityState !== "visible" || page.kernelId === null || page.polling) return;
  const id = page.kernelId;
  page.polling = true;
  try {
    const info = await request("GET", kernelPath(id));
    if (id !== page.kernelId) return;
    $("kernel-info").textContent =
      `memory ${number(info.memoryCurrent / 1024)} / ${number(info.memoryLimit / 1024)} MiB, ` +
      `CPU credit used ${number(info.cpuCreditUsed / 1000)} / ${number(info.maxCpuCredit / 1000)} s`;
  } catch (error) {
    if (id === page.kernelId) handleProblem(error);
  } finally {
    page.polling = false;
  }
}

// ---------------------------------------------------------------- runs

async function run() {
  if (page.busy || page.runState !== "idle" || page.lang === null) return;
  clearMessage();
  if (page.kernelId === null) {
    await startKernel(files.mounts());
    if (page.kernelId === null) return; // it could not start: the message says why
  }
  output.clear();
  selectTab($("tab-output"));
  page.stream.run(editor.code());
}

function showInputForm(isPassword) {
  const box = $("input-box");
  box.type = isPassword ? "password" : "text";
  box.setAttribute("autocomplete", isPassword ? "current-password" : "off");
  box.value = "";
  $("input-form").hidden = false;
  selectTab($("tab-output"));
  box.focus();
}

function sendInput(text, echo) {
  if (page.stream?.sendInput(text)) output.input(echo);
}

// ---------------------------------------------------------------- languages

async function changeLanguage(lang) {
  if (lang === page.lang || page.busy) return;
  clearMessage();
  saveLanguage(lang);
  page.lang = lang;
  editor.setLanguage(lang);
  setBusy("starting kernel");
  await destroyKernel(); // one kernel per tab: the old language's goes
  output.clear();
  await startKernel(files.mounts());
}

// ---------------------------------------------------------------- sign-out

async function signOut() {
  page.leaving = true;
  stopPolling();
  const id = page.kernelId;
  detach();
  if (id !== null) {
    // Best effort: a kernel nobody can reach any more only holds memory.
    await request("DELETE", kernelPath(id)).catch(() => {});
  }
  try {
    await request("POST", "signout");
  } catch (error) {
    if (error.status !== 401) {
      page.leaving = false;
      showMessage(error.title, error.detail);
      return;
    }
  }
  location.assign("signin");
}

// ---------------------------------------------------------------- start

function wireControls() {
  $("run").addEventListener("click", run);
  $("interrupt").addEventListener("click", interruptRun);
  $("restart").addEventListener("click", restartKernel);
  $("new-kernel").addEventListener("click", newKernel);
  $("signout").addEventListener("click", signOut);
  $("clear-output").addEventListener("click", () => output.clear());
  $("language").addEventListener("change", (event) => changeLanguage(event.target.value));
  $("input-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const box = $("input-box");
    sendInput(box.value, box.type === "password" ? "••••••••" : box.value);
    box.value = "";
  });
  $("input-eof").addEventListener("click", () => sendInput("\u0004", "^D"));

  // Ctrl-Enter / Cmd-Enter runs from anywhere, except in the terminal (the shell
  // gets its keys) and the input box (Enter there answers the prompt).
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
    if (event.target.closest?.("#terminal, #input-form")) return;
    event.preventDefault();
    run();
  });
  document.addEventListener("visibilitychange", () => pollInfo());
}

async function main() {
  if (!window.CodeMirror || !window.Terminal || !window.FitAddon || !window.CanvasAddon) {
    showMessage("The page's libraries are missing.", "The server's administrator should run scripts/setup-web.");
    return;
  }
  editor = createEditor($("editor"));
  output = new Output($("output"));
  terminal = new TerminalView({
    container: $("terminal"),
    state: $("terminal-state"),
    reconnect: $("terminal-reconnect"),
    reader: $("terminal-reader"),
  });
  files = new FilesView(
    {
      fileList: $("file-list"),
      filesEmpty: $("files-empty"),
      refresh: $("refresh-files"),
      upload: $("upload"),
      uploadButton: $("upload-button"),
      folderList: $("folder-list"),
      foldersEmpty: $("folders-empty"),
      newFolderName: $("new-folder-name"),
      createFolder: $("create-folder"),
      state: $("files-state"),
    },
    { onProblem: handleProblem },
  );
  setUpTabs((tabId) => {
    if (tabId === "tab-terminal") terminal.show();
    files.setVisible(tabId === "tab-files");
  });
  wireControls();
  setBusy("starting kernel");

  // Who is signed in, and the CSRF token: first, before anything else.
  let session;
  try {
    session = await request("GET", "session");
  } catch (error) {
    if (error.status === 401) {
      location.assign("signin");
      return;
    }
    setBusy("");
    handleProblem(error);
    return;
  }
  setCsrfToken(session.csrfToken);
  $("who").textContent = `Signed in as ${session.accessKey}`;

  try {
    page.lang = await loadLanguages($("language"));
  } catch (error) {
    setBusy("");
    handleProblem(error);
    return;
  }
  if (page.lang === null) {
    setBusy("");
    showMessage("No language is available on this server.");
    return;
  }
  $("language").value = page.lang;
  editor.setLanguage(page.lang);
  await startKernel();
}

main();
