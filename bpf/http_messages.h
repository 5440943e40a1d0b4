/* http_messages.h - HTTP/1.x requests on the sock_ops core's TCP segments (WITH_HTTP):
 * each request and its response, parsed from the payload of the segments the core's
 * cgroup_skb programs already see, counted per edge, method and status with a latency
 * histogram. Loaded after sock_ops_core.c, before tcp_segments.c, which calls
 * http_segment() for every segment of a counted connection.
 *
 * Detection is by the bytes: a connection is HTTP when the first data in its request
 * direction (out for a client, in for a server) starts with a known method; one that
 * starts a TLS handshake or cleartext HTTP/2 is counted as such, unparsed. A client
 * socket sees requests go out and responses come in; a server socket the reverse.
 *
 * Framing follows the stream by TCP sequence number, so neither a message split over
 * many segments nor several in one segment (pipelining) is miscounted: each head is
 * scanned for its end (the empty line), Content-Length and `Transfer-Encoding:
 * chunked`; the next message starts after the body, or the chunks are followed from
 * size line to size line. A retransmitted segment lies before the point followed and
 * is ignored. A response without a length runs to the close. When the point followed
 * is lost (a segment not seen, a head beyond HTTP_HEAD_WINDOWS windows), the direction
 * waits for data that starts with a method (requests) or "HTTP/1." (responses) at a
 * segment's start, and C_HTTP_DESYNC counts it.
 *
 * Latency is from the first segment of a request's head to the first of its response's
 * head, as this socket saw them: the client's time to first byte, or the server's time
 * to answer. Requests in flight wait in a per-connection FIFO (HTTP_PENDING deep;
 * responses come in request order). Nothing but the method, the status code and the
 * times leaves the kernel: no path, header or body byte is stored.
 *
 * Maps: `https` SK_STORAGE struct http_state, created only for connections found to be
 * HTTP; answered requests go to request_maps.h's.
 */

#ifdef WITH_HTTP
#define HTTP_HEAD_MAX 256    /* one window of a head, scanned at once; a power of two */
#define HTTP_HEAD_WINDOWS 16 /* windows one head may take: heads of at least 4 KiB */
#define HTTP_PENDING 8       /* requests in flight on one connection (pipelining) */

/* What a direction of the stream expects at `next`. */
#define M_FIRST 0 /* nothing seen yet: a head at the start of the first data */
#define M_HEAD 1  /* a head starts at next */
#define M_REST 2  /* the rest of a head (split over segments) starts at next */
#define M_CHUNK 3 /* a chunk-size line starts at next */
#define M_CLOSE 4 /* a body that runs to the close */
#define M_LOST 5  /* out of step: waiting for a head at a segment's start */

#define H_LENGTH 1  /* Content-Length seen */
#define H_CHUNKED 2 /* Transfer-Encoding: chunked seen */

struct http_dir {
    u32 next;   /* sequence number of what `mode` expects */
    u8 mode;
    u8 flags;   /* M_REST: the H_* of the head's part already scanned */
    u16 status; /* M_REST: the response's status (0 for a request) */
    u32 parts;  /* M_REST: windows of the head scanned so far */
    u64 length; /* M_REST: the Content-Length already seen */
};

struct http_state {
    struct http_dir req, resp;
    u64 sent_ns[HTTP_PENDING];
    u8 method[HTTP_PENDING];
    u8 first;                /* oldest request in flight */
    u8 waiting;              /* requests in flight */
};

BPF_SK_STORAGE(https, struct http_state);

/* The window being scanned, and what the scan found (per CPU: too big for the stack).
 * 16 bytes of slack past the window keep the masked reads of a line's start in bounds. */
struct http_scratch {
    u8 buf[HTTP_HEAD_MAX + 32];
    u32 n;       /* bytes in the window */
    u32 line;    /* start of the current line */
    u32 end;     /* just past the head's empty line, 0 while not found */
    u32 length_at; /* 1 + where Content-Length's value starts, 0: not seen */
    u64 length;
    u32 flags;   /* H_* */
};
BPF_PERCPU_ARRAY(http_scratch, struct http_scratch, 1);

/* 8 bytes of the window at `at` (any offset: masked into the buffer and its slack). */
static __always_inline u64 word_at(struct http_scratch *s, u32 at)
{
    u64 v;
    __builtin_memcpy(&v, s->buf + (at & (HTTP_HEAD_MAX - 1)), 8);
    return v;
}

#define LOWER 0x2020202020202020ULL
/* Little-endian words of "content-", "length:", "transfer", "-encodin", "g:", "chunked". */
#define W_CONTENT 0x2d746e65746e6f63ULL
#define W_LENGTH 0x003a6874676e656cULL
#define W_TRANSFER 0x726566736e617274ULL
#define W_ENCODIN 0x6e69646f636e652dULL
#define W_G 0x3a67ULL
#define W_CHUNKED 0x64656b6e756863ULL
#define MASK7 0x00ffffffffffffffULL

/* The header line starting at `at`: where Content-Length is (its value is read once the
 * window is scanned), or chunked transfer coding. Header names are case-insensitive. */
static __always_inline void header_line(struct http_scratch *s, u32 at)
{
    u64 w0 = word_at(s, at) | LOWER;
    if (w0 == W_CONTENT) {
        if (((word_at(s, at + 8) | LOWER) & MASK7) == W_LENGTH)
            s->length_at = at + 15 + 1;
    } else if (w0 == W_TRANSFER) {
        if ((word_at(s, at + 8) | LOWER) == W_ENCODIN &&
            ((word_at(s, at + 16) | LOWER) & 0xffff) == W_G) {
            u32 v = at + 18;
            if (s->buf[v & (HTTP_HEAD_MAX - 1)] == ' ')
                v++;
            if (((word_at(s, v) | LOWER) & MASK7) == W_CHUNKED)
                s->flags |= H_CHUNKED;
        }
    }
}

/* Content-Length's value, from where header_line() found it. */
static __always_inline void length_value(struct http_scratch *s)
{
    u32 at = s->length_at;
    if (!at)
        return;
    at--;
    u64 n = 0;
    u32 digits = 0;
    for (u32 k = 0; k < 21; k++) {
        u8 c = s->buf[(at + k) & (HTTP_HEAD_MAX - 1)];
        if (c == ' ' && !digits)
            continue;
        if (c < '0' || c > '9')
            break;
        n = n * 10 + (c - '0');
        digits++;
    }
    if (digits) {
        s->length = n;
        s->flags |= H_LENGTH;
    }
}

/* Scan s->buf[0, n) for line ends from s->line on; 1 when the head's empty line is
 * found (s->end just past it). Bytes are read a word at a time and only words holding
 * a newline are looked into. The line's start and the window's length are read from
 * the map, not kept in registers, so the verifier finds its states at each word alike
 * whatever path led there (else it follows every path apart and gives up). */
static __always_inline int scan_head(struct http_scratch *s, u32 n)
{
    volatile u32 *linep = &s->line;
    volatile u32 *np = &s->n;
    *np = n;
    for (u32 w = 0; w < HTTP_HEAD_MAX / 8; w++) {
        u32 at = w * 8;
        if (at >= *np)
            break;
        /* 0x80 in each byte of v that is a newline, exactly (no borrow between bytes). */
        u64 x = word_at(s, at) ^ 0x0a0a0a0a0a0a0a0aULL;
        u64 lines = ~(((x & 0x7f7f7f7f7f7f7f7fULL) + 0x7f7f7f7f7f7f7f7fULL) | x |
                      0x7f7f7f7f7f7f7f7fULL);
        u32 left = *np - at;
        if (left < 8)
            lines &= (1ULL << (8 * left)) - 1; /* bytes past the window are not its */
        /* Newline by newline: the lowest one's byte is 7 minus the top byte of its bit
         * (moved to bit 8k) times 0x0706..00, a multiply instead of a search. */
        for (u32 k = 0; k < 8 && lines; k++) {
            u64 low = lines & -lines;
            lines &= lines - 1;
            u32 i = at + 7 - (u32)(((low >> 7) * 0x0706050403020100ULL) >> 56);
            u32 line = *linep;
            if (i == line || (i == line + 1 && s->buf[line & (HTTP_HEAD_MAX - 1)] == '\r')) {
                s->end = i + 1;
                length_value(s);
                return 1;
            }
            header_line(s, line);
            *linep = i + 1;
        }
    }
    length_value(s);
    return 0;
}

#define METHOD_GET 1
#define METHOD_HEAD 2
#define METHOD_POST 3
#define METHOD_PUT 4
#define METHOD_DELETE 5
#define METHOD_CONNECT 6
#define METHOD_OPTIONS 7
#define METHOD_TRACE 8
#define METHOD_PATCH 9

/* The method a request line starts with (its first 8 bytes, little-endian); 0: none. */
static __always_inline u8 method_of(u64 w)
{
    u32 w4 = w;
    if (w4 == 0x20544547) /* "GET " */
        return METHOD_GET;
    if ((w & 0xffffffffffULL) == 0x2054534f50ULL) /* "POST " */
        return METHOD_POST;
    if (w4 == 0x20545550) /* "PUT " */
        return METHOD_PUT;
    if ((w & 0xffffffffffULL) == 0x2044414548ULL) /* "HEAD " */
        return METHOD_HEAD;
    if ((w & 0xffffffffffffffULL) == 0x204554454c4544ULL) /* "DELETE " */
        return METHOD_DELETE;
    if ((w & 0xffffffffffffULL) == 0x204843544150ULL) /* "PATCH " */
        return METHOD_PATCH;
    if (w == 0x20534e4f4954504fULL) /* "OPTIONS " */
        return METHOD_OPTIONS;
    if (w == 0x205443454e4e4f43ULL) /* "CONNECT " */
        return METHOD_CONNECT;
    if ((w & 0xffffffffffffULL) == 0x204543415254ULL) /* "TRACE " */
        return METHOD_TRACE;
    return 0;
}

/* A status line's code ("HTTP/1.x NNN"), 0 when `s` does not start with one. */
static __always_inline u16 status_of(struct http_scratch *s)
{
    u64 w = word_at(s, 0);
    if ((w & 0xffffffffffffffULL) != 0x2e312f50545448ULL) /* "HTTP/1." */
        return 0;
    u8 a = s->buf[9], b = s->buf[10], c = s->buf[11];
    if (s->buf[8] != ' ' || a < '1' || a > '5' || b < '0' || b > '9' || c < '0' || c > '9')
        return 0;
    return (a - '0') * 100 + (b - '0') * 10 + (c - '0');
}

/* A connection whose first request-direction bytes are TLS (a handshake record) or
 * cleartext HTTP/2 (its preface: gRPC without TLS, say) is not parsed: it is counted,
 * so the map says what it cannot see. */
static __always_inline void unparsed(struct bpf_sock *sk, struct sock_state *st, u64 w,
                                     u32 len)
{
    u8 protocol = 0;
    if (len >= 8 && w == 0x5448202a20495250ULL) /* "PRI * HT" */
        protocol = PROTO_HTTP2;
    else if (len >= 5 && (w & 0xff) == 0x16 && ((w >> 8) & 0xff) == 0x03 &&
             ((w >> 16) & 0xff) <= 0x04)
        protocol = PROTO_TLS;
    if (!protocol)
        return;
    if (!(st->flags & S_UNSTAMPED)) {
        count_request(&st->key, st->comm, protocol, 0, 0, 0);
        return;
    }
    /* Its owner is named at its first segment out, which is to come: the socket's
     * cgroup is the owner (the process unknown), as it will be then. */
    struct edge_key key = st->key;
    key.cgroup = bpf_sk_cgroup_id(sk);
    if (!skipped(key.cgroup))
        count_request(&key, st->comm, protocol, 0, 0, 0);
}

/* The TCP payload of `skb` (data starts at the IP header): its length, 0 when there is
 * none or the headers are not in the linear part; its offset and sequence number. */
static __always_inline u32 tcp_payload(struct __sk_buff *skb, u32 *off, u32 *seq)
{
    u8 *data = (u8 *)(long)skb->data;
    u8 *end = (u8 *)(long)skb->data_end;
    u32 l4;

    if (data + 1 > end)
        return 0;
    if ((data[0] >> 4) == 4) {
        l4 = (data[0] & 0x0f) * 4;
        if (data + 20 > end || data[9] != IPPROTO_TCP_)
            return 0;
    } else {
        l4 = 40;
        if (data + 40 > end || data[6] != IPPROTO_TCP_)
            return 0;
    }
    if (l4 < 20 || l4 > 60)
        return 0;
    struct tcphdr *th = (void *)(data + l4);
    if ((void *)(th + 1) > (void *)end)
        return 0;
    u32 at = l4 + th->doff * 4;
    if (skb->len <= at)
        return 0;
    *off = at;
    *seq = bpf_ntohl(th->seq);
    return skb->len - at;
}

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

static __always_inline void desync(struct http_dir *d)
{
    d->mode = M_LOST;
    count(C_HTTP_DESYNC);
}

/* A head begun at this segment's `first` byte: a request is queued, a response
 * answers the oldest. 0 when the bytes start no head of the kind expected. */
static __always_inline int head_begins(struct sock_state *st, struct http_state *h,
                                       struct http_scratch *s, struct http_dir *d,
                                       int requests, u64 now)
{
    d->flags = 0;
    d->length = 0;
    if (requests) {
        u8 method = method_of(word_at(s, 0));
        if (!method)
            return 0;
        if (h->waiting >= HTTP_PENDING) {
            count(C_HTTP_PENDING_FULL);
            return 1;
        }
        u32 slot = (h->first + h->waiting) & (HTTP_PENDING - 1);
        h->sent_ns[slot] = now;
        h->method[slot] = method;
        h->waiting++;
        d->status = 0;
        return 1;
    }
    u16 status = status_of(s);
    if (!status)
        return 0;
    d->status = status;
    if (status < 200 && status != 101)
        return 1; /* informational: the final response is still to come */
    if (!h->waiting) {
        count(C_HTTP_UNMATCHED);
        return 1;
    }
    u32 slot = h->first & (HTTP_PENDING - 1);
    u8 method = h->method[slot];
    count_request(&st->key, st->comm, PROTO_HTTP, method, status, now - h->sent_ns[slot]);
    h->first = (h->first + 1) & (HTTP_PENDING - 1);
    h->waiting--;
    if (method == METHOD_HEAD || status == 204 || status == 304)
        d->flags = H_NOBODY;
    return 1;
}

/* Where the stream goes after a head that ends at sequence number `end`. */
static __always_inline void head_ends(struct http_state *h, struct http_dir *d,
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
                                 struct http_state *h, struct http_dir *d, int requests,
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
static __always_inline void chunk(struct __sk_buff *skb, struct http_dir *d, u32 at,
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

/* Where a segment's steps stand, between tail calls: [0] egress, [1] ingress (a
 * softirq's ingress may run amid a process's egress on one CPU, not amid another). */
struct http_step_ctx {
    u64 now;
    u32 off, seq, len;
    u32 steps;
    u32 requests;
};
BPF_PERCPU_ARRAY(http_steps, struct http_step_ctx, 2);
/* http_step, calling itself for the segment's next step. */
BPF_PROG_ARRAY(http_progs, 1);
#define HTTP_STEPS 32 /* windows and chunks followed in one segment: the tail-call limit */

/* The HTTP messages in segment `skb` of the counted connection `st`, `egress` or not:
 * a connection found to be HTTP has its steps taken by tail calls (one window or chunk
 * each, so each program stays within what the verifier can follow), so this must be
 * the last thing its caller does. */
static __always_inline void http_segment(struct __sk_buff *skb, struct bpf_sock *sk,
                                         struct sock_state *st, int egress)
{
    if (!sk || (st->flags & S_NOT_HTTP))
        return;
    u32 off, seq;
    u32 len = tcp_payload(skb, &off, &seq);
    if (!len)
        return;
    int requests = egress == (st->key.role == ROLE_CLIENT);
    struct http_state *h = https.sk_storage_get(sk, 0, 0);
    if (!h) {
        if (!requests)
            return; /* the peer spoke first: the request direction decides */
        u64 w = 0;
        if (len < 8 || bpf_skb_load_bytes(skb, off, &w, 8) || !method_of(w)) {
            st->flags |= S_NOT_HTTP;
            unparsed(sk, st, w, len);
            return;
        }
        h = https.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
        if (!h) {
            st->flags |= S_NOT_HTTP;
            count(C_REQ_MAP_FULL);
            return;
        }
        h->req.mode = M_HEAD;
        h->req.next = seq;
    }
    struct http_dir *d = requests ? &h->req : &h->resp;
    if (d->mode == M_FIRST) {
        d->mode = M_HEAD;
        d->next = seq;
    }
    if (d->mode == M_CLOSE)
        return;
    if (d->mode != M_LOST && (s32)(d->next - seq) >= (s32)len)
        return; /* a body's segment: what is followed starts in a later one */
    int slot = !egress;
    struct http_step_ctx *c = http_steps.lookup(&slot);
    if (!c)
        return;
    c->now = bpf_ktime_get_ns();
    c->off = off;
    c->seq = seq;
    c->len = len;
    c->steps = 0;
    c->requests = requests;
    http_progs.call(skb, 0);
}

/* A segment in on a server socket whose owner is not known yet (its listener is older
 * than the agent: the owner is named at its first segment out). Its requests are
 * queued all the same, so the first one on each connection counts too: nothing is
 * counted before the response goes out, by then under the owner's name. */
static __always_inline void http_unstamped(struct __sk_buff *skb)
{
    struct bpf_sock *sk = skb->sk;
    if (!sk)
        return;
    sk = bpf_sk_fullsock(sk);
    if (!sk)
        return;
    struct sock_state *st = socks.sk_storage_get(sk, 0, 0);
    if (st && (st->flags & (S_UNSTAMPED | S_ESTABLISHED)) == (S_UNSTAMPED | S_ESTABLISHED) &&
        st->key.role == ROLE_SERVER)
        http_segment(skb, sk, st, 0);
}

/* Whether `skb`, a segment of `sk`, goes out: its source port is the socket's own (a
 * step cannot be told which program called it, and one program verifies in half the
 * time of two; a connection to itself has no second direction to tell apart). */
static __always_inline int outgoing(struct __sk_buff *skb, struct bpf_sock *sk)
{
    u8 *data = (u8 *)(long)skb->data;
    u8 *end = (u8 *)(long)skb->data_end;
    u32 l4 = 40;
    if (data + 1 > end)
        return 0;
    if ((data[0] >> 4) == 4)
        l4 = (data[0] & 0x0f) * 4;
    if (l4 < 20 || l4 > 60)
        return 0;
    u16 *ports = (void *)(data + l4);
    if ((void *)(ports + 1) > (void *)end)
        return 0;
    return bpf_ntohs(ports[0]) == sk->src_port;
}

/* One step of the segment http_segment() began: a window of a head or a chunk-size
 * line, then the next step while the segment holds more. */
int http_step(struct __sk_buff *skb)
{
    struct bpf_sock *sk = skb->sk;
    if (!sk)
        return 1;
    sk = bpf_sk_fullsock(sk);
    if (!sk)
        return 1;
    int slot = !outgoing(skb, sk);
    struct http_step_ctx *c = http_steps.lookup(&slot);
    if (!c)
        return 1;
    struct sock_state *st = socks.sk_storage_get(sk, 0, 0);
    struct http_state *h = https.sk_storage_get(sk, 0, 0);
    if (!st || !h)
        return 1;
    struct http_dir *d = c->requests ? &h->req : &h->resp;
    u32 seq = c->seq, len = c->len;
    u8 mode = d->mode;
    if (mode == M_CLOSE)
        return 1;
    if (mode == M_LOST) {
        if (c->steps)
            return 1;
        d->next = seq; /* try this segment's start as a head */
    }
    s32 ahead = d->next - seq;
    if (ahead < 0) {
        if ((s32)(seq + len - d->next) > 0)
            desync(d); /* what was followed lies in data not seen */
        return 1;      /* else a retransmit of data already followed */
    }
    if ((u32)ahead >= len)
        return 1; /* in a later segment */
    u32 at = c->off + ahead, before = d->next;
    if (mode == M_CHUNK)
        chunk(skb, d, at, len - ahead);
    else
        head(skb, st, h, d, c->requests, at, d->next, len - ahead, c->now);
    if ((d->next == before && d->mode == mode) || ++c->steps >= HTTP_STEPS ||
        d->mode == M_CLOSE || d->mode == M_LOST || (s32)(d->next - seq) >= (s32)len)
        return 1; /* nothing more in this segment */
    http_progs.call(skb, 0);
    return 1;
}
#endif
