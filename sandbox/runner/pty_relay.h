/*
 * Terminals: shells on ptys inside a kernel, relayed by kernel-init (pid 1).
 *
 * Included by kernel_init.c (after its host and buffer helpers). Pid 1 owns the
 * terminals, not the runner: the runner is single-threaded and busy while user
 * code runs, and a terminal must answer meanwhile. Every shell is forked here,
 * so it has the kernel's namespaces, cgroup, seccomp filter and uid; it gets the
 * environment and argv the host sends, /home/work as its cwd, and RLIMIT_CPU at
 * the kernel's exec timeout (a busy program in it is stopped after that much CPU
 * time; an idle shell or editor lives on).
 *
 * Host -> pid 1: a frame flagged FOR_PID1 | INTERRUPT (both: "a terminal op").
 * Its JSON is not read; its blob is the op, in a fixed binary form (the host is
 * trusted, but fixed fields keep this C small):
 *   u8 op, u32 tid (big-endian), then by op:
 *   PTY_OPEN    u16 rows, u16 cols, u32 cpu seconds, u16 argc, u16 envc,
 *               argc + envc NUL-terminated strings
 *   PTY_INPUT   the bytes to type
 *   PTY_RESIZE  u16 rows, u16 cols
 *   PTY_CLOSE   nothing: every process of the shell's session is killed
 * Pid 1 -> host, flagged FOR_PID1 (the host believes these only with the flag):
 *   {"ev":"pty-out","tid":N} + what the pty printed (at most READ_CHUNK a frame)
 *   {"ev":"pty-exit","tid":N,"status":S}  the shell's wait status, after its last
 *   output; -1 if it could not start (its reason was printed on the pty first,
 *   or, if there was no pty, is lost)
 *
 * When a shell exits, what is left of its session is killed, as when a terminal
 * window closes; a process that left the session (setsid) lives on as any
 * background process of the kernel does, until the kernel ends.
 *
 * Typed input waits in a buffer of at most PTY_INPUT_MAX bytes while the program
 * does not read its terminal; more is dropped, as a full tty line drops it.
 */
#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <termios.h>

#define MAX_PTYS 8
#define PTY_INPUT_MAX (1024 * 1024)
#define PTY_MAX_STRINGS 512
enum { PTY_OPEN = 1, PTY_INPUT = 2, PTY_RESIZE = 3, PTY_CLOSE = 4 };

struct pty {
    int used;
    uint32_t tid;
    int master; /* -1 once the slave side is gone (EIO) and all is read */
    int slave;  /* ours, held until the shell is reaped: no EIO before it opens it */
    pid_t pid;  /* the shell, the leader of its session; 0 once reaped */
    int status; /* its wait status, once reaped */
    struct buf in;
};

static struct pty ptys[MAX_PTYS];
extern char **environ;

static uint16_t get_u16(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint16_t)(u[0] << 8 | u[1]);
}

static struct pty *pty_find(uint32_t tid) {
    for (int i = 0; i < MAX_PTYS; i++)
        if (ptys[i].used && ptys[i].tid == tid)
            return &ptys[i];
    return NULL;
}

static void pty_event(uint32_t tid, int status) {
    char json[80];
    snprintf(json, sizeof json, "{\"ev\":\"pty-exit\",\"tid\":%u,\"status\":%d}", tid, status);
    to_host_pid1(json);
}

/* SIGKILL every process whose session is sid (read off /proc/<pid>/stat). */
static void kill_session(pid_t sid) {
    DIR *proc = opendir("/proc");
    if (!proc)
        return;
    struct dirent *e;
    while ((e = readdir(proc))) {
        pid_t pid = atoi(e->d_name);
        if (pid <= 1)
            continue;
        char path[64], stat[512];
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, stat, sizeof stat - 1);
        close(fd);
        if (n <= 0)
            continue;
        stat[n] = 0;
        char *end = strrchr(stat, ')'); /* the name may hold spaces and parentheses */
        int ppid, pgrp, session;
        char state;
        if (end && sscanf(end + 1, " %c %d %d %d", &state, &ppid, &pgrp, &session) == 4 &&
            session == sid)
            kill(pid, SIGKILL);
    }
    closedir(proc);
}

static _Noreturn void pty_child(int slave, uint32_t cpu, char **argv, char **envp) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) < 0 || dup2(slave, 0) < 0 ||
        dup2(slave, 1) < 0 || dup2(slave, 2) < 0)
        _exit(127);
    close_range(3, ~0U, 0);
    if (cpu) {
        struct rlimit limit = {cpu, cpu + 1}; /* SIGXCPU, then SIGKILL a second later */
        setrlimit(RLIMIT_CPU, &limit);
    }
    if (chdir(work_dir) < 0)
        dprintf(2, "kernel-init: %s: %s\n", work_dir, strerror(errno));
    environ = envp;
    execvp(argv[0], argv);
    dprintf(2, "kernel-init: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* Split n NUL-terminated strings off data[0, len) into out (NULL-terminated). */
static int pty_strings(const char **data, size_t *len, int n, char **out) {
    for (int i = 0; i < n; i++) {
        const char *end = memchr(*data, 0, *len);
        if (!end)
            return -1;
        out[i] = (char *)*data;
        *len -= (size_t)(end - *data) + 1;
        *data = end + 1;
    }
    out[n] = NULL;
    return 0;
}

static void pty_open(uint32_t tid, const char *p, size_t len) {
    if (len < 12 || pty_find(tid)) {
        pty_event(tid, -1);
        return;
    }
    struct pty *t = NULL;
    for (int i = 0; i < MAX_PTYS && !t; i++)
        if (!ptys[i].used)
            t = &ptys[i];
    uint16_t rows = get_u16(p), cols = get_u16(p + 2), argc = get_u16(p + 8),
             envc = get_u16(p + 10);
    uint32_t cpu = get_u32(p + 4);
    static char *strings[PTY_MAX_STRINGS + 2];
    const char *rest = p + 12;
    size_t left = len - 12;
    if (!t || argc == 0 || argc + envc > PTY_MAX_STRINGS ||
        pty_strings(&rest, &left, argc, strings) < 0 ||
        pty_strings(&rest, &left, envc, strings + argc + 1) < 0) {
        pty_event(tid, -1);
        return;
    }
    char name[64];
    int slave = -1, master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0 ||
        ptsname_r(master, name, sizeof name) != 0 ||
        (slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
        if (master >= 0)
            close(master);
        pty_event(tid, -1);
        return;
    }
    /* the size is set here, before the fork: set in the child, it could land after
     * a resize that pid 1 took meanwhile and undo it */
    struct winsize size = {.ws_row = rows, .ws_col = cols};
    ioctl(master, TIOCSWINSZ, &size);
    pid_t pid = fork();
    if (pid == 0)
        pty_child(slave, cpu, strings, strings + argc + 1);
    if (pid < 0) {
        close(master);
        close(slave);
        pty_event(tid, -1);
        return;
    }
    fcntl(master, F_SETFL, O_NONBLOCK);
    *t = (struct pty){.used = 1, .tid = tid, .master = master, .slave = slave, .pid = pid};
}

static void pty_flush(struct pty *t) {
    if (t->master >= 0 && buf_flush(&t->in, t->master) < 0)
        t->in.start = t->in.end = 0;
}

/* A terminal op from the host (the frame whole, its flags set). */
static void pty_op(const char *frame, size_t total) {
    size_t jlen = get_u32(frame) & ~FLAGS;
    const char *blob = frame + HEADER_SIZE + jlen;
    size_t blen = total - HEADER_SIZE - jlen;
    if (blen < 5)
        return;
    uint32_t tid = get_u32(blob + 1);
    struct pty *t = pty_find(tid);
    switch (blob[0]) {
    case PTY_OPEN:
        pty_open(tid, blob + 5, blen - 5);
        break;
    case PTY_INPUT:
        if (t && t->master >= 0 && buf_len(&t->in) + blen - 5 <= PTY_INPUT_MAX) {
            buf_add(&t->in, blob + 5, blen - 5);
            pty_flush(t);
        }
        break;
    case PTY_RESIZE:
        if (t && t->master >= 0 && blen >= 9) {
            struct winsize size = {.ws_row = get_u16(blob + 5), .ws_col = get_u16(blob + 7)};
            ioctl(t->master, TIOCSWINSZ, &size);
        }
        break;
    case PTY_CLOSE:
        if (t) {
            if (t->pid)
                kill_session(t->pid);
            if (t->master >= 0)
                close(t->master);
            if (t->slave >= 0)
                close(t->slave);
            t->master = t->slave = -1;
            t->in.start = t->in.end = 0; /* its exit is still reported once reaped */
        }
        break;
    }
}

/* The shell's exit is reported once it is reaped and its pty read to the end. */
static void pty_maybe_done(struct pty *t) {
    if (t->pid || t->master >= 0)
        return;
    pty_event(t->tid, t->status);
    free(t->in.data);
    memset(t, 0, sizeof *t);
}

/* Read one chunk of what the pty printed and send it; EIO: nobody holds the slave. */
static void pty_read(struct pty *t) {
    static char chunk[READ_CHUNK];
    ssize_t n = read(t->master, chunk, sizeof chunk);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        close(t->master);
        t->master = -1;
        t->in.start = t->in.end = 0;
        pty_maybe_done(t);
        return;
    }
    char json[48], header[HEADER_SIZE];
    int jlen = snprintf(json, sizeof json, "{\"ev\":\"pty-out\",\"tid\":%u}", t->tid);
    put_header(header, (uint32_t)jlen | FOR_PID1, (uint32_t)n);
    struct iovec iov[3] = {{header, HEADER_SIZE}, {json, (size_t)jlen}, {chunk, (size_t)n}};
    to_host_iov(iov, 3);
}

/* A child was reaped: if it was a shell, end what is left of its session. */
static void pty_reaped(pid_t pid, int status) {
    for (int i = 0; i < MAX_PTYS; i++) {
        struct pty *t = &ptys[i];
        if (t->used && t->pid == pid) {
            kill_session(pid);
            if (t->slave >= 0) /* the master reads what is left, then EIO */
                close(t->slave);
            t->slave = -1;
            t->pid = 0;
            t->status = status;
            pty_maybe_done(t);
        }
    }
}

/* Add the ptys' masters to a poll set; returns how many were added. */
static nfds_t pty_poll_fds(struct pollfd *p, struct pty **owners) {
    nfds_t n = 0;
    for (int i = 0; i < MAX_PTYS; i++) {
        struct pty *t = &ptys[i];
        if (t->used && t->master >= 0) {
            short events = (short)(POLLIN | (buf_len(&t->in) ? POLLOUT : 0));
            p[n] = (struct pollfd){.fd = t->master, .events = events};
            owners[n++] = t;
        }
    }
    return n;
}

static void pty_ready(struct pollfd *p, struct pty **owners, nfds_t n) {
    for (nfds_t i = 0; i < n; i++) {
        struct pty *t = owners[i];
        if (!t->used || t->master != p[i].fd)
            continue;
        if (p[i].revents & POLLOUT)
            pty_flush(t);
        if (p[i].revents & (POLLIN | POLLHUP | POLLERR))
            pty_read(t);
    }
}
