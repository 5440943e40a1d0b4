/* dns_answers.c - DNS responses reaching local sockets, to name external peers.
 *
 * Hook:
 *   cgroup_skb/ingress   attached (BPF_F_ALLOW_MULTI) to a cgroup v2 directory: the
 *                        agent's node subtree, or the hierarchy's root. It runs for
 *                        every packet delivered to a socket of a process below it.
 * Reads packet bytes only (bpf_skb_load_bytes), never kernel memory, so it loads
 * under lockdown=confidentiality. It never drops or changes a packet (returns 1).
 * What leaves the kernel: UDP datagrams from source port 53 (DNS responses), their
 * first DNS_MAX - 1 bytes; user space keeps only the A/AAAA answers' names and
 * addresses. No other payload is read.
 *
 * Maps:
 *   dns_events   RINGBUF (DNS_RING_PAGES pages): one struct dns_event per response
 *   dns_counters PERCPU_ARRAY: responses seen, lost (ring full), not selected
 *   cgroup_verdicts HASH cgroup v2 id -> V_TRACE | V_SKIP, as in conn_tracker.c: a
 *                response to a socket of a process no probe selects is not read.
 *                Undecided cgroups pass with their id; user space decides.
 *
 * Minimum kernel: 5.8 (ring buffer; cgroup_skb itself is 4.10).
 * Fallback: none; without it external peers are named by address.
 * Not seen: DNS over TCP or TLS, and IP fragments (rare for DNS answers).
 */

#define DNS_MAX 512
#define DNS_PORT 53
#define PROTO_UDP 17

#ifndef DNS_RING_PAGES
#define DNS_RING_PAGES 64
#endif

#ifndef MAX_CGROUPS
#define MAX_CGROUPS 16384
#endif
#define V_SKIP 2

struct dns_event {
    u64 cgroup;         /* cgroup v2 id of the receiving socket's process */
    u32 len;            /* bytes of data[] that are the response's */
    u8 data[DNS_MAX];
};

enum dns_counter {
    D_SEEN,
    D_LOST,
    D_UNSELECTED,
    D_MAX,
};

BPF_RINGBUF_OUTPUT(dns_events, DNS_RING_PAGES);
BPF_PERCPU_ARRAY(dns_counters, u64, D_MAX);
BPF_HASH(cgroup_verdicts, u64, u8, MAX_CGROUPS);

static __always_inline void dns_count(int which)
{
    u64 *c = dns_counters.lookup(&which);
    if (c)
        (*c)++;
}

int dns_ingress(struct __sk_buff *skb)
{
    /* Headers by direct packet access: this runs for every packet a local socket
     * receives, and helper calls would cost each of them; only DNS goes further. */
    u8 *data = (u8 *)(long)skb->data;
    u8 *end = (u8 *)(long)skb->data_end;
    u32 l4;

    if (data + 40 + 2 > end)
        return 1; /* not even an IPv6 header and a port in the linear part */
    if ((data[0] >> 4) == 4) {
        if (data[9] != PROTO_UDP)
            return 1;
        if (((data[6] & 0x3f) | data[7]) != 0)
            return 1; /* a fragment: its UDP header may be elsewhere */
        l4 = (data[0] & 0x0f) * 4;
    } else if ((data[0] >> 4) == 6) {
        if (data[6] != PROTO_UDP)
            return 1;
        l4 = 40;
    } else {
        return 1;
    }
    u16 sport;
    if (bpf_skb_load_bytes(skb, l4, &sport, 2) < 0 || bpf_ntohs(sport) != DNS_PORT)
        return 1;

    u32 off = l4 + 8;
    if (skb->len <= off + 12)
        return 1; /* shorter than a DNS header */
    /* The socket's cgroup (where its creator ran), only for DNS: the helper is not
     * worth calling for every packet. */
    u64 cgroup = bpf_skb_cgroup_id(skb);
    u8 *verdict = cgroup_verdicts.lookup(&cgroup);
    if (verdict && *verdict == V_SKIP) {
        dns_count(D_UNSELECTED);
        return 1;
    }
    u32 len = skb->len - off;
    if (len > DNS_MAX - 1)
        len = DNS_MAX - 1;
    dns_count(D_SEEN);
    struct dns_event *e = dns_events.ringbuf_reserve(sizeof(struct dns_event));
    if (!e) {
        dns_count(D_LOST);
        return 1;
    }
    /* The verifier needs the length provably in [1, DNS_MAX): a mask it can follow,
     * which the compiler would drop as redundant unless the bounds are hidden from it. */
    u64 n = len;
    asm volatile("" : "+r"(n));
    n &= DNS_MAX - 1;
    if (n == 0 || bpf_skb_load_bytes(skb, off, e->data, n) < 0) {
        dns_events.ringbuf_discard(e, 0);
        return 1;
    }
    e->len = n;
    e->cgroup = cgroup;
    dns_events.ringbuf_submit(e, 0);
    return 1;
}
