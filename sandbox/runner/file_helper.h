/*
 * The file helper: kernel-init's worker for the host's file operations (upload,
 * download, list), a Python process started on demand.
 *
 * Why a helper and not the runner: the runner is busy while user code runs, and
 * a file operation must be answered meanwhile; and why not here: pid 1 is kept
 * small and parses no JSON it need not (runner/files.py does the work).
 *
 * Included by kernel_init.c (after its buffer, frame and host helpers).
 *
 * The helper is `PYTHON -I -S /proc/self/fd/4 WORK_DIR` (fd 4: the zip of
 * runner/files.py and its __main__), started at the first operation and told to
 * end (its socket closed) once it has had nothing to do for HELPER_IDLE_MS. It
 * runs as the kernel's user, like everything here, and answers one frame per
 * request, in order. Its frames must be replies to the oldest request it holds,
 * parsed strictly (helper_reply.h: a duplicate key must not turn a reply into
 * an "exited"); each is forwarded with FOR_PID1. Anything else: the helper is
 * killed, and its requests fail. If it cannot start or dies with requests
 * outstanding, each of those gets an error reply from here.
 */
#include "helper_reply.h"

#define HELPER_IDLE_MS 5000
#define MAX_PENDING 64 /* file operations outstanding at the helper */
#define RID_SIZE 24

static pid_t helper_pid;
static int helper_fd = -1;
static struct buf helper_in, helper_out;
static char pending[MAX_PENDING][RID_SIZE]; /* rids sent to the helper, oldest first */
static int n_pending;
static struct timespec helper_idle_since;

/* The "rid" of a file operation's JSON as its text ("null" if it has none): the
 * host's encoder writes "rid":<integer>. */
static void find_rid(const char *json, size_t len, char rid[RID_SIZE]) {
    static const char key[] = "\"rid\":";
    strcpy(rid, "null");
    const char *p = memmem(json, len, key, sizeof key - 1);
    if (!p)
        return;
    p += sizeof key - 1;
    size_t n = 0;
    while (p + n < json + len && n < RID_SIZE - 1 && (p[n] == '-' || (p[n] >= '0' && p[n] <= '9')))
        n++;
    if (n) {
        memcpy(rid, p, n);
        rid[n] = 0;
    }
}

static void fail_request(const char *rid, const char *reason) {
    char json[256];
    snprintf(json, sizeof json, "{\"ev\":\"reply\",\"rid\":%s,\"ok\":false,\"error\":\"%s\"}",
             rid, reason);
    to_host_pid1(json);
}

/* The helper is gone or never came: every request it held fails. */
static void helper_lost(const char *reason) {
    if (helper_fd >= 0)
        close(helper_fd);
    helper_fd = -1;
    helper_in.start = helper_in.end = 0;
    helper_out.start = helper_out.end = 0;
    for (int i = 0; i < n_pending; i++)
        fail_request(pending[i], reason);
    n_pending = 0;
}

static int start_helper(void) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int sig = 1; sig < NSIG; sig++)
            signal(sig, SIG_DFL);
        signal(SIGPIPE, SIG_IGN); /* as Python sets it: an EPIPE instead */
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0 ||
            dup2(sv[1], 3) < 0 || dup2(HELPER_ZIP_FD, 4) < 0)
            _exit(127);
        close_range(5, ~0U, 0);
        char *argv[] = {(char *)python, "-I", "-S", "/proc/self/fd/4", (char *)work_dir, NULL};
        char *envp[] = {"LC_ALL=C.UTF-8", NULL};
        execve(python, argv, envp);
        _exit(127);
    }
    close(sv[1]);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    helper_pid = pid;
    helper_fd = sv[0];
    return 0;
}

/* A file operation from the host (its header's flag cleared): to the helper. */
static void file_op(const char *frame, size_t total) {
    uint32_t jlen = get_u32(frame) & ~FLAGS;
    char rid[RID_SIZE];
    find_rid(frame + HEADER_SIZE, jlen, rid);
    if (n_pending == MAX_PENDING) {
        fail_request(rid, "too many file operations at once");
        return;
    }
    if (helper_fd < 0 && start_helper() < 0) {
        char reason[128];
        snprintf(reason, sizeof reason, "file operations cannot start: %s", strerror(errno));
        fail_request(rid, reason);
        return;
    }
    strcpy(pending[n_pending++], rid);
    char header[HEADER_SIZE];
    put_header(header, jlen, get_u32(frame + 4));
    buf_add(&helper_out, header, HEADER_SIZE);
    buf_add(&helper_out, frame + HEADER_SIZE, total - HEADER_SIZE);
    if (buf_flush(&helper_out, helper_fd) < 0)
        helper_lost("file operations stopped: the helper is gone");
}

static void read_helper(void) {
    ssize_t n = buf_read(&helper_in, helper_fd, 4 * READ_CHUNK);
    if (n < 0)
        return;
    if (n == 0) {
        helper_lost("file operations stopped: the helper exited");
        return;
    }
    for (;;) {
        uint32_t jword, blen;
        long total = frame_at(&helper_in, &jword, &blen);
        if (total == 0)
            return;
        const char *json = helper_in.data + helper_in.start + HEADER_SIZE;
        if (total < 0 || (jword & FLAGS) || n_pending == 0 ||
            !helper_reply_ok(json, jword, pending[0])) {
            kill(helper_pid, SIGKILL); /* not what our helper sends: user code got to it */
            helper_lost("file operations stopped: the helper misbehaved");
            return;
        }
        char *frame = helper_in.data + helper_in.start;
        put_header(frame, jword | FOR_PID1, blen);
        to_host(frame, (size_t)total);
        buf_take(&helper_in, (size_t)total);
        memmove(pending[0], pending[1], (size_t)--n_pending * RID_SIZE);
        if (n_pending == 0)
            clock_gettime(CLOCK_MONOTONIC, &helper_idle_since);
    }
}

/* The helper's poll entry (0 or 1 of them), and the poll timeout its idle time
 * sets: an idle helper past HELPER_IDLE_MS is told to end here (it exits when
 * it sees EOF). */
static nfds_t helper_poll_fd(struct pollfd *p, int *timeout) {
    if (helper_fd < 0)
        return 0;
    if (n_pending == 0) {
        long left = HELPER_IDLE_MS - ms_since(&helper_idle_since);
        if (left <= 0) {
            close(helper_fd);
            helper_fd = -1;
            return 0;
        }
        if (*timeout < 0 || left < *timeout)
            *timeout = (int)left;
    }
    p->fd = helper_fd;
    p->events = (short)(POLLIN | (buf_len(&helper_out) ? POLLOUT : 0));
    return 1;
}

static void helper_ready(const struct pollfd *p) {
    if (helper_fd < 0 || p->fd != helper_fd || !p->revents)
        return;
    if (p->revents & POLLOUT && buf_flush(&helper_out, helper_fd) < 0)
        helper_lost("file operations stopped: the helper is gone");
    else if (p->revents & (POLLIN | POLLHUP | POLLERR))
        read_helper();
}

/* Whether pid was the helper (reaped): its outstanding requests fail. */
static int helper_reaped(pid_t pid) {
    if (!helper_pid || pid != helper_pid)
        return 0;
    helper_pid = 0;
    if (helper_fd >= 0)
        helper_lost("file operations stopped: the helper exited");
    return 1;
}
