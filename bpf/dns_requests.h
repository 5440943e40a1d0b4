/* dns_requests.h - DNS lookups on the sock_ops core (WITH_DNS_REQUESTS): each query and
 * its response, matched by ID and peer port, counted on the edge by question type and
 * response code with the time between them. Loaded after request_maps.h, before
 * udp_datagrams.h, whose datagram() hands over each UDP datagram's payload (WITH_UDP),
 * and dns_streams.h, which hands over each message of DNS over TCP.
 *
 * Detection is by the bytes, not the port: a datagram is DNS when its 12-byte header is
 * a standard query or response (opcode QUERY, one question, Z clear; a query carries no
 * answers). A socket that sent first (a client) times from the query out to the
 * response in; one that received first (a server) from the query in to the response out.
 * Queries in flight wait in `dnss` socket storage, DNS_PENDING per socket (created at a
 * socket's first query); past that the oldest is dropped and counted (C_DNS_PENDING_FULL),
 * and a response to no query seen is counted (C_DNS_UNMATCHED), neither as a request.
 * Only the type, the response code and the times leave the kernel, never a name.
 */

#ifdef WITH_DNS_REQUESTS
#define DNS_PENDING 8
#define DNS_LABELS 32 /* labels followed to find a question's type (names have <= 127) */

struct dns_pending {
    u64 sent_ns[DNS_PENDING];
    u16 id[DNS_PENDING];
    u16 port[DNS_PENDING]; /* the peer's */
    u8 qtype[DNS_PENDING];
    u8 used;               /* bit per slot */
    u8 next;               /* the slot a full table overwrites */
};
BPF_SK_STORAGE(dnss, struct dns_pending);

#define QTYPE_A 1
#define QTYPE_AAAA 2
#define QTYPE_CNAME 3
#define QTYPE_MX 4
#define QTYPE_TXT 5
#define QTYPE_SRV 6
#define QTYPE_PTR 7
#define QTYPE_NS 8
#define QTYPE_SOA 9
#define QTYPE_HTTPS 10
#define QTYPE_ANY 11

static __always_inline u8 qtype_of(u16 type)
{
    switch (type) {
    case 1: return QTYPE_A;
    case 28: return QTYPE_AAAA;
    case 5: return QTYPE_CNAME;
    case 15: return QTYPE_MX;
    case 16: return QTYPE_TXT;
    case 33: return QTYPE_SRV;
    case 12: return QTYPE_PTR;
    case 2: return QTYPE_NS;
    case 6: return QTYPE_SOA;
    case 65: return QTYPE_HTTPS;
    case 255: return QTYPE_ANY;
    }
    return 0;
}

/* The question's type: past its name's labels (at `at`, the payload's 13th byte). */
static __always_inline u8 question_type(struct __sk_buff *skb, u32 at)
{
    for (int i = 0; i < DNS_LABELS; i++) {
        u8 len;
        if (bpf_skb_load_bytes(skb, at, &len, 1))
            return 0;
        if (!len)
            break;
        if (len > 63)
            return 0; /* a pointer, or not a name: no type to read */
        at += len + 1;
    }
    u16 type;
    if (bpf_skb_load_bytes(skb, at + 1, &type, 2))
        return 0;
    return qtype_of(bpf_ntohs(type));
}

/* The DNS message in `skb` (at `at`, `len` bytes) of socket `sk`, owned as `st`, on
 * edge `key` with the peer's port `rport`; queries go this way when `queries`. */
static __always_inline void dns_message(struct __sk_buff *skb, struct bpf_sock *sk,
                                        struct sock_state *st, struct edge_key *key,
                                        u16 rport, u32 at, u32 len, int queries)
{
    u16 h[6];
    if (len < 17 || bpf_skb_load_bytes(skb, at, h, 12))
        return;
    u16 id = h[0], flags = bpf_ntohs(h[1]);
    if (((flags >> 11) & 0xf) || (flags & 0x40) || bpf_ntohs(h[2]) != 1)
        return; /* not a standard query or its response */
    int response = flags >> 15;
    if (response == queries)
        return; /* the other way round: not this socket's lookups */
    if (!response) {
        if (h[3])
            return; /* a query with answers is no query */
        struct dns_pending *p = dnss.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
        if (!p)
            return;
        u32 slot = p->next & (DNS_PENDING - 1);
#pragma unroll
        for (u32 i = 0; i < DNS_PENDING; i++) {
            if (!(p->used & (1 << i))) {
                slot = i;
                break;
            }
        }
        if (p->used & (1 << slot))
            count(C_DNS_PENDING_FULL);
        p->next = slot + 1;
        p->used |= 1 << slot;
        p->id[slot] = id;
        p->port[slot] = rport;
        p->sent_ns[slot] = bpf_ktime_get_ns();
        p->qtype[slot] = question_type(skb, at + 12);
        return;
    }
    struct dns_pending *p = dnss.sk_storage_get(sk, 0, 0);
    if (!p) {
        count(C_DNS_UNMATCHED);
        return;
    }
#pragma unroll
    for (u32 i = 0; i < DNS_PENDING; i++) {
        if ((p->used & (1 << i)) && p->id[i] == id && p->port[i] == rport) {
            p->used &= ~(1 << i);
            count_request(key, st->comm, PROTO_DNS, p->qtype[i], flags & 0xf,
                          bpf_ktime_get_ns() - p->sent_ns[i]);
            return;
        }
    }
    count(C_DNS_UNMATCHED);
}
#endif
