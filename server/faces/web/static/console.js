// The console: what a run prints (#output) and the execute stream that carries it
// (docs/api.md, Streams, Execute; server/faces/v2/streams/execute.py).
//
// Safety rule: kernel output is never parsed as HTML in the page. Text goes in as
// text nodes; ["html", markup] goes into an <iframe sandbox=""> (no scripts, an
// opaque origin; its srcdoc also inherits the page's CSP); images only as data:
// URLs we build or check.

import { API, utf8ToBase64, wsURL } from "./api.js";

// A run may print up to 64 MiB; a page holding that much text crawls. Past this
// many characters per run the rest is counted, not shown.
const MAX_SHOWN_CHARS = 2_000_000;
const PNG_PREFIX = "data:image/png;base64,";

/** #output: appends console items; clear() starts a run's output afresh. */
export class Output {
  constructor(element) {
    this.element = element;
    this.clear();
  }

  clear() {
    this.element.replaceChildren();
    this.shown = 0;
    this.hidden = 0;
    this.hiddenNote = null;
    this.items = 0; // numbers images and frames for their accessible names
  }

  /** One console item, [kind, data], as the server sends it. */
  item(kind, data) {
    if (kind === "stdout" || kind === "stderr") {
      this.text(String(data), `out-${kind}`);
    } else if (kind === "media" && Array.isArray(data)) {
      this.media(String(data[0]), data[1]);
    } else if (kind === "html") {
      this.html(String(data));
    } else {
      // Unknown kinds (a newer server): shown as text, never interpreted.
      const text = typeof data === "string" ? data : JSON.stringify(data);
      this.note(`[${kind}] ${text}`);
    }
  }

  /** Text of a class; runs of the same class share one element (fewer nodes). */
  text(text, className) {
    if (!text) return;
    if (this.shown + text.length > MAX_SHOWN_CHARS) {
      const room = Math.max(0, MAX_SHOWN_CHARS - this.shown);
      this.countHidden(text.length - room);
      text = text.slice(0, room);
      if (!text) return;
    }
    this.shown += text.length;
    this.keepScrolled(() => {
      const last = this.element.lastElementChild;
      if (last && last === this.element.lastChild && last.classList.contains(className) && last.tagName === "SPAN") {
        last.firstChild.appendData(text);
      } else {
        const span = document.createElement("span");
        span.className = className;
        span.append(document.createTextNode(text));
        this.element.append(span);
      }
    });
  }

  /** What the student typed at a prompt, echoed as the program's terminal would. */
  input(text) {
    this.text(text.endsWith("\n") ? text : `${text}\n`, "out-input");
  }

  /** A line from the page itself (an exit code, an error), set apart from output. */
  note(text) {
    this.keepScrolled(() => {
      const note = document.createElement("span");
      note.className = "out-note";
      note.textContent = text;
      this.element.append(note);
    });
  }

  media(type, data) {
    let src = null;
    if (type === "image/svg+xml" && typeof data === "string") {
      // base64 of the UTF-8 bytes: an svg may hold any character.
      src = `data:image/svg+xml;base64,${utf8ToBase64(data)}`;
    } else if (type === "image/png" && typeof data === "string" && data.startsWith(PNG_PREFIX)) {
      src = data;
    }
    if (src === null) {
      this.note(`[${type} output, which this page does not show]`);
      return;
    }
    this.items += 1;
    const img = document.createElement("img");
    img.className = "out-media";
    img.alt = `Image output ${this.items} (${type})`;
    img.src = src;
    this.keepScrolled(() => this.element.append(img));
  }

  html(markup) {
    this.items += 1;
    const frame = document.createElement("iframe");
    frame.className = "out-html";
    // Empty sandbox: no scripts, no forms, no same-origin access. Set before srcdoc
    // and before the frame is in the document, so it never loads unsandboxed.
    frame.setAttribute("sandbox", "");
    frame.setAttribute("referrerpolicy", "no-referrer");
    frame.title = `HTML output ${this.items}`;
    frame.srcdoc = markup;
    this.keepScrolled(() => this.element.append(frame));
  }

  countHidden(count) {
    this.hidden += count;
    if (this.hiddenNote === null) {
      this.note("");
      this.hiddenNote = this.element.lastElementChild;
    }
    this.hiddenNote.textContent = `[${this.hidden.toLocaleString()} more characters of output are not shown here]`;
  }

  /** Run `change`; if the view was at the bottom, keep it there (follow the output). */
  keepScrolled(change) {
    const el = this.element;
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
    change();
    if (atBottom) el.scrollTop = el.scrollHeight;
  }
}

/**
 * The execute stream of one kernel: one WebSocket, reused for every run, reopened
 * when it closed. Hooks (all optional):
 *   onState(state)        "idle" | "running" | "waiting-input"
 *   onWaitingInput(options)  the run asks for input (options.is_password)
 *   onRunEnd(status)      a run ended ("finished", "exec-timeout", "error", ...)
 *   onClosed(event)       the socket closed unexpectedly (the app then asks the
 *                         server whether the kernel lives)
 */
export class ExecStream {
  constructor(kernelId, output, hooks) {
    this.kernelId = kernelId;
    this.output = output;
    this.hooks = hooks;
    this.socket = null;
    this.state = "idle";
    this.pending = null; // a run waiting for the socket to open
    this.disposed = false;
  }

  /** Open the socket ahead of the first run (a kernel that dies is noticed at once). */
  connect() {
    if (this.disposed || (this.socket && this.socket.readyState <= WebSocket.OPEN)) return;
    const socket = new WebSocket(wsURL(`${API}stream/kernel/${encodeURIComponent(this.kernelId)}/execute`));
    this.socket = socket;
    socket.addEventListener("open", () => {
      if (this.pending !== null) {
        socket.send(this.pending);
        this.pending = null;
      }
    });
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return; // an old socket, replaced meanwhile
      this.socket = null;
      const wasRunning = this.state !== "idle";
      if (wasRunning) {
        const why = event.reason ? `: ${event.reason}` : "";
        this.output.note(`[the connection to the kernel closed${why}]`);
        this.setState("idle");
        this.hooks.onRunEnd?.("closed");
      }
      this.pending = null;
      if (!this.disposed) this.hooks.onClosed?.(event, wasRunning);
    });
  }

  /** Start a run of `code` (the caller checks that none is active). */
  run(code) {
    const message = JSON.stringify({ mode: "query", code, options: {} });
    this.setState("running");
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(message);
    } else {
      this.pending = message;
      this.connect();
    }
  }

  /** The answer to a waiting-input prompt: raw text (the server adds the newline). */
  sendInput(text) {
    if (this.state !== "waiting-input" || !this.socket) return false;
    this.socket.send(text);
    this.setState("running");
    return true;
  }

  receive(raw) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      this.output.note("[the server sent something that is not JSON]");
      return;
    }
    for (const entry of message.console || []) {
      if (Array.isArray(entry) && entry.length >= 2) this.output.item(entry[0], entry[1]);
    }
    switch (message.status) {
      case "continued":
        break;
      case "waiting-input":
        this.setState("waiting-input");
        this.hooks.onWaitingInput?.(message.options || {});
        break;
      case "finished":
        if (message.exitCode !== null && message.exitCode !== undefined && message.exitCode !== 0) {
          this.output.note(`[exit code ${message.exitCode}]`);
        }
        this.endRun("finished");
        break;
      case "exec-timeout":
        this.output.note("[the run took longer than the time limit; the kernel was ended]");
        this.endRun("exec-timeout");
        break;
      case "error":
        this.output.note(`[error: ${message.msg || "the server refused the run"}]`);
        this.endRun("error");
        break;
      case "server-restarting":
        this.output.note(`[${message.msg || "the server is restarting"}]`);
        this.endRun("server-restarting");
        break;
      default:
        this.output.note(`[status ${String(message.status)}]`);
    }
  }

  endRun(status) {
    if (this.state === "idle") return;
    this.setState("idle");
    this.hooks.onRunEnd?.(status);
  }

  setState(state) {
    this.state = state;
    this.hooks.onState?.(state);
  }

  /** Close for good (the kernel is being replaced); closing mid-run interrupts it. */
  dispose() {
    this.disposed = true;
    this.pending = null;
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000, "closed by the page");
    }
  }
}
