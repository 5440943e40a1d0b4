/* redis_messages.h - Redis requests on the sock_ops core's TCP segments (WITH_REDIS):
 * RESP (2 and 3) framed value by value on tcp_streams.h's state, and redis_step, its
 * tail-called step.
 *
 * A connection is Redis when its first request-direction bytes begin an array of bulk
 * strings ("*<n>\r\n$"), as every client library sends a command. Each message, a
 * command or a reply, is one value: a line (a type byte, then a number or text, to
 * CRLF), a bulk string's bytes after its line, or an aggregate's elements after it.
 * Counting the values still owed (an aggregate of n adds n) frames a message, however
 * deep, without a stack. A reply answers the oldest command at its first line; a reply
 * that is an error ('-' or '!') has status 1. The command is its name, one of
 * REDIS_COMMANDS; no key, argument or value leaves the kernel. Push messages ('>':
 * RESP3 out of band) answer nothing.
 */

#ifdef WITH_REDIS
#define R_LINE 1     /* a line has begun: `type` is its type byte */
#define R_NEG 2      /* its number is negative */
#define R_COMMAND 4  /* requests: the next bulk string is the command's name */
#define R_MAX_VALUES (1 << 20)
#define R_WINDOW 24 /* bytes of a line looked at once: any number's line fits */
#define R_LINES 16  /* lines per step */

/* CMD_* are their positions, from 1; traceprobe_api.records.REDIS_COMMANDS. */
#define REDIS_COMMANDS(X) X(GET) X(SET) X(DEL) X(EXISTS) X(EXPIRE) X(TTL) X(INCR) \
    X(INCRBY) X(DECR) X(MGET) X(MSET) X(GETDEL) X(SETEX) X(SETNX) X(APPEND) X(HGET) \
    X(HSET) X(HDEL) X(HGETALL) X(HINCRBY) X(HMGET) X(LPUSH) X(RPUSH) X(LPOP) X(RPOP) \
    X(LRANGE) X(LLEN) X(SADD) X(SREM) X(SMEMBERS) X(SCARD) X(ZADD) X(ZRANGE) X(ZREM) \
    X(ZSCORE) X(PUBLISH) X(PING) X(AUTH) X(SELECT) X(HELLO) X(CLIENT) X(INFO) X(MULTI) \
    X(EXEC) X(WATCH) X(EVAL) X(EVALSHA) X(SCAN) X(KEYS) X(TYPE) X(FLUSHDB) X(XADD) \
    X(XREAD) X(COMMAND) X(CONFIG)

/* "*<digits>\r\n$" in the first 8 bytes, `w`. */
static __always_inline int resp_command(u64 w, u32 len)
{
    u8 c1 = w >> 8;
    if (len < 8 || (w & 0xff) != '*' || c1 < '1' || c1 > '9')
        return 0;
    for (u32 i = 2; i < 6; i++) {
        u8 c = w >> (8 * i);
        if (c == '\r')
            return ((w >> (8 * (i + 1))) & 0xffff) == ('\n' | '$' << 8);
        if (c < '0' || c > '9')
            return 0;
    }
    return 0;
}

/* CMD_* of a command's name, `w` (its first 8 bytes, upper-cased). */
static __always_inline u8 command_of(u64 w)
{
    u8 cmd = 0;
#define X(name) cmd++; if (w == LIT8(#name)) return cmd;
    REDIS_COMMANDS(X)
#undef X
    return 0;
}

/* The name of `n` bytes at sequence number `at` as a word, upper-cased: 0 when longer
 * than 8 or not in this segment (any other command). */
static __always_inline u64 name_at(struct __sk_buff *skb, struct step *s,
                                   struct db_scratch *b, u32 at, u64 n)
{
    u32 ahead = at - s->seq;
    if (n < 1 || n > 8 || ahead >= s->len || s->len - ahead < n)
        return 0;
    u32 k = (u32)n - 1;
    barrier_var(k);
    k = (k & 7) + 1;
    u64 w = 0;
    if (bpf_skb_load_bytes(skb, s->off + ahead, &w, k))
        return 0;
    __builtin_memcpy(b->buf + 64, &w, 8);
    return upper_word(b, 64, k);
}

/* The values the line just read owes (an aggregate's elements), and its bulk bytes
 * passed over. 0 when the stream cannot be followed. */
static __always_inline int resp_frame(struct stream_dir *d)
{
    u8 type = d->type;
    s64 n = d->flags & R_NEG ? -1 : (s64)d->length;
    d->left--;
    if (n <= 0)
        return 1;
    if (type == '*' || type == '~' || type == '>' || type == '%' || type == '|') {
        if (n > R_MAX_VALUES)
            return 0;
        d->left += type == '%' || type == '|' ? 2 * n + (type == '|') : n;
    } else if (type == '$' || type == '=' || type == '!') {
        d->next += n + 2;
    }
    return 1;
}

/* The line just read, as a message's start (a command queued; a reply noted, to
 * answer the oldest at the step's end) or a command's name; then framed. 0 when the
 * stream cannot be followed. */
static __always_inline int resp_line(struct __sk_buff *skb, struct step *s,
                                     struct db_scratch *b)
{
    struct stream_dir *d = s->d;
    struct stream_state *h = s->h;
    u8 type = d->type;
    if (!d->left) {
        if (s->requests) {
            if (type != '*')
                return 0; /* inline commands are not followed */
            if (queue_request(h, 0, s->c->now, C_DB_PENDING_FULL))
                d->flags |= R_COMMAND;
        } else if (type != '>' && b->answers < 32) { /* a push answers nothing */
            b->errors |= (u32)(type == '-' || type == '!') << (b->answers & 31);
            b->answers++;
        }
        d->left = 1;
    } else if ((d->flags & R_COMMAND) && type == '$' && !(d->flags & R_NEG)) {
        u32 slot = (h->first + h->waiting - 1) & (STREAM_PENDING - 1);
        h->names[slot] = name_at(skb, s, b, d->next, d->length);
        d->flags &= ~R_COMMAND;
    }
    return resp_frame(d);
}

/* The replies resp_line() noted in this step, each answering the oldest command. */
static __always_inline void resp_answers(struct step *s, struct db_scratch *b)
{
    struct stream_state *h = s->h;
    for (u32 i = 0; i < R_LINES; i++) {
        if (i >= b->answers)
            break;
        u32 slot = h->first & (STREAM_PENDING - 1);
        if (h->waiting)
            h->method[slot] = command_of(h->names[slot]);
        answer(s->st, h, (b->errors >> i) & 1, s->c->now, C_DB_UNMATCHED);
    }
    b->answers = 0;
    b->errors = 0;
}

/* The index of the first newline among the first `n` bytes of `w`, 8 when none. */
static __always_inline u32 newline_in(u64 w, u32 n)
{
    u64 x = w ^ 0x0a0a0a0a0a0a0a0aULL;
    u64 lines = ~(((x & 0x7f7f7f7f7f7f7f7fULL) + 0x7f7f7f7f7f7f7f7fULL) | x |
                  0x7f7f7f7f7f7f7f7fULL);
    if (n < 8)
        lines &= (1ULL << (8 * n)) - 1;
    if (!lines)
        return 8;
    u64 low = lines & -lines;
    return 7 - (u32)(((low >> 7) * 0x0706050403020100ULL) >> 56);
}

/* The value of the `k` (1..8) decimal digits that are the low bytes of `w`, eight at
 * once: pairs, then fours, then all eight. */
static __always_inline u64 digits_value(u64 w, u32 k)
{
    if (k < 8)
        w = (w & ((1ULL << (8 * k)) - 1)) << (8 * (8 - k)); /* leading zeros */
    u64 v = w & 0x0f0f0f0f0f0f0f0fULL;
    v = (v * 10 + (v >> 8)) & 0x00ff00ff00ff00ffULL;
    v = (v * 100 + (v >> 16)) & 0x0000ffff0000ffffULL;
    return (v * 10000 + (v >> 32)) & 0xffffffffULL;
}


/* Lines from the step's place, R_LINES of them, R_WINDOW bytes at a time: a line cut
 * by the segment's end is held (its first bytes) or, when its text runs on, passed
 * over to its newline in the next. */
static __always_inline void resp_lines(struct __sk_buff *skb, struct step *s)
{
    struct stream_dir *d = s->d;
    int zero = 0;
    struct db_scratch *b = db_scratch.lookup(&zero);
    if (!b)
        return;
    b->answers = 0;
    b->errors = 0;
    for (u32 l = 0; l < R_LINES; l++) {
        u32 ahead = d->next - s->seq;
        if (ahead >= s->len)
            break;
        u32 avail = s->len - ahead;
        u32 held = d->parts & 31;
        if (held >= R_WINDOW) {
            stream_lost(s->h, d);
            break;
        }
        __builtin_memcpy(b->buf, d->held, sizeof(d->held));
        u32 room = R_WINDOW - held;
        u32 n = (avail < room ? avail : room) - 1;
        barrier_var(n);
        n = (n & 31) + 1;
        if (bpf_skb_load_bytes(skb, s->off + ahead, b->buf + held, n)) {
            stream_lost(s->h, d);
            break;
        }
        u32 have = held + n;
        u64 w0, w1, w2;
        __builtin_memcpy(&w0, b->buf, 8);
        __builtin_memcpy(&w1, b->buf + 8, 8);
        __builtin_memcpy(&w2, b->buf + 16, 8);
        u32 nl = newline_in(w0, have);
        if (nl == 8 && have > 8)
            nl = 8 + newline_in(w1, have - 8);
        if (nl == 16 && have > 16)
            nl = 16 + newline_in(w2, have - 16);
        int begun = d->flags & R_LINE; /* a text line's rest: no type, no number here */
        u8 type = begun ? d->type : b->buf[0];
        int numeric = type == '*' || type == '$' || type == '%' || type == '~' ||
                      type == '>' || type == '|' || type == '=' || type == '!';
        if (nl >= have) { /* no newline yet */
            d->parts = 0;
            if (have < R_WINDOW && !begun) { /* the segment ended: hold the start */
                __builtin_memcpy(d->held, b->buf, sizeof(d->held));
                d->parts = have;
            } else if (numeric) {
                stream_lost(s->h, d); /* no number's line is this long */
                break;
            } else {
                d->type = type;
                d->flags |= R_LINE;
            }
            d->next += n;
            continue;
        }
        d->next += nl + 1 - held;
        d->parts = 0;
        d->type = type;
        d->flags &= ~(R_LINE | R_NEG);
        d->length = 0;
        if (!begun && numeric) {
            u32 k = nl >= 2 ? nl - 2 : 0; /* between the type and the CR */
            if (k && b->buf[1] == '-')
                d->flags |= R_NEG;
            else if (k >= 1 && k <= 8)
                d->length = digits_value((w0 >> 8) | (w1 << 56), k);
            else {
                stream_lost(s->h, d);
                break;
            }
        }
        if (!resp_line(skb, s, b)) {
            stream_lost(s->h, d);
            break;
        }
    }
    resp_answers(s, b);
}

int redis_step(struct __sk_buff *skb)
{
    struct step s;
    if (!step_begin(skb, &s))
        return 1;
    u8 mode = s.d->mode;
    u32 before = s.d->next;
    struct stream_dir *r = &s.h->resp;
    if (s.requests && r->mode == M_SKIM && !s.d->left && !s.d->parts) {
        /* A command after replies passed over: they are done, the next is framed
         * from its first segment. */
        s.h->waiting = 0;
        r->mode = M_FIRST;
        r->then = M_HEAD;
        r->left = 0;
        r->parts = 0;
        r->flags = 0;
    }
    resp_lines(skb, &s);
    step_next(skb, &s, mode, before, STEP_REDIS);
    return 1;
}
#endif
