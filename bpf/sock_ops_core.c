/* sock_ops_core.c - traceprobe's connection accounting from the kernel's own TCP
 * counters, through cgroup v2 socket programs (no tracepoints, no kprobes, no
 * kernel-memory reads: it loads under lockdown=confidentiality).
 *
 * Programs (linked at the agent's cgroup v2 root through BPF links, so a killed
 * agent leaves nothing attached):
 *   on_sock_create  cgroup/sock_create: the creating process (cgroup, tgid, comm) is
 *                stamped into the socket's storage; an accepted socket inherits its
 *                listener's stamp (the storage map is BPF_F_CLONE).
 *   on_sock_ops     sockops: connect, established (either side), state changes and RTT
 *                callbacks; bytes, retransmits and RTT come from the kernel's own
 *                counters (bytes_acked, bytes_received, total_retrans, srtt_us), so
 *                sendfile/splice traffic counts like any other.
 *   on_egress       cgroup_skb/egress: what a connection received, as of each segment
 *                it sends (an ACK leaves after the data it acknowledges is counted);
 *                and connections that were open before the agent started.
 *
 * Storage: `socks` SK_STORAGE struct sock_state per socket, freed with the socket.
 * Edges, counters and cgroup verdicts are edge_maps.h's. A connection's callbacks
 * and its egress run under its socket lock, so its state needs no lock; two sockets
 * may share an edge from process and softirq context on one CPU, so edge counters
 * are added atomically.
 *
 * Bytes are the counters minus SYN and FIN. The baseline is taken at establishment
 * (a client's bytes_acked already counts its SYN there). Our FIN is in bytes_acked
 * once FIN_WAIT2 is reached, or at CLOSE from LAST_ACK/CLOSING when everything sent
 * is acknowledged. The peer's FIN is in bytes_received once we go to CLOSE_WAIT or
 * CLOSING, or when a segment seen in FIN_WAIT1/2 carried it in order (the
 * PARSE_ALL_HDR_OPT callback, turned on for those states only).
 *
 * Kinds: WITH_BYTES, WITH_FAILURES, WITH_RETRANS and WITH_RTT each turn on their
 * fields; without WITH_BYTES user space does not link on_egress.
 *
 * Reports: an established connection adds what its counters gained since its last
 * report at each RTT callback (bytes_acked is fresh there) and at each egress segment
 * (bytes_received is fresh there), at most once per REPORT_NS; closing adds the rest.
 * RTT is sampled at close and at most once per RTT_SAMPLE_NS in reports.
 *
 * Failures: SYN_SENT -> CLOSE after a segment came in (segs_in, the RST) is refused;
 * with nothing received it timed out. ESTABLISHED/CLOSE_WAIT/FIN_WAIT1 -> CLOSE, and
 * LAST_ACK/CLOSING -> CLOSE with data unacknowledged, are resets.
 *
 * Connections open before the agent started have no storage: the first segment one
 * sends creates it (owner: the socket's cgroup; role: server when a listener holds its
 * local port), and from then on its bytes are reported at its egress segments. Their
 * opening, closing and duration are not counted, nor what they gained after their
 * last segment out (no close callback is armed for them).
 *
 * Minimum kernel: 5.10 (PARSE_ALL_HDR_OPT, skb data in sock_ops, bpf_sk_cgroup_id in
 * cgroup_skb). Fallback: conn_tracker.c, chosen when this does not load or attach.
 */

#include <uapi/linux/bpf.h>
#include <linux/tcp.h>

#ifndef REPORT_NS
#define REPORT_NS 0ULL
#endif
#define RTT_SAMPLE_NS 1000000000ULL

#define S_OWNED 1        /* stamped at socket creation */
#define S_TRACKED 2      /* counted: a selected client's connect, or established */
#define S_ESTABLISHED 4
#define S_FIN_SENT 8
#define S_FIN_ACKED 16
#define S_FIN_RCVD 32
#define S_PREEXISTING 64 /* open before the agent: counted from its first egress */

#define TCP_FLAG_FIN_ 0x01
#define barrier_var(v) asm volatile("" : "+r"(v))
#define BPF_F_CLONE_ (1U << 9)

struct sock_state {
    struct edge_key key;  /* cgroup and tgid from the stamp; the rest when connected */
    char comm[16];
    u64 start_ns;         /* connect(), then establishment */
    u64 report_ns;        /* last interval report */
    u64 rtt_ns;           /* last RTT sample */
    u64 acked;            /* data acknowledged (bytes_acked - FIN) already on an edge */
    u64 received;         /* data received (bytes_received - FIN) already on an edge */
    u32 retrans;          /* total_retrans already on an edge */
    u32 fin_end;          /* rcv_nxt just past a peer FIN seen in order in FIN_WAIT1/2 */
    u32 flags;
    u32 pad;
};

/* BPF_SK_STORAGE spelled out: BCC's macro has no way to ask for BPF_F_CLONE. */
struct socks_table_t {
    int key;
    struct sock_state leaf;
    void *(*sk_storage_get)(void *, void *, int);
    int (*sk_storage_delete)(void *);
    u32 flags;
};
__attribute__((section("maps/sk_storage")))
struct socks_table_t socks = {.flags = BPF_F_NO_PREALLOC | BPF_F_CLONE_};
BPF_ANNOTATE_KV_PAIR(socks, int, struct sock_state);
/* Connections tracked now (from connect or accept to close), held to MAX_CONNS: socket
 * storage has no capacity of its own, and a probe's limit must mean something. */
BPF_ARRAY(live, s64, 1);

static __always_inline int admit(void)
{
    int zero = 0;
    s64 *n = live.lookup(&zero);
    if (!n)
        return 0;
    if (__sync_fetch_and_add(n, 1) >= MAX_CONNS) {
        __sync_fetch_and_add(n, -1);
        count(C_CONN_MAP_FULL);
        return 0;
    }
    return 1;
}

static __always_inline void release(void)
{
    int zero = 0;
    s64 *n = live.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, -1);
}

static __always_inline struct edge_val *edge_of(struct sock_state *st)
{
    struct edge_val init = {};
    __builtin_memcpy(init.comm, st->comm, sizeof(init.comm));
    return edge_lookup(&st->key, &init);
}

static __always_inline void add(u64 *field, u64 n)
{
    if (n)
        __sync_fetch_and_add(field, n);
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

int on_sock_create(struct bpf_sock *sk)
{
    if (sk->protocol != IPPROTO_TCP_)
        return 1;
    /* Every socket is stamped, selected or not: verdicts change, and a listener's
     * stamp is what its accepted connections are attributed by. */
    struct sock_state *st = socks.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!st) {
        count(C_CONN_MAP_FULL);
        return 1;
    }
    st->key.cgroup = bpf_get_current_cgroup_id();
    st->key.tgid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(st->comm, sizeof(st->comm));
    st->flags = S_OWNED;
    return 1;
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
    st->flags |= S_TRACKED;
    st->key.role = role;
    st->key.port = role == ROLE_CLIENT ? bpf_ntohl(skops->remote_port) : skops->local_port;
    key_addresses(st, skops);
    st->start_ns = bpf_ktime_get_ns();
    st->fin_end = 0;
    bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTT_CB_FLAG);
    return st;
}

static __always_inline void established(struct bpf_sock_ops *skops, struct sock_state *st)
{
    u64 now = bpf_ktime_get_ns();
    st->flags |= S_ESTABLISHED;
    st->start_ns = st->report_ns = st->rtt_ns = now;
    st->acked = skops->bytes_acked;
    st->received = skops->bytes_received;
    st->retrans = skops->total_retrans;
    struct edge_val *e = edge_of(st);
    if (e) {
        __sync_fetch_and_add(&e->opened, 1);
        note_open(e, st->start_ns);
    }
}

/* Whatever the counters gained onto the edge; `final` adds the RTT sample regardless. */
static __always_inline void report(struct sock_state *st, struct edge_val *e, u64 acked,
                                   u64 received, u32 retrans, u32 srtt_us, u64 now, int final)
{
    if (!e)
        return;
#ifdef WITH_BYTES
    add(&e->bytes_sent, gain(acked, &st->acked));
    add(&e->bytes_received, gain(received, &st->received));
#endif
#ifdef WITH_RETRANS
    if (retrans != st->retrans) {
        add(&e->retransmits, (u32)(retrans - st->retrans));
        st->retrans = retrans;
    }
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
    struct edge_val *e = edge_of(st);
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
        && op != BPF_SOCK_OPS_RTT_CB && op != BPF_SOCK_OPS_PARSE_HDR_OPT_CB)
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
    } else if ((st->flags & S_ESTABLISHED)
               && (st->flags & (S_FIN_SENT | S_FIN_ACKED)) != S_FIN_SENT) {
        /* RTT: an ACK of new data was processed. One that may ack our FIN comes before
         * the state change that says so: the close callback accounts for it. */
        u64 now = bpf_ktime_get_ns();
        if (now - st->report_ns >= REPORT_NS)
            report(st, edge_of(st), data_acked(st, skops->bytes_acked), st->received,
                   skops->total_retrans, skops->srtt_us >> 3, now, 0);
    }
    return 1;
}

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
    st->acked = tp->bytes_acked;
    st->received = tp->bytes_received;
    st->retrans = tp->total_retrans;
    count(C_PREEXISTING);
}

int on_egress(struct __sk_buff *skb)
{
    struct bpf_sock *sk = skb->sk;
    if (!sk)
        return 1;
    sk = bpf_sk_fullsock(sk);
    if (!sk || sk->protocol != IPPROTO_TCP_)
        return 1;
    struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
    if (!tp)
        return 1;
    struct sock_state *st = socks.sk_storage_get(sk, 0, 0);
    if (!st) {
        if (sk->state == ST_ESTABLISHED)
            adopt(skb, sk, tp);
        return 1;
    }
    if (!(st->flags & S_ESTABLISHED))
        return 1;
    if ((st->flags & S_PREEXISTING) && sk->state != ST_ESTABLISHED)
        return 1; /* no state callbacks for it: stop before a FIN could be counted */
    u64 received = data_received(st, tp->bytes_received, tp->rcv_nxt);
    /* Acknowledgements arrive through the RTT callback, except for adopted sockets.
     * (Read into a register first: the verifier refuses a pointer chosen between
     * the socket and the storage.) */
    u64 acked = tp->bytes_acked;
    barrier_var(acked);
    if (!(st->flags & S_PREEXISTING))
        acked = st->acked;
    if (received == st->received && acked == st->acked)
        return 1;
    u64 now = bpf_ktime_get_ns();
    if (now - st->report_ns < REPORT_NS)
        return 1;
    report(st, edge_of(st), acked, received, tp->total_retrans, tp->srtt_us >> 3, now, 0);
    return 1;
}
