/*
 * helper_reply.h: the strict check of a file helper's reply frame, for
 * kernel-init (included by kernel_init.c only).
 *
 * Pid 1 marks the helper's frames FOR_PID1, which the host believes; so the
 * frame must say exactly what the helper says and nothing a JSON parser could
 * read another way. The host's json.loads keeps the LAST of duplicate keys: a
 * frame that began {"ev":"reply",... and went on ...,"ev":"exited"} would be an
 * "exited" to it. So the JSON is parsed, not prefix-matched: one object, its
 * keys from REPLY_KEYS, each at most once, spelled without escapes (no
 * "\u0065v"); "ev" is "reply" and "rid" the text of the pending request's rid.
 * Nested objects (a listing's entries) have unique, unescaped keys too.
 * Strings are printable ASCII or escapes (the helper's json.dumps writes
 * ensure_ascii); no NaN, no whitespace: a subset of what json.dumps makes.
 */
#include <stddef.h>
#include <string.h>

#define REPLY_MAX_DEPTH 8
#define REPLY_MAX_KEYS 16 /* per object */

static const char *const REPLY_KEYS[] = {"ev", "rid", "ok", "error", "files", "abspath"};
#define N_REPLY_KEYS (sizeof REPLY_KEYS / sizeof *REPLY_KEYS)

struct cursor {
    const char *p, *end;
};

struct span {
    const char *p;
    size_t n;
};

static int value_ok(struct cursor *c, int depth, struct span *out);

static int is_digit(char ch) { return ch >= '0' && ch <= '9'; }

static int hex_digit(char ch) {
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* A string at c; its contents (between the quotes) go to out, and *escaped
 * says whether they hold a backslash. */
static int string_ok(struct cursor *c, struct span *out, int *escaped) {
    if (c->p >= c->end || *c->p != '"')
        return 0;
    const char *start = ++c->p;
    *escaped = 0;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            out->p = start;
            out->n = (size_t)(c->p - start);
            c->p++;
            return 1;
        }
        if (ch < 0x20 || ch >= 0x7f)
            return 0;
        if (ch == '\\') {
            *escaped = 1;
            if (++c->p >= c->end)
                return 0;
            if (*c->p == 'u') {
                if (c->end - c->p < 5)
                    return 0;
                for (int i = 1; i <= 4; i++)
                    if (!hex_digit(c->p[i]))
                        return 0;
                c->p += 4;
            } else if (!*c->p || !strchr("\"\\/bfnrt", *c->p)) {
                return 0;
            }
        }
        c->p++;
    }
    return 0;
}

static int number_ok(struct cursor *c) {
    const char *p = c->p;
    if (p < c->end && *p == '-')
        p++;
    if (p >= c->end || !is_digit(*p))
        return 0;
    if (*p == '0')
        p++;
    else
        while (p < c->end && is_digit(*p))
            p++;
    if (p < c->end && *p == '.') {
        if (++p >= c->end || !is_digit(*p))
            return 0;
        while (p < c->end && is_digit(*p))
            p++;
    }
    if (p < c->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < c->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= c->end || !is_digit(*p))
            return 0;
        while (p < c->end && is_digit(*p))
            p++;
    }
    c->p = p;
    return 1;
}

static int literal_ok(struct cursor *c, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return 0;
    c->p += n;
    return 1;
}

static int span_is(struct span s, const char *text) {
    return s.n == strlen(text) && memcmp(s.p, text, s.n) == 0;
}

/* An object; at depth 0 its keys must be REPLY_KEYS and their values go to
 * top[] (by the key's index). Keys: unescaped and unique. */
static int object_ok(struct cursor *c, int depth, struct span top[N_REPLY_KEYS]) {
    struct span keys[REPLY_MAX_KEYS];
    int n = 0;
    c->p++; /* '{' */
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        return 1;
    }
    for (;;) {
        struct span key, value;
        int escaped;
        if (!string_ok(c, &key, &escaped) || escaped || n == REPLY_MAX_KEYS)
            return 0;
        for (int i = 0; i < n; i++)
            if (keys[i].n == key.n && memcmp(keys[i].p, key.p, key.n) == 0)
                return 0;
        keys[n++] = key;
        if (c->p >= c->end || *c->p++ != ':' || !value_ok(c, depth + 1, &value))
            return 0;
        if (depth == 0) {
            size_t k = 0;
            while (k < N_REPLY_KEYS && !span_is(key, REPLY_KEYS[k]))
                k++;
            if (k == N_REPLY_KEYS)
                return 0;
            top[k] = value;
        }
        if (c->p >= c->end)
            return 0;
        if (*c->p == '}') {
            c->p++;
            return 1;
        }
        if (*c->p++ != ',')
            return 0;
    }
}

static int array_ok(struct cursor *c, int depth) {
    c->p++; /* '[' */
    if (c->p < c->end && *c->p == ']') {
        c->p++;
        return 1;
    }
    for (;;) {
        struct span ignored;
        if (!value_ok(c, depth + 1, &ignored) || c->p >= c->end)
            return 0;
        if (*c->p == ']') {
            c->p++;
            return 1;
        }
        if (*c->p++ != ',')
            return 0;
    }
}

/* Any value; its text (a string's with its quotes) goes to out. */
static int value_ok(struct cursor *c, int depth, struct span *out) {
    if (depth > REPLY_MAX_DEPTH || c->p >= c->end)
        return 0;
    const char *start = c->p;
    int escaped, ok;
    switch (*c->p) {
    case '{': {
        struct span unused[N_REPLY_KEYS];
        ok = object_ok(c, depth, unused);
        break;
    }
    case '[':
        ok = array_ok(c, depth);
        break;
    case '"': {
        struct span contents;
        ok = string_ok(c, &contents, &escaped);
        break;
    }
    case 't':
        ok = literal_ok(c, "true");
        break;
    case 'f':
        ok = literal_ok(c, "false");
        break;
    case 'n':
        ok = literal_ok(c, "null");
        break;
    default:
        ok = number_ok(c);
    }
    out->p = start;
    out->n = (size_t)(c->p - start);
    return ok;
}

/* 1 if json[0, len) is a reply to the request whose rid's text is rid. */
static int helper_reply_ok(const char *json, size_t len, const char *rid) {
    struct cursor c = {json, json + len};
    struct span top[N_REPLY_KEYS] = {{NULL, 0}};
    if (len == 0 || *json != '{' || !object_ok(&c, 0, top) || c.p != c.end)
        return 0;
    /* ev, rid and ok are required */
    return top[0].p && span_is(top[0], "\"reply\"") && top[1].p && span_is(top[1], rid) &&
           top[2].p && (span_is(top[2], "true") || span_is(top[2], "false"));
}
