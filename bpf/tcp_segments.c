/* tcp_segments.c - the sock_ops core's cgroup_skb programs (on_egress, on_ingress):
 * what each TCP connection acknowledged and received, as of its segments, and the
 * adoption of connections open before the agent; UDP datagrams are handed to
 * udp_datagrams.h. Last in the loader's order; the rules are in sock_ops_core.c's
 * header.
 */

/* A connection found open at its first segment out: the agent started after it. */
static __always_inline void adopt(struct __sk_buff *skb, struct bpf_sock *sk,
                                  struct bpf_tcp_sock *tp)
{
    struct sock_state *st = socks.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!st)
        return;
    st->key.cgroup = bpf_sk_cgroup_id(sk);
    st->flags = S_PREEXISTING;
    if (skipped(st->key.cgroup))
        return;
    st->key.family = sk->family;
    struct bpf_sock_tuple t = {};
    u32 size;
    if (sk->family == AF_INET_) {
        u32 l = sk->src_ip4, r = sk->dst_ip4;
        __builtin_memcpy(st->key.laddr, &l, 4);
        __builtin_memcpy(st->key.raddr, &r, 4);
        t.ipv4.daddr = l;
        t.ipv4.dport = bpf_htons(sk->src_port);
        size = sizeof(t.ipv4);
    } else {
        u32 l6[4] = {sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]};
        u32 r6[4] = {sk->dst_ip6[0], sk->dst_ip6[1], sk->dst_ip6[2], sk->dst_ip6[3]};
        __builtin_memcpy(st->key.laddr, l6, 16);
        __builtin_memcpy(st->key.raddr, r6, 16);
        __builtin_memcpy(t.ipv6.daddr, l6, 16);
        t.ipv6.dport = bpf_htons(sk->src_port);
        size = sizeof(t.ipv6);
    }
    /* No 4-tuple matches a zero source, so this finds a listener on our port. */
    struct bpf_sock *listener = bpf_sk_lookup_tcp(skb, &t, size, BPF_F_CURRENT_NETNS, 0);
    if (listener) {
        bpf_sk_release(listener);
        st->key.role = ROLE_SERVER;
        st->key.port = sk->src_port;
    } else {
        st->key.role = ROLE_CLIENT;
        st->key.port = bpf_ntohs(sk->dst_port);
    }
    st->flags |= S_TRACKED | S_ESTABLISHED;
    st->start_ns = st->report_ns = st->rtt_ns = bpf_ktime_get_ns();
    st->acked = st->base_acked = tp->bytes_acked;
    st->base_una = tp->snd_una;
    st->received = tp->bytes_received;
    st->retrans = tp->total_retrans;
    count(C_PREEXISTING);
}

/* The owner of a socket created before the agent, from the socket's cgroup, at its first
 * segment out (under the socket lock); 0 when no probe observes it, which untracks it. */
static __always_inline int stamp_late(struct sock_state *st, struct bpf_sock *sk)
{
    st->key.cgroup = bpf_sk_cgroup_id(sk);
    st->flags = (st->flags & ~S_UNSTAMPED) | S_OWNED;
    if (skipped(st->key.cgroup)) {
        count(C_UNSELECTED);
        if (st->flags & S_TRACKED)
            release();
        st->flags = S_OWNED;
        return 0;
    }
    if (st->flags & S_ESTABLISHED)
        count_open(st);
    return 1;
}

/* The full socket `skb` belongs to (0: none, a request or time-wait socket). */
static __always_inline struct bpf_sock *full_sock(struct __sk_buff *skb)
{
    struct bpf_sock *sk = skb->sk;
    return sk ? bpf_sk_fullsock(sk) : 0;
}

/* The state of the counted, established TCP connection `skb` is a segment of (none
 * when one of `unwanted` flags is set); a connection without state that is ESTABLISHED
 * is adopted here, before this segment is processed, so what it carries counts. A UDP
 * datagram is counted here, and has none. */
static __always_inline struct sock_state *segment_state(struct __sk_buff *skb, u32 unwanted,
                                                        int egress, struct bpf_tcp_sock **tpp)
{
    struct bpf_sock *sk = full_sock(skb);
    if (!sk)
        return 0;
#ifdef WITH_UDP
    if (sk->protocol == IPPROTO_UDP_) {
        datagram(skb, sk, egress);
        return 0;
    }
#endif
#if !defined(WITH_BYTES) && !defined(WITH_STREAMS)
    return 0; /* linked for UDP alone */
#endif
    if (sk->protocol != IPPROTO_TCP_)
        return 0;
    struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
    if (!tp)
        return 0;
    struct sock_state *st = socks.sk_storage_get(sk, 0, 0);
    if (!st) {
        if (sk->state == ST_ESTABLISHED)
            adopt(skb, sk, tp);
        return 0;
    }
    if ((st->flags & S_UNSTAMPED) && (!egress || !stamp_late(st, sk)))
        return 0; /* nothing is counted before its owner is known; the gains wait */
    if ((st->flags & (S_ESTABLISHED | unwanted)) != S_ESTABLISHED)
        return 0;
    if ((st->flags & S_PREEXISTING) && sk->state != ST_ESTABLISHED)
        return 0; /* no state callbacks for it: stop before a FIN could be counted */
    *tpp = tp;
    return st;
}


/* What the connection received, as of this segment out. */
static __always_inline void egress_bytes(struct sock_state *st, struct bpf_tcp_sock *tp)
{
    u32 una = tp->snd_una;
    if (una != st->base_una) {
        /* Under the socket lock no ACK is being processed: the pair is consistent. */
        u64 bytes_acked = tp->bytes_acked;
        bpf_spin_lock(&st->lock);
        st->base_una = una;
        st->base_acked = bytes_acked;
        bpf_spin_unlock(&st->lock);
    }
    u64 received = data_received(st, tp->bytes_received, tp->rcv_nxt);
    /* Once our FIN is queued, an ACK of it may be in bytes_acked before the state change
     * that says so: from then on the close callback accounts for what was acked. (Read
     * into a register first: the verifier refuses a pointer chosen between the socket
     * and the storage.) */
    u64 acked = tp->bytes_acked;
    barrier_var(acked);
    if (st->flags & S_FIN_SENT)
        acked = st->acked;
    if (received == st->received && acked == st->acked)
        return;
    u64 now = bpf_ktime_get_ns();
    if (now - st->report_ns < REPORT_NS)
        return;
    report(st, edge_of(st, &st->key), acked, received, tp->total_retrans, tp->srtt_us >> 3,
           now, 0);
}

int on_egress(struct __sk_buff *skb)
{
    struct bpf_tcp_sock *tp;
    struct sock_state *st = segment_state(skb, 0, 1, &tp);
    if (!st)
        return 1;
#ifdef WITH_BYTES
    egress_bytes(st, tp);
#endif
#ifdef WITH_STREAMS
    stream_segment(skb, full_sock(skb), st, 1); /* last: it may tail-call */
#endif
    return 1;
}

/* The ack and sequence numbers of a TCP segment; 0 when it is not TCP with the ACK
 * flag, or not in the linear part. */
static __always_inline int ack_of(struct __sk_buff *skb, u32 *ack, u32 *seq)
{
    u32 l4;
    struct tcphdr *th = tcp_header(skb, &l4);
    if (!th || !th->ack)
        return 0;
    *ack = bpf_ntohl(th->ack_seq);
    *seq = bpf_ntohl(th->seq);
    return 1;
}

/* What the connection's peer acknowledged, as of this segment in. */
static __always_inline void ingress_bytes(struct __sk_buff *skb, struct sock_state *st,
                                          struct bpf_tcp_sock *tp)
{
    /* Only an in-order segment is sure to have its ACK applied (an out-of-window one
     * is dropped unread); the others are picked up at the next report. The socket's
     * snd_una and bytes_acked may be changing on another CPU right now, so the advance
     * is taken from the pair egress read under the socket lock. snd_nxt is no bound
     * here: over loopback or a veth the ACK can arrive while the send that it answers
     * has yet to advance snd_nxt. (An ACK beyond all data ever sent, which TCP drops,
     * would count too: only an on-path sender knowing the sequence could forge it.)
     * Retransmits of adopted sockets are reported too: the last may be answered by a
     * duplicate ACK only. */
    u64 acked = 0;
    u32 ack, seq;
    if (ack_of(skb, &ack, &seq) && seq == tp->rcv_nxt) {
        bpf_spin_lock(&st->lock);
        u32 ahead = ack - st->base_una;
        if ((s32)ahead > 0)
            acked = st->base_acked + ahead;
        bpf_spin_unlock(&st->lock);
    }
    if (!acked)
        acked = st->acked;
    u32 retrans = tp->total_retrans;
    if (acked == st->acked && retrans == st->retrans)
        return;
    u64 now = bpf_ktime_get_ns();
    if (now - st->report_ns < REPORT_NS)
        return;
    report(st, edge_of(st, &st->key), acked, st->received, retrans, tp->srtt_us >> 3, now, 0);
}

int on_ingress(struct __sk_buff *skb)
{
    struct bpf_tcp_sock *tp;
    struct sock_state *st = segment_state(skb, 0, 0, &tp);
    if (!st) {
#ifdef WITH_STREAMS
        stream_unstamped(skb); /* last: it may tail-call */
#endif
        return 1;
    }
#ifdef WITH_BYTES
    /* Once our FIN is out, the close callback counts the rest. */
    if (!(st->flags & S_FIN_SENT))
        ingress_bytes(skb, st, tp);
#endif
#ifdef WITH_STREAMS
    stream_segment(skb, full_sock(skb), st, 0); /* last: it may tail-call */
#endif
    return 1;
}
