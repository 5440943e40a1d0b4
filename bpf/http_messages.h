/* http_messages.h - HTTP/1.x requests on the sock_ops core's TCP segments (WITH_HTTP):
 * each request and its response, parsed from the payload of the segments the core's
 * cgroup_skb programs already see, counted per edge, method and status with a latency
 * histogram: the rules and the framing, on tcp_streams.h's state. In the loader's
 * order: http_heads.h (a head's bytes), this file, http_segments.h (the tail-called
 * step).
 *
 * Detection is by the bytes: a connection is HTTP when the first data in its request
 * direction (out for a client, in for a server) starts with a known method.
 *
 * Each head is scanned for its end (the empty line), Content-Length and
 * `Transfer-Encoding: chunked`; the next message starts after the body, or the chunks
 * are followed from size line to size line. A response without a length runs to the
 * close. When the point followed is lost (a segment not seen, a head beyond
 * HTTP_HEAD_WINDOWS windows), the direction waits for data that starts with a method
 * (requests) or "HTTP/1." (responses) at a segment's start, and C_HTTP_DESYNC counts it.
 *
 * Latency is the client's time to first byte, or the server's time to answer. Nothing
 * but the method, the status code and the times leaves the kernel: no path, header or
 * body byte is stored.
 */

#ifdef WITH_HTTP
#define HTTP_HEAD_WINDOWS 16 /* windows one head may take: heads of at least 4 KiB */

/* Up to HTTP_HEAD_MAX bytes of the payload at `at` into the window; how many. */
static __always_inline u32 load_window(struct __sk_buff *skb, struct http_scratch *s, u32 at,
                                       u32 avail)
{
    if (!avail)
        return 0;
    u32 n = (avail < HTTP_HEAD_MAX ? avail : HTTP_HEAD_MAX) - 1;
    barrier_var(n);
    n = (n & (HTTP_HEAD_MAX - 1)) + 1; /* as it was, in bounds the verifier can see */
    if (bpf_skb_load_bytes(skb, at, s->buf, n))
        return 0;
    return n;
}

#define H_NOBODY 4 /* M_REST: a response that has no body (to HEAD, 204, 304) */

static __always_inline void desync(struct stream_dir *d)
{
    d->mode = M_LOST;
    count(C_HTTP_DESYNC);
}

/* A head begun at this segment's `first` byte: a request is queued, a response
 * answers the oldest. 0 when the bytes start no head of the kind expected. */
static __always_inline int head_begins(struct sock_state *st, struct stream_state *h,
                                       struct http_scratch *s, struct stream_dir *d,
                                       int requests, u64 now)
{
    d->flags = 0;
    d->length = 0;
    if (requests) {
        u8 method = method_of(word_at(s, 0));
        if (!method)
            return 0;
        queue_request(h, method, now, C_HTTP_PENDING_FULL);
        d->status = 0;
        return 1;
    }
    u16 status = status_of(s);
    if (!status)
        return 0;
    d->status = status;
    if (status < 200 && status != 101)
        return 1; /* informational: the final response is still to come */
    u8 method = h->method[h->first & (STREAM_PENDING - 1)];
    if (h->waiting && (method == METHOD_HEAD || status == 204 || status == 304))
        d->flags = H_NOBODY;
    answer(st, h, status, now, C_HTTP_UNMATCHED);
    return 1;
}

/* Where the stream goes after a head that ends at sequence number `end`. */
static __always_inline void head_ends(struct stream_state *h, struct stream_dir *d,
                                      struct http_scratch *s, u32 end)
{
    u32 flags = s->flags | d->flags;
    u16 status = d->status;
    d->next = end;
    d->mode = M_HEAD;
    if (status == 101) { /* the connection speaks another protocol from here */
        h->req.mode = h->resp.mode = M_CLOSE;
    } else if ((flags & H_NOBODY) || (status && status < 200)) {
    } else if (flags & H_CHUNKED) {
        d->mode = M_CHUNK;
    } else if (flags & H_LENGTH) {
        d->next = end + (u32)s->length;
    } else if (status) {
        d->mode = M_CLOSE; /* a response without a length runs to the close */
    }
}

/* One window of the head (or of the rest of one) at payload offset `at`, sequence
 * number `seq_at`: the stream then expects what follows the head, or the rest of it
 * (at the start of the line the window ended in, or at the next segment). */
static __always_inline void head(struct __sk_buff *skb, struct sock_state *st,
                                 struct stream_state *h, struct stream_dir *d, int requests,
                                 u32 at, u32 seq_at, u32 avail, u64 now)
{
    int zero = 0;
    struct http_scratch *s = http_scratch.lookup(&zero);
    if (!s)
        return;
    u32 n = load_window(skb, s, at, avail);
    if (!n) {
        desync(d);
        return;
    }
    s->line = 0;
    s->end = 0;
    s->length_at = 0;
    s->length = d->length;
    s->flags = 0;
    if (d->mode == M_HEAD || d->mode == M_LOST) {
        if (!head_begins(st, h, s, d, requests, now)) {
            if (d->mode != M_LOST)
                desync(d);
            return;
        }
        s->length = 0;
        d->parts = 0;
    }
    if (scan_head(s, n)) {
        head_ends(h, d, s, seq_at + s->end);
        return;
    }
    if (++d->parts > HTTP_HEAD_WINDOWS) {
        desync(d); /* a head larger than followed */
        return;
    }
    d->mode = M_REST;
    d->flags |= s->flags;
    d->length = s->length;
    /* The next window starts at the current line, so no header line is cut. */
    d->next = seq_at + (n < avail && s->line ? s->line : n);
}

/* A chunk-size line at payload offset `at`: the next one (or the head after the last
 * chunk and its empty trailer) becomes what the stream expects. */
static __always_inline void chunk(struct __sk_buff *skb, struct stream_dir *d, u32 at,
                                  u32 avail)
{
    u8 line[32] = {};
    u32 n = (avail < sizeof(line) ? avail : sizeof(line)) - 1; /* avail > 0 */
    barrier_var(n);
    n = (n & (sizeof(line) - 1)) + 1;
    if (bpf_skb_load_bytes(skb, at, line, n)) {
        desync(d);
        return;
    }
    u64 size = 0;
    u32 digits = 0, nl = 0;
    for (u32 i = 0; i < sizeof(line); i++) {
        u8 c = line[i];
        if (i >= n)
            break;
        if (c == '\n') {
            nl = i + 1;
            break;
        }
        if (digits != i)
            continue; /* past the size: an extension, or the CR */
        if (c >= '0' && c <= '9')
            size = size * 16 + (c - '0');
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            size = size * 16 + ((c | 0x20) - 'a' + 10);
        else
            continue;
        digits++;
    }
    if (!digits || !nl || digits > 8) {
        desync(d); /* a size line cut by the segment's end is not followed either */
        return;
    }
    d->next += nl + (u32)size + 2; /* the data, then its CRLF (after the last: the
                                    * empty trailer line) */
    if (!size)
        d->mode = M_HEAD;
}

#endif
