/* http_segments.h - where a TCP segment enters the HTTP parse: http_segment(), called by
 * tcp_segments.c's programs for each segment of a counted connection, detects HTTP and
 * hands the segment to http_step, which takes one step of http_messages.h's framing (a
 * window of a head or a chunk-size line) and tail-calls itself for the next, so each
 * program stays within what the verifier follows (WITH_HTTP).
 */

#ifdef WITH_HTTP
/* Where a segment's steps stand, between tail calls: [0] egress, [1] ingress. The
 * segment itself (offsets, sequence number, direction) is read again from the packet at
 * each step: a softirq may send or receive on this CPU between two steps of a process's
 * segment and reuse the slot, which then costs that segment its time and step count,
 * never another segment's bytes. */
struct http_step_ctx {
    u64 now;
    u32 steps;
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
    c->steps = 0;
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
    u32 l4;
    struct tcphdr *th = tcp_header(skb, &l4);
    return th && bpf_ntohs(th->source) == sk->src_port;
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
    int egress = outgoing(skb, sk), slot = !egress;
    struct http_step_ctx *c = http_steps.lookup(&slot);
    u32 off, seq;
    u32 len = tcp_payload(skb, &off, &seq);
    if (!c || !len)
        return 1;
    struct sock_state *st = socks.sk_storage_get(sk, 0, 0);
    struct http_state *h = https.sk_storage_get(sk, 0, 0);
    if (!st || !h)
        return 1;
    int requests = egress == (st->key.role == ROLE_CLIENT);
    struct http_dir *d = requests ? &h->req : &h->resp;
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
    u32 at = off + ahead, before = d->next;
    if (mode == M_CHUNK)
        chunk(skb, d, at, len - ahead);
    else
        head(skb, st, h, d, requests, at, d->next, len - ahead, c->now);
    if ((d->next == before && d->mode == mode) || ++c->steps >= HTTP_STEPS ||
        d->mode == M_CLOSE || d->mode == M_LOST || (s32)(d->next - seq) >= (s32)len)
        return 1; /* nothing more in this segment */
    http_progs.call(skb, 0);
    return 1;
}
#endif
