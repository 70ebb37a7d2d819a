// The nodejs kernel's persistent context: one long-lived Node.js process per
// kernel, started by the Python runner (see node_repl.py), which runs each
// query in the same global scope, so variables, functions and required
// modules survive between queries until the kernel restarts.
//
// Wire, between this process and the runner (nothing else reaches the host):
//   command fd (argv[1]) in:  one JSON object per line, {"code": "..."}
//   result fd (argv[2]) out: {"ready": true} once, then one {"exitCode": n}
//                            line when each query is over
// fd 0 is the program's stdin pipe (input() through the runner's waiting-input),
// fds 1 and 2 are the console pipes, written synchronously by Node on Linux.
//
// A query is over when its code has run and nothing it started still keeps the
// event loop alive (timers, sockets, child processes, a stdin reader that was
// not paused), as for `node main.js`. Its value is not echoed. Exit codes:
// 0, 1 after an uncaught exception (also one thrown later in a callback), 130
// after an interrupt (SIGINT, sent by the runner only while a query runs).
// process.exit() ends this process; the runner reports that and starts a new
// one, with a fresh context, for the next query.
'use strict';
(function main() {
  const fs = require('fs');
  const net = require('net');
  const path = require('path');
  const vm = require('vm');
  const { createRequire } = require('module');

  const CMD_FD = Number(process.argv[1]);
  const RESULT_FD = Number(process.argv[2]);
  const IDLE_CHECK_MS = 1;

  // require() from queries resolves like a script in the working directory.
  globalThis.require = createRequire(path.join(process.cwd(), '[query]'));

  // process.stdin is created on first use; note when that happens, so the idle
  // check can ask whether a reader is still waiting on it.
  let stdinUsed = false;
  const stdinDescriptor = Object.getOwnPropertyDescriptor(process, 'stdin');
  Object.defineProperty(process, 'stdin', {
    configurable: true,
    enumerable: stdinDescriptor.enumerable,
    get() {
      stdinUsed = true;
      return stdinDescriptor.get.call(process);
    },
  });

  let running = false;
  let exitCode = 0;

  // Frames below the user's code are this file's and Node's: cut them.
  function trimStack(stack) {
    const kept = [];
    for (const line of stack.split('\n')) {
      if (/^\s+at /.test(line) && !line.includes('<input>')) break;
      kept.push(line);
    }
    return kept.join('\n');
  }

  function report(error) {
    let text;
    if (error instanceof Error && error.stack) {
      text = trimStack(error.stack);
    } else {
      try {
        text = 'Uncaught ' + require('util').inspect(error);
      } catch (_) {
        text = 'Uncaught exception';
      }
    }
    fs.writeSync(2, text + '\n');
    exitCode = 1;
  }

  process.on('uncaughtException', report);
  process.on('unhandledRejection', report);
  process.on('SIGINT', () => {
    if (running) {
      fs.writeSync(2, 'KeyboardInterrupt\n');
      finish(130);
    }
  });

  // Resources that keep the loop alive but belong to this process, not a query.
  function resourceCounts() {
    const counts = new Map();
    for (const kind of process.getActiveResourcesInfo()) {
      counts.set(kind, (counts.get(kind) || 0) + 1);
    }
    if (stdinUsed) {
      const stdin = stdinDescriptor.get.call(process);
      if (!stdin.destroyed && stdin.readableFlowing !== true) {
        // a paused or never-read stdin waits for nobody
        for (const kind of ['PipeWrap', 'TTYWrap', 'FSReqCallback']) {
          if (counts.get(kind)) {
            counts.set(kind, counts.get(kind) - 1);
            break;
          }
        }
      }
    }
    return counts;
  }

  let baseline = new Map();

  // inTimer: called from the check's own timer, which still counts while it runs
  function busy(inTimer) {
    for (const [kind, n] of resourceCounts()) {
      const own = inTimer && kind === 'Timeout' ? 1 : 0;
      if (n - own > (baseline.get(kind) || 0)) return true;
    }
    return false;
  }

  function finish(code) {
    if (!running) return;
    running = false;
    fs.writeSync(RESULT_FD, JSON.stringify({ exitCode: code }) + '\n');
  }

  function waitIdle(inTimer) {
    if (!running) return;
    if (busy(inTimer)) {
      setTimeout(waitIdle, IDLE_CHECK_MS, true);
    } else {
      finish(exitCode);
    }
  }

  function runQuery(code) {
    running = true;
    exitCode = 0;
    try {
      const script = new vm.Script(code, { filename: '<input>' });
      const value = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
      if (value !== null && typeof value === 'object' && typeof value.then === 'function') {
        value.then(undefined, report);
      }
    } catch (error) {
      if (error && error.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED') {
        fs.writeSync(2, 'KeyboardInterrupt\n');
        finish(130);
        return;
      }
      report(error);
    }
    setImmediate(waitIdle, false);
  }

  const commands = new net.Socket({ fd: CMD_FD, readable: true, writable: false });
  let pending = '';
  commands.setEncoding('utf8');
  commands.on('data', (chunk) => {
    pending += chunk;
    let newline;
    while ((newline = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      let message;
      try {
        message = JSON.parse(line);
      } catch (_) {
        continue;
      }
      if (!running && typeof message.code === 'string') runQuery(message.code);
    }
  });
  commands.on('end', () => process.exit(0));
  commands.on('error', () => process.exit(0));

  setImmediate(() => {
    // the console streams are created on first use: make them part of the baseline
    void process.stdout;
    void process.stderr;
    baseline = resourceCounts(); // includes the command pipe, which keeps this process up
    fs.writeSync(RESULT_FD, JSON.stringify({ ready: true }) + '\n');
  });
})();
