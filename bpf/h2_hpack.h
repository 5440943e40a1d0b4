/* h2_hpack.h - cleartext HTTP/2 requests, gRPC's among them (WITH_HTTP2): the rules,
 * the streams in flight, and the header fields decoded as far as the counts need.
 * h2_frames.h frames the connection and has its tail-called step.
 *
 * A connection is HTTP/2 when its first request-direction bytes are the client's
 * preface. Each stream the client opens with HEADERS is a request; its response's first
 * HEADERS times it (time to first byte, as on HTTP/1.x); it is counted when the server
 * ends the stream (END_STREAM on HEADERS or DATA): as gRPC with its grpc-status when the
 * response carried one (trailers, or a trailers-only response), else as HTTP with its
 * :status and the request's :method. Streams are matched by ID, H2_STREAMS in flight.
 *
 * HPACK: fields are walked, never stored. Of the request only :method (static GET or
 * POST) is kept; of the response :status and grpc-status, from the static table, from
 * literals (plain or Huffman-coded digits), or from the server's dynamic table, of which
 * the last H2_RING insertions are remembered: what each was (:status, grpc-status or
 * other) and its value. No path, authority, header or body byte leaves the kernel. A
 * field cut by a segment's end ends its block's decoding; the dynamic table is then
 * taken as unknown until the server empties it (its references name no status).
 */

#ifdef WITH_HTTP2
#define H2_FIELDS 16  /* header fields per step */

#define K_OTHER 0
#define K_STATUS 1 /* :status */
#define K_GRPC 2   /* grpc-status */
#define K_METHOD 3 /* :method */

/* In names[slot]: the stream's ID (low 32 bits), then what its response said. */
#define H2_STATUS_AT 32    /* :status, 16 bits */
#define H2_GRPC_AT 48      /* grpc-status + 1, 8 bits; 0: none seen */
#define H2_ANSWERED (1ULL << 62) /* response headers seen: sent_ns is the latency */

/* "grpc-status": as it is (11 bytes) and Huffman-coded (8), little-endian words. */
#define W_GRPC_STA 0x6174732d63707267ULL
#define W_TUS 0x737574ULL
#define W_GRPC_STATUS_H 0x8fda3412b2c8ca9aULL

static __always_inline int h2_preface(u64 w, u32 len)
{
    return len >= 8 && w == 0x5448202a20495250ULL; /* "PRI * HT" */
}

/* The slot of stream `id`, STREAM_PENDING when none; through memory, so that the
 * verifier's paths through the search meet again after it. */
static __always_inline u32 h2_slot(struct stream_state *h, struct db_scratch *b, u32 id)
{
    volatile u32 *found = &b->used;
    *found = STREAM_PENDING;
    #pragma clang loop unroll(disable)
    for (u32 i = 0; i < STREAM_PENDING; i++) {
        if ((h->h2_used & (1 << i)) && (u32)h->names[i] == id) {
            *found = i;
            break;
        }
    }
    return *found;
}

/* An HPACK integer with an `n`-bit prefix from b[at...] into b->value, and the bytes it
 * took into b->used: 0 when it runs past 3 more bytes. Results go through memory so
 * that the verifier's paths through here meet again after it. */
static __always_inline void h2_int(struct db_scratch *b, u32 at, u32 n)
{
    volatile u32 *value = &b->value, *used = &b->used;
    u32 mask = (1U << n) - 1, v = b->buf[at & 127] & mask;
    *value = v;
    *used = 1;
    if (v < mask)
        return;
    u8 c1 = b->buf[(at + 1) & 127], c2 = b->buf[(at + 2) & 127];
    *value = v + (c1 & 0x7f) + ((u32)(c2 & 0x7f) << 7);
    *used = !(c1 & 0x80) ? 2 : !(c2 & 0x80) ? 3 : 0;
    if (!(c1 & 0x80))
        *value = v + (c1 & 0x7f);
}

/* One Huffman-coded digit at bit `pos` (from the top of 24) of `bits`, `left` bits to
 * go: '0' '1' '2' are 00000-00010, '3'-'9' 011001-011111. 0 at the padding (all ones),
 * or anything else. */
#define HUFF_DIGIT()                                                              \
    if (ok && left >= 5) {                                                        \
        u32 five = (bits >> (pos - 5)) & 31, six = (bits >> (pos - 6)) & 63;      \
        if (five <= 2) {                                                          \
            v = v * 10 + five;                                                    \
            pos -= 5;                                                             \
            left -= 5;                                                            \
            digits++;                                                             \
        } else if (left >= 6 && six >= 25 && six <= 31) {                         \
            v = v * 10 + (six - 22);                                              \
            pos -= 6;                                                             \
            left -= 6;                                                            \
            digits++;                                                             \
        } else {                                                                  \
            ok = 0;                                                               \
        }                                                                         \
    }

static __always_inline int is_digit(u8 c)
{
    return c >= '0' && c <= '9';
}

/* The digits of a string (`len` bytes at b[at...], Huffman-coded when `huff`), as a
 * number into b->value; 0xffff when it is not one of up to 3 digits. */
static __always_inline void h2_digits(struct db_scratch *b, u32 at, u32 len, int huff)
{
    volatile u32 *value = &b->value;
    *value = 0xffff;
    if (!len || len > 3)
        return;
    u8 c0 = b->buf[at & 127], c1 = b->buf[(at + 1) & 127], c2 = b->buf[(at + 2) & 127];
    if (!huff) {
        if (!is_digit(c0) || (len > 1 && !is_digit(c1)) || (len > 2 && !is_digit(c2)))
            return;
        u32 v = c0 - '0';
        if (len > 1)
            v = v * 10 + (c1 - '0');
        if (len > 2)
            v = v * 10 + (c2 - '0');
        *value = v;
        return;
    }
    u32 bits = (u32)c0 << 16 | (u32)(len > 1 ? c1 : 0xff) << 8 | (len > 2 ? c2 : 0xff);
    s32 left = 8 * len, pos = 24;
    u32 v = 0, digits = 0, ok = 1;
    HUFF_DIGIT()
    HUFF_DIGIT()
    HUFF_DIGIT()
    HUFF_DIGIT()
    if (digits && left < 8)
        *value = v;
}

/* The :status of static-table entry `idx` (8-14), else 0. */
static __always_inline u32 h2_static_status(u32 idx)
{
    switch (idx) {
    case 8: return 200;
    case 9: return 204;
    case 10: return 206;
    case 11: return 304;
    case 12: return 400;
    case 13: return 404;
    case 14: return 500;
    }
    return 0;
}

/* What the dynamic-table entry `idx` (62 on) is, as kind << 14 | value; 0: unknown. */
static __always_inline u16 h2_dynamic(struct stream_state *h, u32 idx)
{
    u32 age = idx - 62;
    if (idx < 62 || age >= H2_RING || age >= h->h2_inserted || h->h2_lost)
        return 0;
    return h->h2_ring[(h->h2_inserted - 1 - age) & (H2_RING - 1)];
}

/* Notes field kind `kind` with `value` on the block's stream (its slot in `parts`, set
 * when the block began; STREAM_PENDING: none). */
static __always_inline void h2_note(struct step *s, u32 kind, u32 value)
{
    struct stream_state *h = s->h;
    u32 slot = s->d->parts;
    if (slot >= STREAM_PENDING)
        return;
    slot &= STREAM_PENDING - 1;
    if (kind == K_METHOD) {
        h->method[slot] = value;
    } else if (kind == K_STATUS && value < 600) {
        h->names[slot] = (h->names[slot] & ~(0xffffULL << H2_STATUS_AT)) |
                         (u64)value << H2_STATUS_AT;
    } else if (kind == K_GRPC && value <= 16) {
        h->names[slot] = (h->names[slot] & ~(0xffULL << H2_GRPC_AT)) |
                         (u64)(value + 1) << H2_GRPC_AT;
    }
}

#define GOT(b) (*(volatile u32 *)&(b)->value)
#define TOOK(b) (*(volatile u32 *)&(b)->used)

/* What an indexed field (index `idx`) says. */
static __always_inline void h2_indexed(struct step *s, u32 idx)
{
    if (s->requests) {
        if (idx == 2 || idx == 3)
            h2_note(s, K_METHOD, idx == 2 ? METHOD_GET : METHOD_POST);
    } else if (h2_static_status(idx)) {
        h2_note(s, K_STATUS, h2_static_status(idx));
    } else {
        u16 e = h2_dynamic(s->h, idx);
        if (e)
            h2_note(s, e >> 14, e & 0x3fff);
    }
}

/* The kind of a literal's name given by index `idx` (0: a string, read by the caller). */
static __always_inline u32 h2_name_kind(struct stream_state *h, u32 idx)
{
    if (h2_static_status(idx))
        return K_STATUS;
    if (idx == 2)
        return K_METHOD;
    return idx >= 62 ? h2_dynamic(h, idx) >> 14 : K_OTHER;
}

/* One header field at the step's place in the block; 0 when the block cannot be
 * decoded further (a field cut where its lengths are not seen). */
static __always_inline int h2_field(struct __sk_buff *skb, struct step *s,
                                    struct db_scratch *b)
{
    struct stream_dir *d = s->d;
    struct stream_state *h = s->h;
    u32 ahead = d->next - s->seq;
    if (ahead >= s->len)
        return 0;
    u32 avail = s->len - ahead;
    if (avail > d->left)
        avail = d->left;
    u32 base = s->off + ahead;
    u32 n = (avail < 32 ? avail : 32) - 1;
    barrier_var(n);
    n = (n & 31) + 1;
    if (bpf_skb_load_bytes(skb, base, b->buf, n))
        return 0;
    u8 c = b->buf[0];
    if (c & 0x80 || (c & 0xe0) == 0x20) { /* indexed, or a table size update */
        h2_int(b, 0, c & 0x80 ? 7 : 5);
        u32 used = TOOK(b), v = GOT(b);
        if (!used || used > n)
            return 0;
        if (c & 0x80)
            h2_indexed(s, v);
        else if (!s->requests && !v) { /* emptied: known again from here */
            h->h2_inserted = 0;
            h->h2_lost = 0;
        }
        d->next += used;
        d->left -= used;
        return 1;
    }
    int insert = c & 0x40; /* with incremental indexing, else not indexed */
    h2_int(b, 0, insert ? 6 : 4);
    u32 at = TOOK(b), kind = h2_name_kind(h, GOT(b));
    if (!at)
        return 0;
    if (!GOT(b)) { /* the name is a string */
        int huff = b->buf[at & 127] & 0x80;
        h2_int(b, at, 7);
        u32 took = TOOK(b), len = GOT(b);
        if (!took)
            return 0;
        at += took;
        u64 w0, w1;
        __builtin_memcpy(&w0, b->buf + (at & 31), 8);
        __builtin_memcpy(&w1, b->buf + (at & 31) + 8, 8);
        if (at + len <= n &&
            ((huff && len == 8 && w0 == W_GRPC_STATUS_H) ||
             (!huff && len == 11 && w0 == W_GRPC_STA && (w1 & 0xffffff) == W_TUS)))
            kind = K_GRPC;
        at += len;
    }
    if (at >= avail || at > 4096)
        return 0;
    u32 m = (avail - at < 8 ? avail - at : 8) - 1;
    barrier_var(m);
    m = (m & 7) + 1;
    if (bpf_skb_load_bytes(skb, base + at, b->buf + 64, m))
        return 0;
    int huff = b->buf[64] & 0x80;
    h2_int(b, 64, 7);
    u32 took = TOOK(b), len = GOT(b);
    if (!took || at + took + len > d->left)
        return 0;
    u32 value = 0xffff;
    if ((kind == K_STATUS || kind == K_GRPC) && took + len <= m) {
        h2_digits(b, 64 + took, len, huff);
        value = GOT(b);
        if (value != 0xffff && !s->requests)
            h2_note(s, kind, value);
    }
    if (insert && !s->requests) {
        h->h2_ring[h->h2_inserted & (H2_RING - 1)] =
            (kind == K_STATUS || kind == K_GRPC) && value != 0xffff
                ? (u16)(kind << 14 | (value & 0x3fff)) : 0;
        h->h2_inserted++;
    }
    d->next += at + took + len; /* a field's rest in the next segment is passed over */
    d->left -= at + took + len;
    return 1;
}
#endif
