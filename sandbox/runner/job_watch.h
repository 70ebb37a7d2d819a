/*
 * The job watch: pid 1 as the supervisor of a one-shot job's last step, which the
 * runner runs in its own place instead of in a fork of itself.
 *
 * Why: a one-shot job (the Jobe and Piston faces) ends its kernel after its last
 * step, so the runner need not outlive that step. Run in a fork, the step cost
 * a copy of the runner's page tables, its copy-on-write faults and its exit, the
 * runner's supervising loop, and a frame back: about a sixth of a Jobe python3
 * run's CPU. In place, the runner becomes the program, and we, its parent, do
 * what the runner did for a fork: cut its output at a size, stop it at its wall
 * time, and report its wait status and CPU time (runner/job.py, "inPlace").
 *
 * Included by kernel_init.c (after its host and pipe helpers).
 *
 * Host -> pid 1: a frame flagged FOR_PID1 | INTERRUPT whose blob is
 *   u8 WATCH_OP, u32 0, u32 output bytes, u8 stop at output, u32 wall ms
 * before the job op. It only sets the watch up: the runner hands itself over by
 * closing fd 3 (the control socket), which without a watch is a protocol
 * violation. From then on each of stdout and stderr is forwarded up to `output`
 * bytes and the rest read and dropped (with "stop at output", the runner's
 * process group is killed as soon as a stream passes it, Piston's rule), and at
 * `wall` ms the group is killed. When the runner is reaped, "exited" also says
 *   "cpuMs": its CPU time and its waited-for children's, "wallMs": since the
 *   handover, "timedOut": whether the wall time ran out, "truncated": [out, err]
 * The host trusts these as it trusts "exited": only pid 1 sends them.
 */
#include <sys/resource.h>

enum { WATCH_OP = 5 };
#define WATCH_BLOB_SIZE 14

static struct {
    int set;   /* the host asked for a watch: fd 3's EOF hands the runner over */
    int armed; /* the runner did: it is the job's program now */
    uint32_t output;
    int stop_at_output;
    uint32_t wall_ms;
    struct timespec start;
    size_t sent[2];
    int truncated[2];
    int timed_out;
    struct rusage usage; /* the runner's, once reaped */
} watch;

/* The host's watch op: its blob (see above). */
static void watch_op(const char *blob, size_t blen) {
    if (blen < WATCH_BLOB_SIZE || watch.armed)
        return;
    watch.output = get_u32(blob + 5);
    watch.stop_at_output = blob[9] != 0;
    watch.wall_ms = get_u32(blob + 10);
    watch.set = 1;
    clock_gettime(CLOCK_MONOTONIC, &watch.start); /* until the handover restarts it */
}

/* The runner closed fd 3: with a watch set, that is its handover (1; 0 without a
 * watch). `late`: the runner is gone already (the program was quick, and we reaped
 * it before we read fd 3's end): the wall time then counts from the watch op. */
static int watch_arm(int late) {
    if (!watch.set)
        return 0;
    if (!watch.armed && !late)
        clock_gettime(CLOCK_MONOTONIC, &watch.start);
    watch.armed = 1;
    return 1;
}

/* The runner's process group, and the runner itself however it left the group
 * (it is the leader of its session, so it cannot; this says it twice). */
static void watch_kill(void) {
    kill(-runner_pid, SIGKILL);
    kill(runner_pid, SIGKILL);
}

/* How much of n bytes read from pipe i to forward. */
static size_t watch_room(int i, size_t n) {
    if (!watch.armed)
        return n;
    size_t room = watch.sent[i] < watch.output ? watch.output - watch.sent[i] : 0;
    if (n > room) {
        watch.truncated[i] = 1;
        if (watch.stop_at_output)
            watch_kill();
        n = room;
    }
    watch.sent[i] += n;
    return n;
}

/* Milliseconds until the wall time runs out (-1: no limit now); kills the runner's
 * process group once it has. */
static int watch_timeout(void) {
    if (!watch.armed || runner_reaped || watch.timed_out)
        return -1;
    long left = (long)watch.wall_ms - ms_since(&watch.start);
    if (left > 0)
        return (int)left;
    watch.timed_out = 1;
    watch_kill();
    return -1;
}

/* The "exited" event's JSON into json (size n). */
static void watch_exited(char *json, size_t n, int status) {
    if (!watch.armed) {
        snprintf(json, n, "{\"ev\":\"exited\",\"status\":%d}", status);
        return;
    }
    long cpu_ms = (watch.usage.ru_utime.tv_sec + watch.usage.ru_stime.tv_sec) * 1000L +
                  (watch.usage.ru_utime.tv_usec + watch.usage.ru_stime.tv_usec) / 1000L;
    snprintf(json, n,
             "{\"ev\":\"exited\",\"status\":%d,\"cpuMs\":%ld,\"wallMs\":%ld,"
             "\"timedOut\":%s,\"truncated\":[%s,%s]}",
             status, cpu_ms, ms_since(&watch.start), watch.timed_out ? "true" : "false",
             watch.truncated[0] ? "true" : "false", watch.truncated[1] ? "true" : "false");
}
