/* edge_maps.h - what both connection cores hand to user space: per-edge aggregates
 * in two double-buffered per-CPU hashes, drop counters, and the per-cgroup verdicts
 * user space keeps current. Prepended to conn_tracker.c or sock_ops_core.c by the
 * loader (bpf_source), so the two cores cannot drift apart in layout.
 *
 * Maps:
 *   edges0/1    PERCPU_HASH struct edge_key -> struct edge_val (MAX_EDGES each):
 *               programs write the map `active` selects, user space flips it and
 *               drains the other with batch lookup-and-delete, so aggregation is
 *               lossless without per-event output.
 *   counters    PERCPU_ARRAY of drop / anomaly counters (enum counter)
 *   cgroup_verdicts  HASH cgroup v2 id -> V_TRACE | V_SKIP (MAX_CGROUPS entries):
 *               which local processes the probes observe. A cgroup not in the map
 *               is not decided yet: user space decides when it drains.
 */

#define AF_INET_ 2
#define AF_INET6_ 10
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17

/* TCP states, as in include/net/tcp_states.h */
#define ST_ESTABLISHED 1
#define ST_SYN_SENT 2
#define ST_SYN_RECV 3
#define ST_FIN_WAIT1 4
#define ST_FIN_WAIT2 5
#define ST_CLOSE 7
#define ST_CLOSE_WAIT 8
#define ST_LAST_ACK 9
#define ST_CLOSING 11

#define ROLE_CLIENT 1
#define ROLE_SERVER 2
#define ROLE_UDP 3        /* UDP of a local process, peers unknown (tracepoint core) */
#define ROLE_UDP_CLIENT 4 /* UDP with a peer: this socket sent first */
#define ROLE_UDP_SERVER 5 /* UDP with a peer: this socket received first */

#ifndef MAX_CGROUPS
#define MAX_CGROUPS 16384
#endif
#define V_TRACE 1
#define V_SKIP 2

enum counter {
    C_CONN_MAP_FULL,      /* a new connection could not be tracked */
    C_EDGE_MAP_FULL,      /* an edge update was dropped: edges map full */
    C_UNTRACKED_IO,       /* bytes on a TCP socket opened before the agent */
    C_UNATTRIBUTED_CLOSE, /* server socket closed before any process touched it */
    C_STALE_REPLACED,     /* a socket connected again; its old entry was replaced */
    C_UNSELECTED,         /* a connection or datagram of a process no probe selects */
    C_PREEXISTING,        /* a connection opened before the agent, counted from now on */
    C_REQ_MAP_FULL,       /* a request was not counted: requests map or storage full */
    C_HTTP_DESYNC,        /* an HTTP stream's framing was lost; it waits for a head */
    C_HTTP_PENDING_FULL,  /* more HTTP requests in flight than followed; one not counted */
    C_HTTP_UNMATCHED,     /* an HTTP response to no request seen; not counted */
    C_DNS_PENDING_FULL,   /* more DNS queries in flight on a socket than kept; one lost */
    C_DNS_UNMATCHED,      /* a DNS response to no query seen; not counted */
    C_DB_DESYNC,          /* a Postgres or Redis stream's framing was lost; not followed */
    C_DB_PENDING_FULL,    /* more database requests in flight than followed; one lost */
    C_DB_UNMATCHED,       /* a database response to no request seen; not counted */
    C_DB_SKIMMED,         /* a Postgres response's rows passed over to its end unframed */
    C_MAX,
};

struct edge_key {
    u64 cgroup;       /* cgroup v2 id of the local process (0: unknown) */
    u32 tgid;         /* local process (0: unknown) */
    u16 port;         /* remote port for clients, local port for servers */
    u8 family;        /* AF_INET or AF_INET6 */
    u8 role;          /* ROLE_* */
    u8 laddr[16];     /* local address (IPv4 in the first 4 bytes) */
    u8 raddr[16];     /* remote address */
};

struct edge_val {
    u64 opened;           /* connections established (UDP roles: datagrams sent) */
    u64 closed;           /* established connections closed (UDP: datagrams received) */
    u64 refused;          /* connect() answered by RST */
    u64 timeouts;         /* connect() never answered */
    u64 resets;           /* established connections ended by RST */
    u64 bytes_sent;
    u64 bytes_received;
    u64 retransmits;
    u64 rtt_sum_us;
    u64 rtt_samples;
    u64 rtt_max_us;
    u64 duration_sum_ns;
    /* Opening times (ktime ns) of the earliest and latest connection counted here:
     * the map names a remote address by its owner when the connection opened, so a
     * pod IP reused inside one interval does not hand the old pod's counts over. */
    u64 first_open_ns;
    u64 last_open_ns;
    char comm[16];
};

BPF_PERCPU_HASH(edges0, struct edge_key, struct edge_val, MAX_EDGES);
BPF_PERCPU_HASH(edges1, struct edge_key, struct edge_val, MAX_EDGES);
BPF_ARRAY(active, u32, 1);
BPF_PERCPU_ARRAY(counters, u64, C_MAX);
BPF_HASH(cgroup_verdicts, u64, u8, MAX_CGROUPS);

static __always_inline void count(int which)
{
    u64 *c = counters.lookup(&which);
    if (c)
        __sync_fetch_and_add(c, 1);
}

/* No probe observes this cgroup's processes. */
static __always_inline int skipped(u64 cgroup)
{
    u8 *verdict = cgroup_verdicts.lookup(&cgroup);
    return verdict && *verdict == V_SKIP;
}

/* The edge `key` in the active map, created from `init` (its comm) when new. */
static __always_inline struct edge_val *edge_lookup(struct edge_key *key,
                                                    struct edge_val *init)
{
    struct edge_val *val;
    int zero = 0;
    u32 *sel = active.lookup(&zero);
    int second = sel && *sel;

    /* Hot path: the edge exists; no zero-fill, no comm copy. */
    if (second)
        val = edges1.lookup(key);
    else
        val = edges0.lookup(key);
    if (val)
        return val;
    if (second)
        val = edges1.lookup_or_try_init(key, init);
    else
        val = edges0.lookup_or_try_init(key, init);
    if (!val)
        count(C_EDGE_MAP_FULL);
    return val;
}

/* A connection opened at `start_ns` counts on edge `e`: widen its span of opening times. */
static __always_inline void note_open(struct edge_val *e, u64 start_ns)
{
    if (!e->first_open_ns || start_ns < e->first_open_ns)
        e->first_open_ns = start_ns;
    if (start_ns > e->last_open_ns)
        e->last_open_ns = start_ns;
}
