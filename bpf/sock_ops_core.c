/* sock_ops_core.c - traceprobe's connection accounting from the kernel's own TCP
 * counters, through cgroup v2 socket programs (no tracepoints, no kprobes, no
 * kernel-memory reads: it loads under lockdown=confidentiality).
 *
 * Programs (linked at the agent's cgroup v2 root through BPF links, so a killed
 * agent leaves nothing attached):
 *   on_sock_create  cgroup/sock_create: the creating process (cgroup, tgid, comm) is
 *                stamped into the socket's storage; an accepted socket inherits its
 *                listener's stamp (the storage map is BPF_F_CLONE). A socket created
 *                before the agent (a listener, typically) has no stamp: its connections
 *                count from their start all the same, owned by the socket's cgroup
 *                (process unknown), named at their first segment out.
 *   on_sock_ops     sockops: connect, established (either side), state changes and RTT
 *                callbacks; bytes, retransmits and RTT come from the kernel's own
 *                counters (bytes_acked, bytes_received, srtt_us; retransmitted
 *                segments from the retransmit callback, as total_retrans counts them), so
 *                sendfile/splice traffic counts like any other.
 *   on_egress       cgroup_skb/egress: what a connection received, as of each segment
 *                it sends (an ACK leaves after the data it acknowledges is counted);
 *                and connections that were open before the agent started. UDP (WITH_UDP):
 *                each datagram sent, to the peer its header names.
 *   on_ingress      cgroup_skb/ingress: what a connection's peer acknowledged, as of each
 *                in-order segment carrying an ACK (read before TCP processes it, so the
 *                advance in its ack number is added: the kernel adds exactly that).
 *                UDP: each datagram received, from the peer its header names.
 *
 * Storage: `socks` SK_STORAGE struct sock_state per socket, freed with the socket.
 * Edges, counters and cgroup verdicts are edge_maps.h's. A connection's callbacks
 * and its egress run under its socket lock; its ingress does not (it runs before TCP
 * takes the lock), so what was reported is taken under the state's own spin lock.
 * Two sockets may share an edge from process and softirq context on one CPU, so edge
 * counters are added atomically.
 *
 * Bytes are the counters minus SYN and FIN. The baseline is taken at establishment
 * (a client's bytes_acked already counts its SYN there). Our FIN is in bytes_acked
 * once FIN_WAIT2 is reached, or at CLOSE from LAST_ACK/CLOSING when everything sent
 * is acknowledged. The peer's FIN is in bytes_received once we go to CLOSE_WAIT or
 * CLOSING, or when a segment seen in FIN_WAIT1/2 carried it in order (the
 * PARSE_ALL_HDR_OPT callback, turned on for those states only).
 *
 * Kinds: WITH_BYTES, WITH_FAILURES, WITH_RETRANS and WITH_RTT each turn on their
 * fields; without WITH_BYTES user space does not link on_egress or on_ingress.
 *
 * Reports: an established connection adds what its counters gained since its last
 * report at each segment in (acknowledged) and out (received), at most once per
 * REPORT_NS (0 by default: every segment with a gain); closing adds the rest. So an
 * interval's drain finds everything acknowledged and received up to its last segment,
 * and an idle connection costs nothing. (The RTT callback is not used for this: it
 * runs only for ACKs that give an RTT sample, which ACKs after a loss may not.)
 * RTT is sampled at close and at most once per RTT_SAMPLE_NS in reports.
 *
 * Failures: SYN_SENT -> CLOSE after a segment came in (segs_in, the RST) is refused;
 * with nothing received it timed out. ESTABLISHED/CLOSE_WAIT/FIN_WAIT1 -> CLOSE, and
 * LAST_ACK/CLOSING -> CLOSE with data unacknowledged, are resets.
 *
 * Connections open before the agent started have no storage: the first segment one
 * sends or receives creates it (owner: the socket's cgroup; process unknown; role:
 * server when a listener holds its local port), and from then on its bytes and
 * retransmits are reported as any connection's while it is ESTABLISHED. Their opening,
 * closing, duration, failures and RTT samples at close are not counted, nor anything
 * from the first FIN on (no state callback can be armed for them outside sock_ops).
 *
 * UDP (WITH_UDP) has no connection: each datagram counts on the edge of its socket's
 * owner and its peer, at the cgroup_skb programs, from its IP and UDP headers (an
 * unconnected socket's own fields name no peer; the cgroup sock_addr hooks see addresses
 * but no lengths). Out, the peer is the one the application named (the sendmsg hooks'
 * address, or the connected socket's), which netfilter may have DNATed in the headers
 * by then. A socket whose first datagram went out is a client (its edge keyed by the
 * peer's port), one whose first came in a server (by its own port).
 * Bytes are UDP payload, as send and recv return them; a GSO or GRO batch counts its
 * segments as datagrams. A socket from before the agent is owned by its cgroup (process
 * unknown) and takes its role from the first datagram seen.
 *
 * Requests (WITH_HTTP; DNS with WITH_DNS_REQUESTS) are parsed from the payload the
 * cgroup_skb programs see: http_messages.h and dns_requests.h have their rules.
 *
 * Files, in the loader's order after edge_maps.h: sock_storage.h (socket state and
 * on_sock_create), request_maps.h, dns_requests.h, udp_datagrams.h (on_udp4_sendmsg,
 * on_udp6_sendmsg), this file (on_sock_ops), http_heads.h, http_messages.h,
 * http_segments.h (http_step, tail-called), tcp_segments.c (on_egress, on_ingress).
 *
 * Minimum kernel: 5.10 (PARSE_ALL_HDR_OPT, skb data in sock_ops, bpf_sk_cgroup_id in
 * cgroup_skb). Fallback: conn_tracker.c, chosen when this does not load or attach.
 */


#ifndef REPORT_NS
#define REPORT_NS 0ULL
#endif
#define RTT_SAMPLE_NS 1000000000ULL

#define TCP_FLAG_FIN_ 0x01

/* The TCP header of segment `skb` (data starts at the IP header), and where it starts;
 * 0 when the segment is not TCP or its headers are not in the linear part (IPv6
 * extension headers too: rare on TCP). */
static __always_inline struct tcphdr *tcp_header(struct __sk_buff *skb, u32 *at)
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
    *at = l4;
    return th;
}

static __always_inline void add_rtt(struct edge_val *e, u32 srtt_us)
{
    __sync_fetch_and_add(&e->rtt_sum_us, srtt_us);
    __sync_fetch_and_add(&e->rtt_samples, 1);
    if (srtt_us > e->rtt_max_us)
        e->rtt_max_us = srtt_us;
}

/* What the counters gained beyond what is on the edge; never negative (an RST while
 * our FIN waited unsent makes the FIN rule subtract one byte too many). */
static __always_inline u64 gain(u64 now, u64 *reported)
{
    if ((s64)(now - *reported) <= 0)
        return 0;
    u64 n = now - *reported;
    *reported = now;
    return n;
}

static __always_inline u64 data_received(struct sock_state *st, u64 bytes, u32 rcv_nxt)
{
    int fin = (st->flags & S_FIN_RCVD) || (st->fin_end && rcv_nxt == st->fin_end);
    return bytes - fin;
}

static __always_inline u64 data_acked(struct sock_state *st, u64 bytes)
{
    return bytes - ((st->flags & S_FIN_ACKED) ? 1 : 0);
}

static __always_inline void key_addresses(struct sock_state *st, struct bpf_sock_ops *skops)
{
    st->key.family = skops->family;
    if (skops->family == AF_INET_) {
        u32 l = skops->local_ip4, r = skops->remote_ip4;
        __builtin_memcpy(st->key.laddr, &l, 4);
        __builtin_memcpy(st->key.raddr, &r, 4);
        return;
    }
    u32 l6[4] = {skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2],
                 skops->local_ip6[3]};
    u32 r6[4] = {skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2],
                 skops->remote_ip6[3]};
    __builtin_memcpy(st->key.laddr, l6, 16);
    __builtin_memcpy(st->key.raddr, r6, 16);
}

/* Track this socket's connection from now on (connect or establishment); NULL when
 * its owner is not observed or no storage can be had. */
static __always_inline struct sock_state *begin(struct bpf_sock_ops *skops, u8 role)
{
    struct bpf_sock *sk = skops->sk;
    if (!sk)
        return 0;
    struct sock_state *st = socks.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!st) {
        count(C_CONN_MAP_FULL);
        return 0;
    }
    if (skipped(st->key.cgroup)) {
        count(C_UNSELECTED);
        return 0;
    }
    /* A listener's clone, or a socket that connects again: keep only the owner. */
    st->flags &= S_OWNED;
    if (!admit())
        return 0;
    st->flags |= S_TRACKED | ((st->flags & S_OWNED) ? 0 : S_UNSTAMPED);
    st->key.role = role;
    st->key.port = role == ROLE_CLIENT ? bpf_ntohl(skops->remote_port) : skops->local_port;
    key_addresses(st, skops);
    st->start_ns = bpf_ktime_get_ns();
    st->fin_end = 0;
    bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG
#ifdef WITH_RETRANS
                              | BPF_SOCK_OPS_RETRANS_CB_FLAG
#endif
                              );
    return st;
}

/* The connection of `st` is open: one more on its edge. */
static __always_inline void count_open(struct sock_state *st)
{
    struct edge_val *e = edge_of(st, &st->key);
    if (e) {
        __sync_fetch_and_add(&e->opened, 1);
        note_open(e, st->start_ns);
    }
}

static __always_inline void established(struct bpf_sock_ops *skops, struct sock_state *st)
{
    u64 now = bpf_ktime_get_ns();
    st->flags |= S_ESTABLISHED;
    st->start_ns = st->report_ns = st->rtt_ns = now;
    st->acked = st->base_acked = skops->bytes_acked;
    st->base_una = skops->snd_una;
    st->received = skops->bytes_received;
    st->retrans = skops->total_retrans;
    if (!(st->flags & S_UNSTAMPED))
        count_open(st); /* else once its owner is known (stamp_late) */
}

/* Whatever the counters gained onto the edge; `final` adds the RTT sample regardless.
 * The gains are taken under the socket state's lock: ingress runs before TCP takes
 * the socket's, so two reports of one socket may race, and each byte counts once.
 * Retransmits come from the counter for adopted sockets only; the others count them
 * in the retransmit callback, which runs once the kernel's counter has them. */
static __always_inline void report(struct sock_state *st, struct edge_val *e, u64 acked,
                                   u64 received, u32 retrans, u32 srtt_us, u64 now, int final)
{
    if (!e)
        return;
    bpf_spin_lock(&st->lock);
    u64 sent_gain = gain(acked, &st->acked);
    u64 received_gain = gain(received, &st->received);
    u32 retrans_gain = 0;
    if ((st->flags & S_PREEXISTING) && retrans != st->retrans) {
        retrans_gain = retrans - st->retrans;
        st->retrans = retrans;
    }
    bpf_spin_unlock(&st->lock);
#ifdef WITH_BYTES
    add(&e->bytes_sent, sent_gain);
    add(&e->bytes_received, received_gain);
#endif
#ifdef WITH_RETRANS
    add(&e->retransmits, retrans_gain);
#endif
#ifdef WITH_RTT
    if (srtt_us && (final || now - st->rtt_ns >= RTT_SAMPLE_NS)) {
        add_rtt(e, srtt_us);
        st->rtt_ns = now;
    }
#endif
    st->report_ns = now;
    note_open(e, st->start_ns);
}

static __always_inline void closed(struct bpf_sock_ops *skops, struct sock_state *st, int old)
{
    if (st->flags & S_UNSTAMPED) {
        count(C_UNATTRIBUTED_CLOSE); /* it never sent a segment: no owner to count it on */
        return;
    }
    struct edge_val *e = edge_of(st, &st->key);
    if (!e)
        return;
    if (!(st->flags & S_ESTABLISHED)) {
#ifdef WITH_FAILURES
        if (old == ST_SYN_SENT) {
            note_open(e, st->start_ns);
            /* Something came back (the RST): refused; nothing at all: timed out. */
            __sync_fetch_and_add(skops->segs_in ? &e->refused : &e->timeouts, 1);
        }
#endif
        return;
    }
    int all_acked = skops->snd_una == skops->snd_nxt;
    if ((old == ST_LAST_ACK || old == ST_CLOSING) && all_acked)
        st->flags |= S_FIN_ACKED;
    u64 now = bpf_ktime_get_ns();
    report(st, e, data_acked(st, skops->bytes_acked),
           data_received(st, skops->bytes_received, skops->rcv_nxt),
           skops->total_retrans, skops->srtt_us >> 3, now, 1);
    __sync_fetch_and_add(&e->closed, 1);
    __sync_fetch_and_add(&e->duration_sum_ns, now - st->start_ns);
#ifdef WITH_FAILURES
    if (old == ST_ESTABLISHED || old == ST_CLOSE_WAIT || old == ST_FIN_WAIT1
        || ((old == ST_LAST_ACK || old == ST_CLOSING) && !all_acked))
        __sync_fetch_and_add(&e->resets, 1);
#endif
}

static __always_inline void state_changed(struct bpf_sock_ops *skops, struct sock_state *st)
{
    int old = skops->args[0], new = skops->args[1];
    switch (new) {
    case ST_FIN_WAIT1:
        st->flags |= S_FIN_SENT;
        /* Segments from now on show whether the peer's FIN lands in bytes_received. */
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags
                                  | BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG);
        break;
    case ST_FIN_WAIT2:
        st->flags |= S_FIN_ACKED;
        break;
    case ST_LAST_ACK:
        st->flags |= S_FIN_SENT;
        break;
    case ST_CLOSE_WAIT:
        st->flags |= S_FIN_RCVD;
        break;
    case ST_CLOSING:
        st->flags |= S_FIN_SENT | S_FIN_RCVD;
        break;
    case ST_CLOSE:
        closed(skops, st, old);
        release();
        st->flags &= S_OWNED; /* nothing more to count; a reconnect starts afresh */
        bpf_sock_ops_cb_flags_set(skops, 0);
        break;
    }
}

/* A segment in FIN_WAIT1/2, before TCP processes it: note an in-order FIN. */
static __always_inline void segment_in(struct bpf_sock_ops *skops, struct sock_state *st)
{
    if (!(skops->skb_tcp_flags & TCP_FLAG_FIN_))
        return;
    struct tcphdr *th = (void *)(long)skops->skb_data;
    if ((void *)(th + 1) > (void *)(long)skops->skb_data_end)
        return;
    u32 seq = bpf_ntohl(th->seq);
    if (seq != skops->rcv_nxt)
        return; /* out of order: its FIN is not counted until the gap fills */
    st->fin_end = seq + (skops->skb_len - th->doff * 4) + 1;
}

int on_sock_ops(struct bpf_sock_ops *skops)
{
    int op = skops->op;
    struct sock_state *st;

    if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
        begin(skops, ROLE_CLIENT);
        return 1;
    }
    if (op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
        st = begin(skops, ROLE_SERVER);
        if (st)
            established(skops, st);
        return 1;
    }
    if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_STATE_CB
        && op != BPF_SOCK_OPS_PARSE_HDR_OPT_CB && op != BPF_SOCK_OPS_RETRANS_CB)
        return 1;
    struct bpf_sock *sk = skops->sk;
    if (!sk)
        return 1;
    st = socks.sk_storage_get(sk, 0, 0);
    if (!st || !(st->flags & S_TRACKED))
        return 1;
    if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
        established(skops, st);
    } else if (op == BPF_SOCK_OPS_STATE_CB) {
        state_changed(skops, st);
    } else if (op == BPF_SOCK_OPS_PARSE_HDR_OPT_CB) {
        segment_in(skops, st);
    } else if (op == BPF_SOCK_OPS_RETRANS_CB && !skops->args[2]
               && !(st->flags & S_UNSTAMPED)) {
        /* args: sequence number, segments, error (0: sent) */
        struct edge_val *e = edge_of(st, &st->key);
        if (e)
            add(&e->retransmits, skops->args[1]);
    }
    return 1;
}
