/* conn_tracker.c - traceprobe's connection accounting, tracepoints only.
 *
 * Hooks (all stable tracepoints; no kprobes, no kernel-memory reads, so it
 * loads under lockdown=confidentiality and does not depend on struct layouts):
 *   sock:inet_sock_set_state   lifecycle: connect, accept, established, close
 *   sock:sock_send_length      bytes sent; attributes server sockets   (WITH_BYTES)
 *   sock:sock_recv_length      bytes received; same                    (WITH_BYTES)
 *   tcp:tcp_destroy_sock       the socket is freed: forget it          (HAVE_DESTROY)
 *   tcp:tcp_receive_reset      refused vs timed out; resets            (WITH_FAILURES)
 *   tcp:tcp_retransmit_skb     retransmitted segments                  (WITH_RETRANS)
 *   tcp:tcp_probe              smoothed RTT (srtt, microseconds)       (WITH_RTT);
 *                              sampled at close and at most once a second while
 *                              packets arrive
 *
 * Maps (the edge maps, counters and cgroup verdicts are edge_maps.h's):
 *   conns       HASH  socket address -> struct conn   (MAX_CONNS entries)
 *   A skipped process's connections are never tracked, so what no probe selects
 *   costs one verdict lookup per connection; a cgroup not decided yet (a pod the
 *   agent has not heard of) is counted, and user space decides when it drains.
 *
 * Resets we send need no hook: an abortive close is the only way from
 * ESTABLISHED or CLOSE_WAIT straight to CLOSE (tcp:tcp_send_reset would also
 * do, but its format names an enum that older header trees lack).
 *
 * A socket address joins events: the tracepoints give `skaddr`/`sk` but never
 * the owning task, so the client side is attributed at connect() (process
 * context) and the server side, whose state changes run in softirq, at its first
 * send/recv/close in process context. Until then its counts wait in `conns`.
 *
 * A socket reaches CLOSE (e.g. TIME_WAIT after the peer's FIN) before its owner
 * has read the data still queued, so its entry lives until tcp_destroy_sock;
 * without that hook (HAVE_DESTROY unset) it goes at CLOSE and late reads are
 * counted as untracked_io.
 *
 * RAW_HOOKS (set when the kernel has raw tracepoints and UDP is not wanted):
 * send/recv/destroy attach as raw tracepoints, which read only their arguments
 * (the socket address and two ints), so the hot path skips the trace record.
 *
 * Minimum kernel: 4.16 for inet_sock_set_state and tcp_probe (skaddr in
 * tcp_probe: 5.x), 6.3 for sock_send_length/sock_recv_length. The loader checks
 * each tracepoint and compiles only what exists (Degraded otherwise).
 * Fallback: conn_bytes_kprobe.c stands in for the two bytes tracepoints where
 * they are missing and the kernel has kprobes (WITH_BYTES_KPROBE); the others
 * have none: their kind is reported Degraded.
 */

#define MSG_PEEK_ 2

#define F_ATTRIBUTED 1
#define F_ESTABLISHED 2
#define F_RST 4
#define F_CLOSED 8   /* reached CLOSE; `close_old` says from where */
#define F_FOLDED 16  /* its close is counted on an edge */

struct conn {
    struct edge_key key;
    u64 start_ns;
    u64 end_ns;
    u64 retransmits;      /* counted before attribution */
    u64 rtt_sample_ns;    /* when srtt was last added to the edge */
    u32 flags;
    u32 srtt_us;          /* latest smoothed RTT */
    u32 close_old;        /* state it went to CLOSE from */
    u32 pad;
};

BPF_HASH(conns, u64, struct conn, MAX_CONNS);
/* Per-CPU values: plain `+=` is safe here: tracing programs never nest on one CPU
 * (the kernel skips a program that would run inside another), so nothing interleaves. */

static __always_inline struct edge_val *edge_get(struct edge_key *key, int in_task)
{
    struct edge_val init = {};
    if (in_task)
        bpf_get_current_comm(&init.comm, sizeof(init.comm));
    return edge_lookup(key, &init);
}

/* Track a new connection; a leftover entry for the same socket (a second
 * connect() on it) is replaced, not mistaken for a full map. */
#define EEXIST_ 17

static __always_inline int track(u64 sk, struct conn *c)
{
    int err = conns.insert(&sk, c);
    if (err == -EEXIST_) {
        count(C_STALE_REPLACED);
        err = conns.update(&sk, c);
    }
    if (err) {
        count(C_CONN_MAP_FULL);
        return -1;
    }
    return 0;
}

static __always_inline void copy_addrs(struct edge_key *key, u16 family,
                                       const u8 *s4, const u8 *d4,
                                       const u8 *s6, const u8 *d6)
{
    if (family == AF_INET_) {
        __builtin_memcpy(key->laddr, s4, 4);
        __builtin_memcpy(key->raddr, d4, 4);
    } else {
        __builtin_memcpy(key->laddr, s6, 16);
        __builtin_memcpy(key->raddr, d6, 16);
    }
}

static __always_inline void init_conn(struct conn *c, u8 role, u16 family, u16 port,
                                      const u8 *s4, const u8 *d4,
                                      const u8 *s6, const u8 *d6)
{
    c->key.role = role;
    c->key.family = family;
    c->key.port = port;
    copy_addrs(&c->key, family, s4, d4, s6, d6);
    c->start_ns = bpf_ktime_get_ns();
    c->rtt_sample_ns = c->start_ns;
}

static __always_inline void add_rtt(struct edge_val *e, u32 srtt_us)
{
    e->rtt_sum_us += srtt_us;
    e->rtt_samples += 1;
    if (srtt_us > e->rtt_max_us)
        e->rtt_max_us = srtt_us;
}

/* How a finished connection ended, onto its edge. */
static __always_inline void fold_close(struct edge_val *e, struct conn *c)
{
    c->flags |= F_FOLDED;
    if (!e)
        return;
    note_open(e, c->start_ns);
    if (c->close_old == ST_SYN_SENT) {
        if (c->flags & F_RST)
            e->refused += 1;
        else
            e->timeouts += 1;
        return;
    }
    if (!(c->flags & F_ESTABLISHED))
        return;
    e->closed += 1;
    e->duration_sum_ns += c->end_ns - c->start_ns;
    /* Only an abortive close goes from ESTABLISHED or CLOSE_WAIT straight to CLOSE. */
    if ((c->flags & F_RST) || c->close_old == ST_ESTABLISHED || c->close_old == ST_CLOSE_WAIT)
        e->resets += 1;
    if (c->srtt_us)
        add_rtt(e, c->srtt_us);
}

/* Move what waited in `conns` onto the edge (opened, early retransmits). */
static __always_inline void fold_pending(struct edge_val *e, struct conn *c)
{
    if (!e)
        return;
    note_open(e, c->start_ns);
    if (c->flags & F_ESTABLISHED)
        e->opened += 1;
    e->retransmits += c->retransmits;
    c->retransmits = 0;
    if ((c->flags & F_CLOSED) && !(c->flags & F_FOLDED))
        fold_close(e, c);
}

/* The connection gets its owner, the current task (process context only); one of
 * a process no probe selects is forgotten (NULL). */
static __always_inline struct edge_val *attribute(u64 sk, struct conn *c)
{
    u64 cgroup = bpf_get_current_cgroup_id();
    if (skipped(cgroup)) {
        count(C_UNSELECTED);
        conns.delete(&sk);
        return 0;
    }
    c->key.cgroup = cgroup;
    c->key.tgid = bpf_get_current_pid_tgid() >> 32;
    c->flags |= F_ATTRIBUTED;
    struct edge_val *e = edge_get(&c->key, 1);
    fold_pending(e, c);
    return e;
}

/* The socket is gone: count what was never attributed, then forget it. */
static __always_inline void forget(u64 sk, struct conn *c)
{
    if (!(c->flags & F_ATTRIBUTED)) {
        /* No process ever touched it: keep its counts on an owner-less edge. */
        count(C_UNATTRIBUTED_CLOSE);
        fold_pending(edge_get(&c->key, 0), c);
    } else if ((c->flags & F_CLOSED) && !(c->flags & F_FOLDED)) {
        fold_close(edge_get(&c->key, 0), c);
    }
    conns.delete(&sk);
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP_)
        return 0;
    u64 sk = (u64)args->skaddr;
    int old = args->oldstate, new = args->newstate;

    if (new == ST_SYN_SENT) {
        /* connect(): process context, so the owner is current. */
        u64 cgroup = bpf_get_current_cgroup_id();
        if (skipped(cgroup)) {
            count(C_UNSELECTED);
            return 0;
        }
        struct conn c = {};
        init_conn(&c, ROLE_CLIENT, args->family, args->dport, args->saddr, args->daddr,
                  args->saddr_v6, args->daddr_v6);
        /* Attributed before it is stored: one map write, no re-lookup. */
        c.key.cgroup = cgroup;
        c.key.tgid = bpf_get_current_pid_tgid() >> 32;
        c.flags = F_ATTRIBUTED;
        if (track(sk, &c) == 0)
            edge_get(&c.key, 1); /* create the edge now, while comm is the owner's */
        return 0;
    }
    if (new == ST_ESTABLISHED && old == ST_SYN_SENT) {
        struct conn *c = conns.lookup(&sk);
        if (!c)
            return 0;
        c->flags |= F_ESTABLISHED;
        c->start_ns = bpf_ktime_get_ns();
        struct edge_val *e = edge_get(&c->key, 0);
        if (e) {
            e->opened += 1;
            note_open(e, c->start_ns);
        }
        return 0;
    }
    if (new == ST_ESTABLISHED && old == ST_SYN_RECV) {
        /* A server-side child socket, in softirq: owner unknown until later. */
        struct conn c = {};
        init_conn(&c, ROLE_SERVER, args->family, args->sport, args->saddr, args->daddr,
                  args->saddr_v6, args->daddr_v6);
        c.flags = F_ESTABLISHED;
        track(sk, &c);
        return 0;
    }
    if (new == ST_CLOSE) {
        struct conn *c = conns.lookup(&sk);
        if (!c)
            return 0;
        c->flags |= F_CLOSED;
        c->close_old = old;
        c->end_ns = bpf_ktime_get_ns();
        if (c->flags & F_ATTRIBUTED)
            fold_close(edge_get(&c->key, 0), c);
#ifndef HAVE_DESTROY
        forget(sk, c);
#endif
        return 0;
    }
    if (new == ST_FIN_WAIT1 || new == ST_LAST_ACK) {
        /* Only close()/shutdown() lead here: process context, the owner is current. */
        struct conn *c = conns.lookup(&sk);
        if (c && !(c->flags & F_ATTRIBUTED))
            attribute(sk, c);
    }
    return 0;
}

#ifdef HAVE_DESTROY
static __always_inline int on_destroy(u64 sk)
{
    struct conn *c = conns.lookup(&sk);
    if (c)
        forget(sk, c);
    return 0;
}

#ifdef RAW_HOOKS
RAW_TRACEPOINT_PROBE(tcp_destroy_sock)
{
    return on_destroy(ctx->args[0]); /* TP_PROTO(struct sock *sk) */
}
#else
TRACEPOINT_PROBE(tcp, tcp_destroy_sock)
{
    return on_destroy((u64)args->skaddr);
}
#endif
#endif

#if defined(WITH_BYTES) || defined(WITH_BYTES_KPROBE)
static __always_inline int on_io(u64 sk, u16 family, u16 protocol, int ret, int flags,
                                 int sent)
{
    if (ret <= 0 || (!sent && (flags & MSG_PEEK_)))
        return 0;
    struct edge_val *e = 0;
    struct conn *c = 0;
    if (protocol == IPPROTO_TCP_) {
        c = conns.lookup(&sk);
        if (!c) {
            /* Not tracked: opened before the agent, or its process is skipped. */
            if (!skipped(bpf_get_current_cgroup_id()))
                count(C_UNTRACKED_IO);
            return 0;
        }
        if (c->flags & F_ATTRIBUTED)
            e = edge_get(&c->key, 1);
        else if (!(e = attribute(sk, c)))
            return 0;
    }
#ifdef WITH_UDP
    else if (protocol == IPPROTO_UDP_) {
        /* UDP tracepoints carry no addresses: aggregate per local process. */
        struct edge_key key = {};
        key.role = ROLE_UDP;
        key.family = family;
        key.cgroup = bpf_get_current_cgroup_id();
        if (skipped(key.cgroup)) {
            count(C_UNSELECTED);
            return 0;
        }
        key.tgid = bpf_get_current_pid_tgid() >> 32;
        e = edge_get(&key, 1);
        if (e && sent)
            e->opened++; /* datagrams sent */
        else if (e)
            e->closed++; /* datagrams received */
    }
#endif
    if (!e)
        return 0;
    if (c)
        note_open(e, c->start_ns);
    if (sent)
        e->bytes_sent += ret;
    else
        e->bytes_received += ret;
    return 0;
}
#endif

#ifdef WITH_BYTES
#ifdef RAW_HOOKS
/* Raw tracepoints hand over the arguments as they are, skipping the trace-event
 * record the kernel otherwise fills per call; the protocol is not among them, so
 * a socket counts only if `conns` knows it (UDP needs the classic hooks). */
RAW_TRACEPOINT_PROBE(sock_send_length)
{
    /* TP_PROTO(struct sock *sk, int ret, int flags) */
    return on_io(ctx->args[0], 0, IPPROTO_TCP_, (int)ctx->args[1], (int)ctx->args[2], 1);
}

RAW_TRACEPOINT_PROBE(sock_recv_length)
{
    return on_io(ctx->args[0], 0, IPPROTO_TCP_, (int)ctx->args[1], (int)ctx->args[2], 0);
}
#else
TRACEPOINT_PROBE(sock, sock_send_length)
{
    return on_io((u64)args->sk, args->family, args->protocol, args->ret, args->flags, 1);
}

TRACEPOINT_PROBE(sock, sock_recv_length)
{
    return on_io((u64)args->sk, args->family, args->protocol, args->ret, args->flags, 0);
}
#endif
#endif

#ifdef WITH_FAILURES
TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
    u64 sk = (u64)args->skaddr;
    struct conn *c = conns.lookup(&sk);
    if (c)
        c->flags |= F_RST;
    return 0;
}

#endif

#ifdef WITH_RETRANS
TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
    u64 sk = (u64)args->skaddr;
    struct conn *c = conns.lookup(&sk);
    if (!c)
        return 0;
    if (c->flags & F_ATTRIBUTED) {
        struct edge_val *e = edge_get(&c->key, 0);
        if (e) {
            e->retransmits += 1;
            note_open(e, c->start_ns);
        }
    } else {
        c->retransmits++;
    }
    return 0;
}
#endif

#ifdef WITH_RTT
/* Long-lived connections add an RTT sample at most this often (closing adds one). */
#define RTT_SAMPLE_NS 1000000000ULL

TRACEPOINT_PROBE(tcp, tcp_probe)
{
    u64 sk = (u64)args->skaddr;
    struct conn *c = conns.lookup(&sk);
    if (!c || !args->srtt)
        return 0;
    c->srtt_us = args->srtt;
    if (!(c->flags & F_ATTRIBUTED))
        return 0;
    u64 now = bpf_ktime_get_ns();
    if (now - c->rtt_sample_ns < RTT_SAMPLE_NS)
        return 0;
    c->rtt_sample_ns = now;
    struct edge_val *e = edge_get(&c->key, 0);
    if (e) {
        add_rtt(e, c->srtt_us);
        note_open(e, c->start_ns);
    }
    return 0;
}
#endif
