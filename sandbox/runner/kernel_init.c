/*
 * kernel-init: pid 1 of a kernel in server mode, the relay between the host and
 * the runner.
 *
 * The process that becomes pid 1 (sandbox/pid1.py) builds the kernel, forks the
 * runner (a fork of the zygote's Python: sandbox/runner/forking.py) and then
 * execs this program in its own place (forking.Runner.serve). A Python pid 1
 * held about 2.5 MiB of pages of its own in every kernel, idle or not; this
 * one holds a few.
 *
 *     host socket  <->  kernel-init  <->  runner: fd 3 (control socket, framed)
 *                           ^  ^-------  runner: fd 1, fd 2 (pipes; only we read them)
 *                           |`--------->  file helper (python3 -I -S, on demand)
 *                           `---------->  terminals: shells on ptys (pty_relay.h)
 *
 * Frames (sandbox/runner/protocol.py): an 8-byte header, two big-endian u32
 * (JSON length, blob length), the JSON, the blob. The top two bits of the JSON
 * length are flags, never part of the length:
 *   FOR_PID1  host -> kernel: a file operation, which the file helper does;
 *             kernel -> host: a frame pid 1 made (a file operation's "reply",
 *             "exited"). The host believes those two events only with it.
 *   INTERRUPT host -> kernel: SIGINT the runner's process group.
 *   both      host -> kernel: a terminal op (open, input, resize, close), done
 *             here (pty_relay.h), or the job watch's (job_watch.h);
 *             kernel -> host: "pty-out", "pty-exit".
 *   NO_ACK    runner -> pid 1 (the INTERRUPT bit): a frame the runner does not
 *             wait on, so we send no ack for it (see below); cleared before the
 *             frame goes on to the host.
 * Host frames without flags go to the runner as they are. The runner is
 * untrusted (user code can write anything to fd 3): a frame from it with
 * FOR_PID1, or over the size limits, or its closing fd 3 is a protocol violation:
 * the runner's process group is killed and the kernel ends with "exited" once
 * the runner is reaped. The JSON of the runner's frames is not parsed here;
 * the host checks it.
 *
 * Order of output: before each frame from the runner is forwarded, the pipes
 * are drained (their data goes first, as "stdout"/"stderr" frames), and each
 * frame is acknowledged to the runner with {"op":"ack"}; its writes wait for
 * that ack (see runner/channel.py), so nothing the runner writes to a pipe
 * after a frame can be drained ahead of it. The frames its main loop sends
 * between ops ("ready", "finished", a reply) come NO_ACK: nothing of the runner
 * runs after them that could write to a pipe, and an ack the runner did not
 * wait for was a wake-up of it, and a write of ours ahead of the host's, per
 * query.
 *
 * File operations run in a helper process started on demand (file_helper.h);
 * its replies are checked strictly before they go to the host with FOR_PID1.
 *
 * When the runner exits: what it left in fd 3 and the pipes is forwarded, then
 * {"ev":"exited","status":<wait status>}, and we exit; the pid namespace takes
 * everything else down. When the host socket closes we exit at once.
 *
 * A one-shot job's last step may run in the runner's own place: the host sets a
 * watch up (a pid-1 op, job_watch.h), the runner hands itself over by closing
 * fd 3, and we cut its output, stop it at its wall time and report its CPU time
 * with "exited".
 *
 * Usage: kernel-init RUNNER_PID PYTHON WORK_DIR STATUS_FD
 *   fds: 3 host socket, 5 the runner's control socket, 6 its stdout pipe, 7 its stderr
 *   pipe, 8 the helper's zip; STATUS_FD (or -1): "ok\n" is written to it and
 *   it is closed once we run (the spawner's sign that the kernel started).
 *
 * Standard C library only: this runs inside the kernel. Built (static) by
 * sandbox/kernel_init_build.py.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { HOST_FD = 3, CTL_FD = 5, OUT_FD = 6, ERR_FD = 7, HELPER_ZIP_FD = 8 };

#define HEADER_SIZE 8
#define MAX_JSON (4u * 1024 * 1024)
#define MAX_BLOB (16u * 1024 * 1024)
#define FOR_PID1 0x80000000u
#define INTERRUPT 0x40000000u
#define FLAGS (FOR_PID1 | INTERRUPT)
#define NO_ACK INTERRUPT /* runner -> pid 1 */
#define READ_CHUNK (64 * 1024)
/* One drain of a pipe reads at most this much: a full pipe (at most 1 MiB,
 * Linux's default pipe-max-size) plus a chunk, so a background process that
 * floods a pipe cannot keep us in the drain loop forever. */
#define DRAIN_LIMIT (1024 * 1024 + READ_CHUNK)

static const char ACK[] = "\0\0\0\x0c\0\0\0\0{\"op\":\"ack\"}";
#define ACK_SIZE (sizeof ACK - 1)

/* A byte queue: data[start, end) is pending. */
struct buf {
    char *data;
    size_t start, end, cap;
};

static pid_t runner_pid;
static int runner_reading = 1; /* 0 after a protocol violation or EOF on fd 3 */
static int runner_status = -1; /* wait status once the runner is reaped */
static int runner_reaped;
static int pipes[2] = {OUT_FD, ERR_FD}; /* -1 once closed */
static const char *const pipe_names[2] = {"stdout", "stderr"};
static struct buf host_in, runner_in, runner_out;

static const char *python, *work_dir;

/* -- small helpers ---------------------------------------------------------- */

static void die(const char *what) {
    dprintf(2, "kernel-init: %s: %s\n", what, strerror(errno));
    if (runner_pid > 0)
        kill(-runner_pid, SIGKILL);
    _exit(125);
}

static void *grow(void *p, size_t size) {
    p = realloc(p, size);
    if (!p)
        die("out of memory");
    return p;
}

static size_t buf_len(const struct buf *b) { return b->end - b->start; }

static void buf_add(struct buf *b, const void *data, size_t n) {
    if (b->start == b->end)
        b->start = b->end = 0;
    if (b->end + n > b->cap) {
        if (b->start) { /* move what is pending to the front first */
            memmove(b->data, b->data + b->start, b->end - b->start);
            b->end -= b->start;
            b->start = 0;
        }
        if (b->end + n > b->cap) {
            b->cap = b->end + n > 2 * b->cap ? b->end + n : 2 * b->cap;
            b->data = grow(b->data, b->cap);
        }
    }
    memcpy(b->data + b->end, data, n);
    b->end += n;
}

/* Drop n consumed bytes; a large buffer that is empty again goes back to the system. */
static void buf_take(struct buf *b, size_t n) {
    b->start += n;
    if (b->start == b->end && b->cap > 256 * 1024) {
        free(b->data);
        memset(b, 0, sizeof *b);
    }
}

/* Read what fd has into b: >0 bytes read, 0 at EOF (or an error), -1 if nothing is there. */
static ssize_t buf_read(struct buf *b, int fd, size_t max) {
    if (b->start == b->end)
        b->start = b->end = 0;
    if (b->cap - b->end < max) {
        b->cap = b->end + max;
        b->data = grow(b->data, b->cap);
    }
    ssize_t n = read(fd, b->data + b->end, max);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? -1 : 0;
    b->end += (size_t)n;
    return n;
}

/* Write what b holds to a non-blocking fd; returns -1 if the fd is broken. */
static int buf_flush(struct buf *b, int fd) {
    while (buf_len(b)) {
        ssize_t n = write(fd, b->data + b->start, buf_len(b));
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        buf_take(b, (size_t)n);
    }
    return 0;
}

static uint32_t get_u32(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static void put_header(char *p, uint32_t jlen, uint32_t blen) {
    for (int i = 0; i < 4; i++) {
        p[i] = (char)(jlen >> (24 - 8 * i));
        p[4 + i] = (char)(blen >> (24 - 8 * i));
    }
}

/* A complete frame at the front of b: its header words (flags kept) and size,
 * 0 if it is not all there yet, -1 if its lengths are over the limits. */
static long frame_at(const struct buf *b, uint32_t *jword, uint32_t *blen) {
    if (buf_len(b) < HEADER_SIZE)
        return 0;
    *jword = get_u32(b->data + b->start);
    *blen = get_u32(b->data + b->start + 4);
    if ((*jword & ~FLAGS) > MAX_JSON || *blen > MAX_BLOB)
        return -1;
    size_t total = HEADER_SIZE + (*jword & ~FLAGS) + (size_t)*blen;
    return buf_len(b) < total ? 0 : (long)total;
}

static long ms_since(const struct timespec *t) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

/* -- the host ----------------------------------------------------------------- */

static _Noreturn void host_gone(void) {
    kill(-runner_pid, SIGKILL);
    _exit(0);
}

/* Blocking writes to the host: back-pressure when it does not read. */
static void to_host_iov(struct iovec *iov, int n) {
    while (n) {
        ssize_t done = writev(HOST_FD, iov, n);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            host_gone();
        }
        while (n && (size_t)done >= iov->iov_len) {
            done -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= (size_t)done;
        }
    }
}

static void to_host(const void *data, size_t n) {
    struct iovec iov = {(void *)data, n};
    to_host_iov(&iov, 1);
}

/* A frame of pid 1's own: FOR_PID1, a JSON made here, no blob. */
static void to_host_pid1(const char *json) {
    char header[HEADER_SIZE];
    put_header(header, (uint32_t)strlen(json) | FOR_PID1, 0);
    struct iovec iov[2] = {{header, HEADER_SIZE}, {(void *)json, strlen(json)}};
    to_host_iov(iov, 2);
}

/* -- the job watch ------------------------------------------------------------ */

#include "job_watch.h"

/* -- the pipes ---------------------------------------------------------------- */

/* Read up to limit bytes from pipe i and send them as its frames. */
static void read_pipe(int i, size_t limit) {
    static char chunk[READ_CHUNK];
    size_t total = 0;
    while (pipes[i] >= 0 && total < limit) {
        ssize_t n = read(pipes[i], chunk, sizeof chunk);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (n <= 0) {
            close(pipes[i]);
            pipes[i] = -1;
            break;
        }
        total += (size_t)n;
        size_t keep = watch_room(i, (size_t)n);
        if (keep == 0)
            continue;
        char json[32], header[HEADER_SIZE];
        int jlen = snprintf(json, sizeof json, "{\"ev\":\"%s\"}", pipe_names[i]);
        put_header(header, (uint32_t)jlen, (uint32_t)keep);
        struct iovec iov[3] = {{header, HEADER_SIZE}, {json, (size_t)jlen}, {chunk, keep}};
        to_host_iov(iov, 3);
    }
}

/* Forward whatever is in the pipes now. */
static void drain_pipes(void) {
    struct pollfd p[2];
    int n = 0;
    for (int i = 0; i < 2; i++)
        if (pipes[i] >= 0)
            p[n++] = (struct pollfd){.fd = pipes[i], .events = POLLIN};
    if (n == 0 || poll(p, (nfds_t)n, 0) <= 0)
        return;
    for (int k = 0; k < n; k++)
        if (p[k].revents)
            read_pipe(p[k].fd == OUT_FD ? 0 : 1, DRAIN_LIMIT);
}

/* -- the runner --------------------------------------------------------------- */

static void violation(void) {
    kill(-runner_pid, SIGKILL);
    runner_reading = 0;
    runner_out.start = runner_out.end = 0;
}

static void flush_runner(void) {
    if (buf_flush(&runner_out, CTL_FD) < 0) /* it closed its end or died; reaping will tell */
        runner_out.start = runner_out.end = 0;
}

/* Take what the runner sent and forward each whole frame after the pipe data before it.
 * Returns 0 when there was nothing more to read. */
static int read_runner(int final) {
    ssize_t n = buf_read(&runner_in, CTL_FD, 4 * READ_CHUNK);
    if (n < 0)
        return 0;
    if (n == 0) {
        if (!watch_arm(final) && !final)
            violation();
        runner_reading = 0;
        return 0;
    }
    for (;;) {
        uint32_t jword, blen;
        long total = frame_at(&runner_in, &jword, &blen);
        if (total < 0 || (total > 0 && (jword & FOR_PID1))) {
            if (!final)
                violation();
            runner_reading = 0;
            return 0;
        }
        if (total == 0)
            break;
        drain_pipes();
        if (jword & NO_ACK) {
            put_header(runner_in.data + runner_in.start, jword & ~NO_ACK, blen);
        } else {
            buf_add(&runner_out, ACK, ACK_SIZE);
            flush_runner(); /* let the runner go on while the host write below may block */
        }
        to_host(runner_in.data + runner_in.start, (size_t)total);
        buf_take(&runner_in, (size_t)total);
    }
    return 1;
}

/* The runner is gone: forward what it left behind, report its status, exit. */
static _Noreturn void finish(void) {
    for (int i = 0; runner_reading && i < 64; i++) /* bounded: a grandchild may still spam fd 3 */
        if (!read_runner(1))
            break;
    for (int i = 0; i < 2; i++)
        if (pipes[i] >= 0)
            read_pipe(i, DRAIN_LIMIT);
    char json[192];
    watch_exited(json, sizeof json, runner_status);
    to_host_pid1(json);
    kill(-runner_pid, SIGKILL);
    _exit(0);
}

/* -- the file helper ---------------------------------------------------------- */

#include "file_helper.h"

/* -- terminals ------------------------------------------------------------------ */

#include "pty_relay.h"

/* -- host -> runner, and the rest --------------------------------------------- */

/* An op for pid 1 itself (both flags): the job watch's, or a terminal's. */
static void pid1_op(const char *frame, size_t total) {
    size_t jlen = get_u32(frame) & ~FLAGS;
    const char *blob = frame + HEADER_SIZE + jlen;
    size_t blen = total - HEADER_SIZE - jlen;
    if (blen >= 1 && blob[0] == WATCH_OP)
        watch_op(blob, blen);
    else
        pty_op(frame, total);
}

static void read_host(void) {
    ssize_t n = buf_read(&host_in, HOST_FD, 4 * READ_CHUNK);
    if (n < 0)
        return;
    if (n == 0)
        host_gone();
    for (;;) {
        uint32_t jword, blen;
        long total = frame_at(&host_in, &jword, &blen);
        if (total < 0)
            host_gone();
        if (total == 0)
            break;
        const char *frame = host_in.data + host_in.start;
        if ((jword & FLAGS) == FLAGS)
            pid1_op(frame, (size_t)total);
        else if (jword & INTERRUPT)
            kill(-runner_pid, SIGINT);
        else if (jword & FOR_PID1)
            file_op(frame, (size_t)total);
        else if (runner_reading)
            buf_add(&runner_out, frame, (size_t)total);
        buf_take(&host_in, (size_t)total);
    }
    flush_runner();
}

static void reap(void) {
    int status;
    pid_t pid;
    struct rusage usage;
    while ((pid = wait4(-1, &status, WNOHANG, &usage)) > 0) {
        if (pid == runner_pid) {
            runner_status = status;
            runner_reaped = 1;
            watch.usage = usage;
        } else if (!helper_reaped(pid)) {
            pty_reaped(pid, status);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        dprintf(2, "usage: kernel-init C_PID PYTHON WORK_DIR STATUS_FD\n");
        return 125;
    }
    /* Not dumpable: user code runs as our uid, and /proc/1/mem would be its way in. */
    prctl(PR_SET_DUMPABLE, 0);
    prctl(PR_SET_NAME, "kernel-init");
    runner_pid = atoi(argv[1]);
    python = argv[2];
    work_dir = argv[3];
    int status_fd = atoi(argv[4]);

    /* User code runs as the same uid: it must not stop us with a signal. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sig_fd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sig_fd < 0)
        die("signalfd");
    for (int fd = CTL_FD; fd <= HELPER_ZIP_FD; fd++)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(CTL_FD, F_SETFL, O_NONBLOCK);
    fcntl(OUT_FD, F_SETFL, O_NONBLOCK);
    fcntl(ERR_FD, F_SETFL, O_NONBLOCK);
    fcntl(HOST_FD, F_SETFD, FD_CLOEXEC);
    fcntl(HOST_FD, F_SETFL, fcntl(HOST_FD, F_GETFL) & ~O_NONBLOCK);
    if (status_fd >= 0) {
        if (write(status_fd, "ok\n", 3) != 3)
            die("status");
        close(status_fd);
    }

    reap(); /* a child that died before SIGCHLD was blocked sent no signal to read */
    for (;;) {
        if (runner_reaped)
            finish();
        struct pollfd p[6 + MAX_PTYS];
        struct pty *owners[MAX_PTYS];
        nfds_t n = 0;
        p[n++] = (struct pollfd){.fd = sig_fd, .events = POLLIN};
        p[n++] = (struct pollfd){.fd = HOST_FD, .events = POLLIN};
        short runner_events =
            (short)((runner_reading ? POLLIN : 0) | (buf_len(&runner_out) ? POLLOUT : 0));
        p[n++] = (struct pollfd){.fd = runner_events ? CTL_FD : -1, .events = runner_events};
        for (int i = 0; i < 2; i++)
            p[n++] = (struct pollfd){.fd = pipes[i], .events = POLLIN};
        int timeout = -1;
        nfds_t helper_at = n;
        n += helper_poll_fd(p + n, &timeout);
        int wall_left = watch_timeout();
        if (wall_left >= 0 && (timeout < 0 || wall_left < timeout))
            timeout = wall_left;
        nfds_t ptys_at = n;
        n += pty_poll_fds(p + n, owners);
        if (poll(p, n, timeout) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (p[0].revents) { /* read before the reap: a SIGCHLD after it stays pending */
            struct signalfd_siginfo info;
            while (read(sig_fd, &info, sizeof info) > 0)
                ;
            reap();
        }
        if (p[2].revents & POLLOUT)
            flush_runner();
        if (p[2].revents & (POLLIN | POLLHUP | POLLERR))
            read_runner(0);
        for (int i = 0; i < 2; i++)
            if (p[3 + i].revents && pipes[i] >= 0)
                read_pipe(i, READ_CHUNK);
        if (helper_at < n)
            helper_ready(&p[helper_at]);
        pty_ready(p + ptys_at, owners, n - ptys_at);
        if (p[1].revents)
            read_host();
    }
}
