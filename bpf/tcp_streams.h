/* tcp_streams.h - what every request protocol parsed from TCP payload shares (HTTP/1.x,
 * HTTP/2, PostgreSQL, Redis, DNS: WITH_HTTP, WITH_HTTP2, WITH_POSTGRES, WITH_REDIS,
 * WITH_DNS_REQUESTS): the
 * per-connection state of
 * its two directions, the requests in flight, the payload's place in a segment, and the
 * step a tail-called parse program takes. Loaded after request_maps.h, before the
 * protocols' files (stream_bytes.h, http_heads.h, http_messages.h, http_segments.h,
 * pg_fields.h, pg_messages.h, redis_messages.h, dns_streams.h, h2_hpack.h,
 * h2_frames.h), then stream_segments.h, where segments enter.
 *
 * A socket sees requests go out and responses come in when it is the client, the
 * reverse when it is the server. Each direction is followed by TCP sequence number
 * (`next`: where what its `mode` expects starts), so neither a message split over many
 * segments nor many in one segment is miscounted, and a retransmit (before `next`) is
 * passed over. Requests in flight wait in a FIFO (STREAM_PENDING deep): these
 * protocols answer in order. Latency is from a request's first segment to its
 * response's first segment, as this socket saw them.
 *
 * Maps: `streams` SK_STORAGE struct stream_state, created only for connections found to
 * speak a parsed protocol; `stream_steps` and `stream_progs`, the steps' context and
 * their programs.
 */

#if defined(WITH_HTTP) || defined(WITH_POSTGRES) || defined(WITH_REDIS) || \
    defined(WITH_DNS_REQUESTS) || defined(WITH_HTTP2)
#define WITH_STREAMS
#define STREAM_PENDING 16 /* requests in flight on one connection (pipelining) */
#define STREAM_STEPS 32  /* steps in one segment: the tail-call limit */
#define NOT_COUNTED 0xff /* a request's method: answered, but no request to count */

/* What a direction of the stream expects at `next`. */
#define M_FIRST 0   /* nothing seen yet: `then` is the mode its first data starts in */
#define M_HEAD 1    /* a message (an HTTP head, a Postgres header, a RESP line) */
#define M_REST 2    /* HTTP: the rest of a head split over segments */
#define M_CHUNK 3   /* HTTP: a chunk-size line */
#define M_CLOSE 4   /* nothing more is parsed on this connection */
#define M_LOST 5    /* HTTP: out of step, waiting for a head at a segment's start */
#define M_UNTYPED 6 /* Postgres: a startup or SSL request (no type byte) */
#define M_ANSWER 7  /* Postgres: the one-byte answer to an SSL or GSS request */
#define M_SKIM 8    /* responses passed over: to the end of a Postgres one; for Redis,
                     * to the next command */
#define M_FIELDS 9  /* HTTP/2: in a header block, `left` bytes of fields, then `type` of
                     * padding */

/* HTTP's methods (HTTP/1.x and HTTP/2); traceprobe_api.records.HTTP_METHODS. */
#define METHOD_GET 1
#define METHOD_HEAD 2
#define METHOD_POST 3
#define METHOD_PUT 4
#define METHOD_DELETE 5
#define METHOD_CONNECT 6
#define METHOD_OPTIONS 7
#define METHOD_TRACE 8
#define METHOD_PATCH 9

/* The tail-called step of each protocol, by index in stream_progs. */
#define STEP_HTTP 0
#define STEP_POSTGRES 1
#define STEP_REDIS 2
#define STEP_DNS 3
#define STEP_H2 4
#define STEP_H2_FIELDS 5
#define H2_RING 8 /* HTTP/2: dynamic-table insertions remembered */

struct stream_dir {
    u32 next;    /* sequence number of what `mode` expects */
    u8 mode;
    u8 then;     /* M_FIRST: the mode to start in */
    u8 flags;    /* HTTP M_REST: the H_* already scanned; Redis: R_* of the line */
    u8 type;     /* Redis: the line's type byte */
    u32 parts;   /* HTTP: windows of the head scanned; Postgres, Redis: bytes held */
    u32 status;  /* HTTP M_REST: the response's status; Postgres: the error's SQLSTATE */
    u64 length;  /* HTTP: Content-Length; Postgres: the header held; Redis: the number */
    u64 left;    /* Redis: values left in the message */
    u64 started; /* Postgres responses: when the current one's first segment came */
    u64 held[3]; /* Redis: the start of a line cut by a segment's end (`parts` bytes) */
};

struct stream_state {
    struct stream_dir req, resp;
    u64 sent_ns[STREAM_PENDING];
    u8 method[STREAM_PENDING];
    u8 first;    /* oldest request in flight */
    u8 waiting;  /* requests in flight */
    u8 protocol; /* PROTO_* */
    u8 hint;     /* Postgres: the operation of the statement parsed for the next Sync */
    u64 names[STREAM_PENDING]; /* Redis: each command's name, its first 8 bytes; HTTP/2:
                                * each stream's ID and what its response said */
    u16 h2_used;              /* HTTP/2: the slots holding a stream */
    u16 h2_ring[H2_RING];     /* HTTP/2: what the server's last insertions were */
    u32 h2_inserted;          /* HTTP/2: insertions into its dynamic table */
    u8 h2_lost;               /* HTTP/2: insertions missed: the table is unknown */
};

BPF_SK_STORAGE(streams, struct stream_state);

/* Where a segment's steps stand, between tail calls: [0] egress, [1] ingress. The
 * segment itself (offsets, sequence number, direction) is read again from the packet at
 * each step: a softirq may send or receive on this CPU between two steps of a process's
 * segment and reuse the slot, which then costs that segment its time and step count,
 * never another segment's bytes. */
struct step_ctx {
    u64 now;
    u32 steps;
};
BPF_PERCPU_ARRAY(stream_steps, struct step_ctx, 2);
BPF_PROG_ARRAY(stream_progs, 6); /* STEP_*: each step calls its own for the next */

/* The TCP payload of `skb`: its length, 0 when there is none or the headers are not in
 * the linear part; its offset and sequence number. */
static __always_inline u32 tcp_payload(struct __sk_buff *skb, u32 *off, u32 *seq)
{
    u32 l4;
    struct tcphdr *th = tcp_header(skb, &l4);
    if (!th)
        return 0;
    u32 at = l4 + th->doff * 4;
    if (skb->len <= at)
        return 0;
    *off = at;
    *seq = bpf_ntohl(th->seq);
    return skb->len - at;
}

/* A connection whose first request-direction bytes are TLS (a handshake record) or
 * cleartext HTTP/2 (its preface: gRPC without TLS, say) is not parsed: it is counted,
 * so the map says what it cannot see. 0 when `w`, the first 8 bytes, are neither. */
static __always_inline u8 unparsed_protocol(u64 w, u32 len)
{
    if (len >= 8 && w == 0x5448202a20495250ULL) /* "PRI * HT" */
        return PROTO_HTTP2;
    if (len >= 5 && (w & 0xff) == 0x16 && ((w >> 8) & 0xff) == 0x03 &&
        ((w >> 16) & 0xff) <= 0x04)
        return PROTO_TLS;
    return 0;
}

/* A connection counted as `protocol` with no request parsed (TLS, HTTP/2). */
static __always_inline void count_unparsed(struct bpf_sock *sk, struct sock_state *st,
                                           u8 protocol)
{
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

/* A request sent (or received) at `now`; 0 when the FIFO is full (not counted). */
static __always_inline int queue_request(struct stream_state *h, u8 method, u64 now,
                                         int full_counter)
{
    if (h->waiting >= STREAM_PENDING) {
        count(full_counter);
        return 0;
    }
    u32 slot = (h->first + h->waiting) & (STREAM_PENDING - 1);
    h->sent_ns[slot] = now;
    h->method[slot] = method;
    h->waiting++;
    return 1;
}

/* The oldest request in flight answered with `status`, its response begun at `at`. */
static __always_inline void answer(struct sock_state *st, struct stream_state *h,
                                   u32 status, u64 at, int unmatched_counter)
{
    if (!h->waiting) {
        count(unmatched_counter);
        return;
    }
    u32 slot = h->first & (STREAM_PENDING - 1);
    if (h->method[slot] != NOT_COUNTED)
        count_request(&st->key, st->comm, h->protocol, h->method[slot], status,
                      at - h->sent_ns[slot]);
    h->first = (h->first + 1) & (STREAM_PENDING - 1);
    h->waiting--;
}

/* The direction `d` lost its place (a segment not seen, a message beyond what is
 * followed): HTTP waits for a head at a segment's start; the others, whose messages
 * carry no mark to find again, are not parsed further on this connection. */
static __always_inline void stream_lost(struct stream_state *h, struct stream_dir *d)
{
    if (h->protocol == PROTO_HTTP) {
        d->mode = M_LOST;
        count(C_HTTP_DESYNC);
        return;
    }
    if (d == &h->resp && d->mode == M_HEAD) {
        /* Postgres: a response's end closes a segment, found again there; Redis: the
         * next command starts a reply of its own, framed from its first segment. */
        d->mode = M_SKIM;
        d->parts = 0;
        d->length = 0;
        count(C_DB_SKIMMED);
        return;
    }
    h->req.mode = h->resp.mode = M_CLOSE;
    count(C_DB_DESYNC);
}

/* Whether `skb`, a segment of `sk`, goes out: its source port is the socket's own (a
 * step cannot be told which program called it; a connection to itself has no second
 * direction to tell apart). */
static __always_inline int outgoing(struct __sk_buff *skb, struct bpf_sock *sk)
{
    u32 l4;
    struct tcphdr *th = tcp_header(skb, &l4);
    return th && bpf_ntohs(th->source) == sk->src_port;
}

/* One step's view of its segment: the connection, the direction parsed, and where in
 * the payload (`at`, `avail` bytes) what the direction expects starts. */
struct step {
    struct bpf_sock *sk;
    struct sock_state *st;
    struct stream_state *h;
    struct stream_dir *d;
    struct step_ctx *c;
    u32 off, seq, len, at, avail;
    int requests;
};

/* The step's view of `skb`; 0 when this segment holds nothing more to parse. */
static __always_inline int step_begin(struct __sk_buff *skb, struct step *s)
{
    struct bpf_sock *sk = skb->sk;
    if (!sk)
        return 0;
    sk = bpf_sk_fullsock(sk);
    if (!sk)
        return 0;
    int egress = outgoing(skb, sk), slot = !egress;
    s->sk = sk;
    s->c = stream_steps.lookup(&slot);
    s->len = tcp_payload(skb, &s->off, &s->seq);
    if (!s->c || !s->len)
        return 0;
    s->st = socks.sk_storage_get(sk, 0, 0);
    s->h = streams.sk_storage_get(sk, 0, 0);
    if (!s->st || !s->h)
        return 0;
    s->requests = egress == (s->st->key.role == ROLE_CLIENT);
    struct stream_dir *d = s->requests ? &s->h->req : &s->h->resp;
    s->d = d;
    if (d->mode == M_CLOSE)
        return 0;
    if (d->mode == M_LOST || d->mode == M_SKIM) {
        if (s->c->steps)
            return 0;
        d->next = s->seq; /* try this segment's start as a head, or its end */
    }
    s32 ahead = d->next - s->seq;
    if (ahead < 0) {
        if ((s32)(s->seq + s->len - d->next) <= 0)
            return 0;         /* a retransmit of data already followed */
        stream_lost(s->h, d); /* what was followed lies in data not seen */
        if (d->mode != M_SKIM)
            return 0;
        d->next = s->seq;
        ahead = 0;
    }
    if ((u32)ahead >= s->len)
        return 0; /* in a later segment */
    s->at = s->off + ahead;
    s->avail = s->len - ahead;
    return 1;
}

/* After a step that left the direction at `mode`, `before`: the next step of protocol
 * `index` while this segment holds more (the caller's last act: a tail call). */
static __always_inline void step_next(struct __sk_buff *skb, struct step *s, u8 mode,
                                      u32 before, u32 index)
{
    struct stream_dir *d = s->d;
    u8 now = d->mode;
    if ((d->next == before && now == mode) || ++s->c->steps >= STREAM_STEPS ||
        now == M_CLOSE || now == M_LOST || now == M_SKIM ||
        (s32)(d->next - s->seq) >= (s32)s->len)
        return;
    stream_progs.call(skb, index);
}
#endif
