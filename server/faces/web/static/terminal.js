// The Terminal tab: xterm.js on the kernel's pty stream (docs/api.md, Streams,
// Terminal; server/faces/v2/streams/terminal.py). Opened when the tab is first
// shown, not before: a shell is a process in the kernel, and most runs need none.
//
// xterm renders with its canvas addon, loaded before open(): xterm's default DOM
// renderer writes <style> elements and style="" attributes, which the page's CSP
// (style-src 'self', no 'unsafe-inline') blocks, leaving black-on-dark text in the
// wrong font. The canvas renderer sets styles through the CSSOM only.

import { API, base64ToBytes, bytesToBase64, utf8ToBase64, wsURL } from "./api.js";

const PING_MS = 20_000; // keeps the kernel from idling out while a shell is open
const READER_KEY = "playground-terminal-reader";

// ANSI palettes readable on each background (xterm's defaults suit dark only).
const LIGHT = {
  background: "#ffffff", foreground: "#1b1b1f", cursor: "#1b1b1f", cursorAccent: "#ffffff",
  selectionBackground: "#c8dafc",
  black: "#1b1b1f", red: "#b3261e", green: "#146c2e", yellow: "#7a5900", blue: "#0b57d0",
  magenta: "#8e24aa", cyan: "#00677d", white: "#5c5f66",
  brightBlack: "#4d4d57", brightRed: "#c62828", brightGreen: "#1b7f3a", brightYellow: "#8a6500",
  brightBlue: "#1a5fd6", brightMagenta: "#9c27b0", brightCyan: "#00796b", brightWhite: "#3c3c44",
};
const DARK = {
  background: "#111318", foreground: "#e8e9ed", cursor: "#e8e9ed", cursorAccent: "#111318",
  selectionBackground: "#2f4a78",
  black: "#3b3f48", red: "#ff8a80", green: "#8fe0a6", yellow: "#f0d36b", blue: "#8ab4f8",
  magenta: "#d7a6ff", cyan: "#6fd6e8", white: "#d0d3da",
  brightBlack: "#8b909b", brightRed: "#ffb4ab", brightGreen: "#b4f0c4", brightYellow: "#fff0a8",
  brightBlue: "#b3cefb", brightMagenta: "#e8c8ff", brightCyan: "#a6ecf7", brightWhite: "#ffffff",
};

const darkScheme = window.matchMedia("(prefers-color-scheme: dark)");

// localStorage throws where storage is disabled; a setting is then not kept.
function readSetting(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function writeSetting(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    /* not kept */
  }
}

function currentTheme() {
  return darkScheme.matches ? DARK : LIGHT;
}

export class TerminalView {
  /** elements: {container, state, reconnect, reader} (#terminal and its controls). */
  constructor(elements) {
    this.el = elements;
    this.kernelId = null;
    this.term = null;
    this.fit = null;
    this.socket = null;
    this.pingTimer = 0;
    this.shown = false; // the tab has been shown since this kernel was attached
    this.el.reconnect.addEventListener("click", () => this.connect());
    this.el.reader.checked = readSetting(READER_KEY) === "1";
    this.el.reader.addEventListener("change", () => {
      writeSetting(READER_KEY, this.el.reader.checked ? "1" : "0");
      if (this.term) this.term.options.screenReaderMode = this.el.reader.checked;
    });
    darkScheme.addEventListener("change", () => {
      if (this.term) this.term.options.theme = currentTheme();
    });
    this.setState("Opens when you show this tab.");
  }

  /** A kernel to open shells in (null: none). An open shell of the old one closes. */
  attach(kernelId) {
    if (kernelId === this.kernelId) return;
    this.disconnect();
    this.kernelId = kernelId;
    if (this.term) this.term.reset();
    if (kernelId === null) {
      this.setState("No kernel.");
    } else if (this.shown) {
      this.connect();
    }
  }

  /** The tab became visible: make the terminal (once), fit it, open the shell. */
  show() {
    this.shown = true;
    if (!this.term) this.create();
    this.fitNow();
    if (!this.socket && this.kernelId !== null) this.connect();
    this.term.focus();
  }

  create() {
    const term = new window.Terminal({
      theme: currentTheme(),
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      cursorBlink: true,
      scrollback: 5000,
      screenReaderMode: this.el.reader.checked,
    });
    // Before open(): then xterm never makes its DOM renderer (see the top comment).
    term.loadAddon(new window.CanvasAddon.CanvasAddon());
    this.fit = new window.FitAddon.FitAddon();
    term.loadAddon(this.fit);

    // Esc, then Tab: the Tab leaves the terminal (as in the editor); the Esc itself
    // still goes to the shell, where programs such as vi need it.
    let escaped = false;
    term.attachCustomKeyEventHandler((event) => {
      if (event.type !== "keydown") return true;
      if (event.key === "Tab" && escaped) {
        escaped = false;
        return false; // not handled by xterm: the browser moves the focus
      }
      if (!["Shift", "Control", "Alt", "Meta"].includes(event.key)) escaped = event.key === "Escape";
      return true;
    });

    term.open(this.el.container);
    // The canvas holds no text: tests (and a console user) read the buffer instead,
    // as document.querySelector("#terminal").xterm.buffer.active.
    this.el.container.xterm = term;
    term.onData((data) => this.send({ type: "stdin", chars: utf8ToBase64(data) }));
    // onBinary: mouse reports etc., one byte per character (not UTF-8).
    term.onBinary((data) => {
      const bytes = Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff);
      this.send({ type: "stdin", chars: bytesToBase64(bytes) });
    });
    term.onResize(({ rows, cols }) => this.send({ type: "resize", rows, cols }));
    // Refit whenever the box changes size (window resize, zoom, layout reflow);
    // a hidden tab measures 0 and is left alone.
    new ResizeObserver(() => this.fitNow()).observe(this.el.container);
    this.term = term;
  }

  fitNow() {
    if (!this.fit || this.el.container.clientWidth === 0) return;
    try {
      this.fit.fit();
    } catch {
      /* not measurable yet (fonts loading): the next resize refits */
    }
  }

  connect() {
    if (this.kernelId === null || !this.term) return;
    this.disconnect();
    this.el.reconnect.hidden = true;
    this.setState("Connecting…");
    const socket = new WebSocket(wsURL(`${API}stream/kernel/${encodeURIComponent(this.kernelId)}/pty`));
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.setState("Connected.");
      this.fitNow();
      // The server starts at 80x24; tell it ours even if fit() changed nothing.
      this.send({ type: "resize", rows: this.term.rows, cols: this.term.cols });
      this.pingTimer = setInterval(() => this.send({ type: "ping" }), PING_MS);
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "out" && typeof message.data === "string") {
        // Bytes, not text: xterm decodes UTF-8 itself, across chunk boundaries.
        this.term.write(base64ToBytes(message.data));
      } else if (message.type === "error") {
        this.term.write(`\r\n\x1b[31m[${String(message.data)}]\x1b[0m\r\n`);
      }
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      clearInterval(this.pingTimer);
      const why = event.reason ? ` (${event.reason})` : "";
      this.setState(`The terminal closed${why}.`);
      this.el.reconnect.hidden = this.kernelId === null;
    });
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
    }
  }

  disconnect() {
    clearInterval(this.pingTimer);
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000, "closed by the page"); // ends the shell, never the kernel
    }
    this.el.reconnect.hidden = true;
  }

  setState(text) {
    this.el.state.textContent = text;
  }
}
