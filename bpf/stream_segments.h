/* stream_segments.h - where a TCP segment enters the request parse: stream_segment(),
 * called by tcp_segments.c's programs for each segment of a counted connection, finds
 * the connection's protocol from its first request-direction bytes and hands each
 * segment to that protocol's step (http_step, pg_step, redis_step, dns_step, h2_step), a
 * tail-called
 * program that parses part of it and calls itself for the next part, so each program
 * stays within what the verifier follows (WITH_STREAMS).
 */

#ifdef WITH_STREAMS
/* The protocol the first request-direction bytes `w` (8 of `len`) begin, 0: none. */
static __always_inline u8 stream_protocol(u64 w, u32 len)
{
#ifdef WITH_HTTP
    if (method_of(w))
        return PROTO_HTTP;
#endif
#ifdef WITH_POSTGRES
    if (pg_startup(w, len))
        return PROTO_POSTGRES;
#endif
#ifdef WITH_REDIS
    if (resp_command(w, len))
        return PROTO_REDIS;
#endif
#ifdef WITH_DNS_REQUESTS
    if (dns_query_start(w, len))
        return PROTO_DNS;
#endif
#ifdef WITH_HTTP2
    if (h2_preface(w, len))
        return PROTO_GRPC;
#endif
    return 0;
}

static __always_inline u32 step_of(u8 protocol, u8 mode)
{
    if (protocol == PROTO_GRPC && mode == M_FIELDS)
        return STEP_H2_FIELDS;
    return protocol == PROTO_HTTP ? STEP_HTTP
         : protocol == PROTO_POSTGRES ? STEP_POSTGRES
         : protocol == PROTO_REDIS ? STEP_REDIS
         : protocol == PROTO_DNS ? STEP_DNS : STEP_H2;
}

/* The requests in segment `skb` of the counted connection `st`, `egress` or not: a
 * connection found to speak a parsed protocol has its steps taken by tail calls, so
 * this must be the last thing its caller does. */
static __always_inline void stream_segment(struct __sk_buff *skb, struct bpf_sock *sk,
                                           struct sock_state *st, int egress)
{
    if (!sk || (st->flags & S_NOT_PARSED))
        return;
    u32 off, seq;
    u32 len = tcp_payload(skb, &off, &seq);
    if (!len)
        return;
    int requests = egress == (st->key.role == ROLE_CLIENT);
    struct stream_state *h = streams.sk_storage_get(sk, 0, 0);
    if (!h) {
        if (!requests)
            return; /* the peer spoke first: the request direction decides */
        u64 w = 0;
        u8 protocol = 0;
        if (len >= 8 && !bpf_skb_load_bytes(skb, off, &w, 8))
            protocol = stream_protocol(w, len);
        if (!protocol) {
            st->flags |= S_NOT_PARSED;
            protocol = unparsed_protocol(w, len);
            if (protocol)
                count_unparsed(sk, st, protocol);
            return;
        }
        h = streams.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
        if (!h) {
            st->flags |= S_NOT_PARSED;
            count(C_REQ_MAP_FULL);
            return;
        }
        h->protocol = protocol;
        h->req.mode = protocol == PROTO_POSTGRES ? M_UNTYPED : M_HEAD;
        h->req.next = seq + (protocol == PROTO_GRPC ? 24 : 0); /* past HTTP/2's preface */
        h->resp.then = M_HEAD;
    }
    struct stream_dir *d = requests ? &h->req : &h->resp;
    if (d->mode == M_FIRST) {
        d->mode = d->then;
        d->next = seq;
    }
    if (d->mode == M_CLOSE || (d->mode == M_SKIM && h->protocol == PROTO_REDIS))
        return;
    if (d->mode != M_LOST && d->mode != M_SKIM && (s32)(d->next - seq) >= (s32)len)
        return; /* a body's segment: what is followed starts in a later one */
    int slot = !egress;
    struct step_ctx *c = stream_steps.lookup(&slot);
    if (!c)
        return;
    c->now = bpf_ktime_get_ns();
    c->steps = 0;
    stream_progs.call(skb, step_of(h->protocol, d->mode));
}

/* A segment in on a server socket whose owner is not known yet (its listener is older
 * than the agent: the owner is named at its first segment out). Its requests are
 * queued all the same, so the first one on each connection counts too: nothing is
 * counted before the response goes out, by then under the owner's name. */
static __always_inline void stream_unstamped(struct __sk_buff *skb)
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
        stream_segment(skb, sk, st, 0);
}
#endif
