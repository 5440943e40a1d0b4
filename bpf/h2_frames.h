/* h2_frames.h - HTTP/2 frames on tcp_streams.h's state (WITH_HTTP2): each frame's
 * 9-byte header read, most frames passed over by their length, the ones that count
 * acted on (a stream opened, answered or ended; a header block's fields handed to
 * h2_hpack.h), and h2_step, the tail-called step.
 */

#ifdef WITH_HTTP2
#define H2_FRAMES 32 /* frames passed over per step */

#define F_END_STREAM 0x1
#define F_END_HEADERS 0x4
#define F_PADDED 0x8
#define F_PRIORITY 0x20

/* A stream the client opens at `now`: its slot, STREAM_PENDING when none was free. */
static __always_inline u32 h2_open(struct stream_state *h, struct db_scratch *b, u32 id,
                                   u64 now)
{
    u32 known = h2_slot(h, b, id);
    if (known < STREAM_PENDING)
        return known;
    volatile u32 *free = &b->used;
    *free = STREAM_PENDING;
    #pragma clang loop unroll(disable)
    for (u32 i = 0; i < STREAM_PENDING; i++) {
        if (!(h->h2_used & (1 << i))) {
            *free = i;
            break;
        }
    }
    u32 i = *free;
    if (i >= STREAM_PENDING) {
        count(C_HTTP_PENDING_FULL);
        return STREAM_PENDING;
    }
    i &= STREAM_PENDING - 1;
    h->h2_used |= 1 << i;
    h->names[i] = id;
    h->method[i] = 0;
    h->sent_ns[i] = now;
    return i;
}

/* The server's first header block on stream `id`: the request's time to first byte.
 * Its slot, STREAM_PENDING when the stream is not followed. */
static __always_inline u32 h2_answered(struct stream_state *h, struct db_scratch *b,
                                       u32 id, u64 now)
{
    u32 found = h2_slot(h, b, id);
    if (found >= STREAM_PENDING)
        return found;
    u32 slot = found & (STREAM_PENDING - 1);
    if (!(h->names[slot] & H2_ANSWERED)) {
        h->sent_ns[slot] = now - h->sent_ns[slot];
        h->names[slot] |= H2_ANSWERED;
    }
    return found;
}

/* The server ended stream `id`: counted as gRPC with its grpc-status, else as HTTP. */
static __always_inline void h2_end(struct step *s, struct db_scratch *b, u32 id)
{
    struct stream_state *h = s->h;
    u32 slot = h2_slot(h, b, id);
    if (slot >= STREAM_PENDING) {
        count(C_HTTP_UNMATCHED);
        return;
    }
    slot &= STREAM_PENDING - 1;
    u64 said = h->names[slot];
    u64 ns = said & H2_ANSWERED ? h->sent_ns[slot] : s->c->now - h->sent_ns[slot];
    u32 grpc = (said >> H2_GRPC_AT) & 0xff, status = (said >> H2_STATUS_AT) & 0xffff;
    h->h2_used &= ~(1 << slot);
    if (grpc)
        count_request(&s->st->key, s->st->comm, PROTO_GRPC, h->method[slot], grpc - 1, ns);
    else if (status)
        count_request(&s->st->key, s->st->comm, PROTO_HTTP, h->method[slot], status, ns);
}

/* A frame header at the step's place, into hdr (9 bytes): 1 once whole; a header cut by
 * the segment's end is held (its first bytes in `held`) for the next. */
static __always_inline int h2_header(struct __sk_buff *skb, struct step *s,
                                     struct db_scratch *b)
{
    struct stream_dir *d = s->d;
    u32 ahead = d->next - s->seq;
    if (ahead >= s->len)
        return 0;
    u32 avail = s->len - ahead, held = d->parts & 15;
    if (held > 8)
        return 0;
    __builtin_memcpy(b->buf, d->held, 16);
    u32 want = 9 - held;
    u32 n = (avail < want ? avail : want) - 1;
    barrier_var(n);
    n = (n & 15) + 1;
    if (bpf_skb_load_bytes(skb, s->off + ahead, b->buf + held, n))
        return 0;
    d->next += n;
    if (held + n < 9) {
        __builtin_memcpy(d->held, b->buf, 16);
        d->parts = held + n;
        return 0;
    }
    d->parts = 0;
    return 1;
}

/* A frame that counts, its header just read: a stream opened, answered, reset or ended;
 * a header block (HEADERS, CONTINUATION) about to be decoded. */
static __always_inline void h2_act(struct __sk_buff *skb, struct step *s,
                                   struct db_scratch *b, u8 type, u8 flags, u32 size, u32 id)
{
    struct stream_state *h = s->h;
    struct stream_dir *d = s->d;
    if (type == 3) { /* RST_STREAM: no answer to count */
        u32 i = h2_slot(h, b, id);
        if (i < STREAM_PENDING)
            h->h2_used &= ~(1 << (i & (STREAM_PENDING - 1)));
        d->next += size;
        return;
    }
    if (type == 0) { /* DATA that ends the server's side */
        h2_end(s, b, id);
        d->next += size;
        return;
    }
    u32 skip = 0, pad = 0, slot;
    if (type == 1) {
        if (flags & F_PADDED) {
            u8 p = 0;
            u32 ahead = d->next - s->seq;
            if (ahead >= s->len || bpf_skb_load_bytes(skb, s->off + ahead, &p, 1)) {
                stream_lost(h, d);
                return;
            }
            pad = p;
            skip = 1;
        }
        if (flags & F_PRIORITY)
            skip += 5;
        slot = s->requests ? h2_open(h, b, id, s->c->now)
                           : h2_answered(h, b, id, s->c->now);
        d->flags = flags;
    } else { /* CONTINUATION: the stream's end is the HEADERS' */
        slot = h2_slot(h, b, id);
        d->flags = (d->flags & F_END_STREAM) | flags;
    }
    if (skip + pad > size) {
        stream_lost(h, d);
        return;
    }
    d->parts = slot; /* the block's stream, for h2_note() */
    d->status = id;
    d->next += skip;
    d->left = size - skip - pad;
    d->type = pad;
    d->mode = M_FIELDS;
}

/* Frames from the step's place, up to the segment's end, H2_FRAMES of them or the
 * first that counts. */
static __always_inline void h2_frames(struct __sk_buff *skb, struct step *s,
                                      struct db_scratch *b)
{
    struct stream_dir *d = s->d;
    u8 type = 0, flags = 0;
    u32 size = 0, id = 0;
    int act = 0;
    #pragma clang loop unroll(disable)
    for (u32 f = 0; f < H2_FRAMES && !act; f++) {
        if (!h2_header(skb, s, b))
            return;
        u8 *hdr = b->buf;
        size = (u32)hdr[0] << 16 | (u32)hdr[1] << 8 | hdr[2];
        type = hdr[3];
        flags = hdr[4];
        id = ((u32)hdr[5] << 24 | (u32)hdr[6] << 16 | (u32)hdr[7] << 8 | hdr[8]) & 0x7fffffff;
        act = type == 1 || type == 9 || type == 3 ||
              (type == 0 && (flags & F_END_STREAM) && !s->requests);
        if (!act)
            d->next += size;
    }
    if (act)
        h2_act(skb, s, b, type, flags, size, id);
}

/* Fields of the header block at the step's place, H2_FIELDS of them; at its end, the
 * padding passed over and, when the server ends the stream there, the stream counted. */
static __always_inline void h2_block(struct __sk_buff *skb, struct step *s,
                                     struct db_scratch *b)
{
    struct stream_dir *d = s->d;
    #pragma clang loop unroll(disable)
    for (u32 k = 0; k < H2_FIELDS; k++) {
        if (!d->left)
            break;
        if (!h2_field(skb, s, b)) {
            if (d->next - s->seq < s->len) { /* undecodable: passed over */
                if (!s->requests)
                    s->h->h2_lost = 1; /* insertions may have been missed */
                d->next += d->left;
                d->left = 0;
            }
            break;
        }
    }
    if (d->left)
        return;
    d->next += d->type;
    d->mode = M_HEAD;
    d->parts = 0;
    if (!s->requests && (d->flags & F_END_STREAM) && (d->flags & F_END_HEADERS))
        h2_end(s, b, d->status);
}

/* One step in `mode`: frames between header blocks (M_HEAD), or a block's fields
 * (M_FIELDS); then the next step, whichever the direction is in by then. */
static __always_inline void h2_take(struct __sk_buff *skb, u8 mode)
{
    struct step s;
    if (!step_begin(skb, &s))
        return;
    int zero = 0;
    struct db_scratch *b = db_scratch.lookup(&zero);
    if (!b)
        return;
    u32 before = s.d->next;
    if (mode == M_FIELDS)
        h2_block(skb, &s, b);
    else
        h2_frames(skb, &s, b);
    step_next(skb, &s, mode, before, s.d->mode == M_FIELDS ? STEP_H2_FIELDS : STEP_H2);
}

int h2_step(struct __sk_buff *skb)
{
    h2_take(skb, M_HEAD);
    return 1;
}

/* The fields are a program of their own: with the frames, one is more than the
 * verifier follows. */
int h2_fields(struct __sk_buff *skb)
{
    h2_take(skb, M_FIELDS);
    return 1;
}
#endif
