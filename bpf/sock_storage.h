/* sock_storage.h - the sock_ops core's per-socket state: what each socket's storage
 * holds, the count of connections tracked against MAX_CONNS, and the stamp of the
 * process that created each socket (on_sock_create, cgroup/sock_create). Prepended
 * to the core's other files by the loader, after edge_maps.h (bpf_source).
 *
 * Storage: `socks` SK_STORAGE struct sock_state per socket, freed with the socket;
 * BPF_F_CLONE, so an accepted socket starts with its listener's stamp.
 */

#include <uapi/linux/bpf.h>
#include <linux/tcp.h>

#define S_OWNED 1        /* stamped at socket creation */
#define S_TRACKED 2      /* counted: a selected client's connect, or established */
#define S_ESTABLISHED 4
#define S_FIN_SENT 8
#define S_FIN_ACKED 16
#define S_FIN_RCVD 32
#define S_PREEXISTING 64 /* open before the agent: counted from its first segment */
#define S_UNSTAMPED 128  /* created before the agent (its listener, say): no owner known
                          * until its first segment out names its cgroup */
#define S_UDP_ROLE 256   /* UDP: key.role set by the first datagram */
#define S_UDP_DST 512    /* UDP: udp_dst holds the address the pending sendmsg named */
#define S_NOT_PARSED 1024 /* its first request-direction data was no protocol parsed */

#define BPF_F_CLONE_ (1U << 9)
/* Keeps clang from using another register holding `v` than the one just checked. */
#define barrier_var(v) asm volatile("" : "+r"(v))

struct sock_state {
    struct edge_key key;  /* cgroup and tgid from the stamp; the rest when connected */
    char comm[16];
    u64 start_ns;         /* connect(), then establishment */
    u64 report_ns;        /* last interval report */
    u64 rtt_ns;           /* last RTT sample */
    u64 acked;            /* data acknowledged (bytes_acked - FIN) already on an edge */
    u64 received;         /* data received (bytes_received - FIN) already on an edge */
    u32 retrans;          /* total_retrans already on an edge (adopted sockets) */
    u32 fin_end;          /* rcv_nxt just past a peer FIN seen in order in FIN_WAIT1/2 */
    u32 flags;
    u8 udp_dst[16];       /* UDP: the destination the last sendto()/sendmsg() named */
    u16 udp_dst_port;
    u8 udp_dst_family;
    u32 base_una;         /* snd_una when bytes_acked was base_acked, read together */
    u64 base_acked;       /* under the socket lock: what ingress computes ACKs from */
    struct bpf_spin_lock lock; /* over acked/received/retrans/base_*: ingress is unlocked */
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

/* The edge `key` of socket `st`'s owner, created with its comm. */
static __always_inline struct edge_val *edge_of(struct sock_state *st, struct edge_key *key)
{
    struct edge_val init = {};
    __builtin_memcpy(init.comm, st->comm, sizeof(init.comm));
    return edge_lookup(key, &init);
}

static __always_inline void add(u64 *field, u64 n)
{
    if (n)
        __sync_fetch_and_add(field, n);
}

int on_sock_create(struct bpf_sock *sk)
{
#ifdef WITH_UDP
    if (sk->protocol != IPPROTO_TCP_ && sk->protocol != IPPROTO_UDP_)
        return 1;
#else
    if (sk->protocol != IPPROTO_TCP_)
        return 1;
#endif
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
