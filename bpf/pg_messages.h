/* pg_messages.h - PostgreSQL requests on the sock_ops core's TCP segments
 * (WITH_POSTGRES): the frontend/backend protocol (version 3) framed message by message
 * on tcp_streams.h's state, and pg_step, its tail-called step.
 *
 * A connection is Postgres when its first request-direction bytes are a startup
 * message, an SSL request or a GSS request (a length, then the protocol version or the
 * request's code). The server answers those requests with one byte: 'S' or 'G', and
 * the connection is encrypted (counted as TLS, not parsed); 'N', and the startup
 * follows in the clear.
 *
 * Every later message is a type byte and a 4-byte length. A request is a simple Query
 * ('Q') or an extended-protocol batch ending in Sync ('S'); its response ends in
 * ReadyForQuery ('Z'), where it is counted: with the SQLSTATE of the ErrorResponse
 * ('E') before it (0: success), its operation (the statement's first keyword, one of
 * PG_OPERATIONS, from the Query or the batch's Parse) and the latency from the
 * request's first segment to the response's. Nothing else of a statement, and nothing
 * of a row, leaves the kernel.
 */

#ifdef WITH_POSTGRES
#define PG_MESSAGES 128 /* messages framed per step (rows, mostly) */
#define P_READY 1      /* responses: the startup's ReadyForQuery has come */
#define PG_EXECUTED 0x80 /* in `hint`: the batch so far has an Execute */

/* A startup message or an SSL or GSS request at the step's place. */
static __always_inline void pg_untyped(struct __sk_buff *skb, struct step *s)
{
    struct stream_dir *d = s->d;
    u64 w;
    if (s->avail < 8 || bpf_skb_load_bytes(skb, s->at, &w, 8)) {
        stream_lost(s->h, d);
        return;
    }
    u32 size = bpf_ntohl((u32)w), code = bpf_ntohl((u32)(w >> 32));
    if (size < 8 || size > 10000) {
        stream_lost(s->h, d);
        return;
    }
    d->next += size;
    if (code == PG_SSL_REQUEST || code == PG_GSS_REQUEST) {
        struct stream_dir *r = &s->h->resp;
        if (r->mode == M_FIRST)
            r->then = M_ANSWER;
        else
            r->mode = M_ANSWER;
    } else if (code == PG_PROTOCOL_3) {
        d->mode = M_HEAD;
    } else {
        s->h->req.mode = s->h->resp.mode = M_CLOSE; /* a cancel request, say */
    }
}

/* The server's one byte to an SSL or GSS request. */
static __always_inline void pg_answer(struct __sk_buff *skb, struct step *s)
{
    u8 c = 0;
    if (bpf_skb_load_bytes(skb, s->at, &c, 1)) {
        stream_lost(s->h, s->d);
        return;
    }
    if (c == 'N') {
        s->d->next += 1;
        s->d->mode = M_HEAD;
        return;
    }
    s->h->req.mode = s->h->resp.mode = M_CLOSE;
    if (c == 'S' || c == 'G')
        count_unparsed(s->sk, s->st, PROTO_TLS);
    else
        count(C_DB_DESYNC);
}

/* The body of a statement (its operation) or an error (its SQLSTATE) at the step's
 * place. */
static __always_inline void pg_body(struct __sk_buff *skb, struct step *s, u8 type,
                                    u32 size)
{
    struct stream_dir *d = s->d;
    u32 ahead = d->next - s->seq;
    int zero = 0;
    struct db_scratch *b = db_scratch.lookup(&zero);
    u32 n = 0;
    if (b && ahead < s->len && size) {
        u32 avail = s->len - ahead;
        if (avail > size)
            avail = size;
        n = (avail < 64 ? avail : 64) - 1;
        barrier_var(n);
        n = (n & 63) + 1;
        if (bpf_skb_load_bytes(skb, s->off + ahead, b->buf, n))
            n = 0;
    }
    if (type == 'E') {
        d->status = b && n ? sqlstate(b, n) : 1;
        return;
    }
    u32 at = 0;
    if (type == 'P' && b) { /* the statement follows its name */
        for (; at < 32; at++)
            if (at >= n || !b->buf[at])
                break;
        at++;
    }
    u8 op = b && n > at ? pg_operation(b, at, n) : 0;
    if (type == 'Q')
        queue_request(s->h, op, s->c->now, C_DB_PENDING_FULL);
    else
        s->h->hint = (s->h->hint & PG_EXECUTED) | op;
}

/* Whether a message of `type` means something to the count (then pg_act() takes it
 * after the step's loop, which stays small for the verifier), or is passed over. */
static __always_inline int pg_counts(struct step *s, u8 type)
{
    if (s->requests)
        return type == 'Q' || type == 'P' || type == 'E' || type == 'S' || type == 'X';
    if (s->h->waiting && !s->d->started)
        s->d->started = s->c->now;
    return (type == 'E' && !s->d->status) || type == 'Z';
}

/* A message pg_counts() picked, its body of `size` bytes at the step's place. */
static __always_inline void pg_act(struct __sk_buff *skb, struct step *s, u8 type, u32 size)
{
    struct stream_state *h = s->h;
    struct stream_dir *d = s->d;
    if (type == 'S' && s->requests) { /* a batch that executed nothing is no request */
        u8 op = h->hint & PG_EXECUTED ? h->hint & ~PG_EXECUTED : NOT_COUNTED;
        queue_request(h, op, s->c->now, C_DB_PENDING_FULL);
        h->hint = 0;
    } else if (type == 'E' && s->requests) {
        h->hint |= PG_EXECUTED;
    } else if (type == 'X' && s->requests) {
        h->req.mode = h->resp.mode = M_CLOSE;
    } else if (type == 'Z') {
        if (h->waiting || (d->flags & P_READY))
            answer(s->st, h, d->status, d->started ? d->started : s->c->now,
                   C_DB_UNMATCHED);
        d->flags |= P_READY;
        d->started = 0;
        d->status = 0;
    } else {
        pg_body(skb, s, type, size);
    }
}

/* A message header of which `got` bytes are held (`held`) and the rest are at the
 * step's place: its type and size once whole, 0 when the segment ends first (then
 * held for the next). */
static __always_inline int pg_rest_of_header(struct __sk_buff *skb, struct step *s, u8 *type,
                                             u32 *size)
{
    struct stream_dir *d = s->d;
    u64 held = d->length;
    u32 got = d->parts;
    for (u32 k = 0; k < 5; k++) {
        u32 ahead = d->next - s->seq;
        u8 c;
        if (got >= 5 || ahead >= s->len || bpf_skb_load_bytes(skb, s->off + ahead, &c, 1))
            break;
        held = held << 8 | c;
        got++;
        d->next++;
    }
    d->parts = got < 5 ? got : 0;
    d->length = got < 5 ? held : 0;
    *type = held >> 32;
    *size = (u32)held;
    return got == 5;
}

/* Messages from the step's place, up to the segment's end, PG_MESSAGES of them or the
 * first that counts. A header split by the segment's end is held. */
static __always_inline void pg_messages(struct __sk_buff *skb, struct step *s)
{
    struct stream_dir *d = s->d;
    u8 type = 0;
    u32 size = 0;
    int look = 0;
    for (u32 m = 0; m < PG_MESSAGES && !look; m++) {
        if (m || !d->parts) {
            u32 ahead = d->next - s->seq;
            if (ahead >= s->len)
                return;
            if (s->len - ahead < 5) {
                d->parts = 0;
                d->length = 0;
                pg_rest_of_header(skb, s, &type, &size);
                return;
            }
            u8 hdr[5];
            if (bpf_skb_load_bytes(skb, s->off + ahead, hdr, 5))
                return;
            d->next += 5;
            type = hdr[0];
            size = (u32)hdr[1] << 24 | (u32)hdr[2] << 16 | (u32)hdr[3] << 8 | hdr[4];
        } else if (!pg_rest_of_header(skb, s, &type, &size)) {
            return;
        }
        if (size < 4 || size > (1U << 30)) {
            stream_lost(s->h, d);
            return;
        }
        size -= 4;
        look = pg_counts(s, type);
        if (!look)
            d->next += size;
    }
    if (look) {
        pg_act(skb, s, type, size);
        d->next += size;
    }
}

/* M_SKIM: a response whose rows outran the steps of a segment is found again where it
 * ends, at the end of a segment (the server flushes after ReadyForQuery, and sends
 * nothing more before the next request): counted there, an error among the rows
 * passed over unseen. */
static __always_inline void pg_skim(struct __sk_buff *skb, struct step *s)
{
    struct stream_dir *d = s->d;
    u8 z[6];
    if (s->len < 6 || bpf_skb_load_bytes(skb, s->off + s->len - 6, z, 6))
        return;
    d->next = s->seq + s->len;
    if (z[0] != 'Z' || z[1] || z[2] || z[3] || z[4] != 5 ||
        (z[5] != 'I' && z[5] != 'T' && z[5] != 'E'))
        return;
    answer(s->st, s->h, d->status, d->started ? d->started : s->c->now, C_DB_UNMATCHED);
    d->started = 0;
    d->status = 0;
    d->mode = M_HEAD;
}

int pg_step(struct __sk_buff *skb)
{
    struct step s;
    if (!step_begin(skb, &s))
        return 1;
    u8 mode = s.d->mode;
    u32 before = s.d->next;
    if (mode == M_UNTYPED)
        pg_untyped(skb, &s);
    else if (mode == M_ANSWER)
        pg_answer(skb, &s);
    else if (mode == M_SKIM)
        pg_skim(skb, &s);
    else
        pg_messages(skb, &s);
    step_next(skb, &s, mode, before, STEP_POSTGRES);
    return 1;
}
#endif
