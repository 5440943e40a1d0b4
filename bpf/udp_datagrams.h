/* udp_datagrams.h - the sock_ops core's UDP accounting (WITH_UDP): each datagram in
 * or out, from the cgroup_skb programs (tcp_segments.c), onto the edge of its socket's
 * owner and the peer its IP and UDP headers name. Between sock_storage.h and
 * sock_ops_core.c in the loader's order; the rules are in sock_ops_core.c's header.
 */

#ifdef WITH_UDP
/* Addresses and ports of a UDP datagram from its headers (skb data starts at the IP
 * header), oriented to the local socket; its payload bytes. 0: not UDP, or a fragment
 * past the first (the hooks see whole datagrams, so this is only a guard). */
static __always_inline int udp_header(struct __sk_buff *skb, int egress, struct edge_key *key,
                                      u16 *lport, u16 *rport, u32 *payload)
{
    u8 ip[40];
    u32 l4;
    if (bpf_skb_load_bytes(skb, 0, ip, 20))
        return 0;
    u8 version = ip[0] >> 4;
    if (version == 4) {
        l4 = (ip[0] & 0x0f) * 4;
        if (ip[9] != IPPROTO_UDP_ || ((ip[6] & 0x1f) | ip[7]) || l4 < 20)
            return 0;
        key->family = AF_INET_;
        __builtin_memcpy(egress ? key->laddr : key->raddr, ip + 12, 4);
        __builtin_memcpy(egress ? key->raddr : key->laddr, ip + 16, 4);
    } else {
        if (version != 6 || bpf_skb_load_bytes(skb, 0, ip, 40) || ip[6] != IPPROTO_UDP_)
            return 0; /* extension headers: not counted */
        l4 = 40;
        key->family = AF_INET6_;
        __builtin_memcpy(egress ? key->laddr : key->raddr, ip + 8, 16);
        __builtin_memcpy(egress ? key->raddr : key->laddr, ip + 24, 16);
    }
    u16 ports[2];
    if (bpf_skb_load_bytes(skb, l4, ports, 4) || skb->len < l4 + 8)
        return 0;
    *lport = bpf_ntohs(ports[egress ? 0 : 1]);
    *rport = bpf_ntohs(ports[egress ? 1 : 0]);
    *payload = skb->len - l4 - 8;
    return 1;
}

/* One UDP datagram of `sk`, out (egress) or in, onto the edge of its owner and peer. */
static __always_inline void datagram(struct __sk_buff *skb, struct bpf_sock *sk, int egress)
{
    struct sock_state *st = socks.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!st) {
        count(C_CONN_MAP_FULL);
        return;
    }
    if (!(st->flags & S_UDP_ROLE)) {
        if (!(st->flags & S_OWNED))
            st->key.cgroup = bpf_sk_cgroup_id(sk); /* created before the agent */
        st->key.role = egress ? ROLE_UDP_CLIENT : ROLE_UDP_SERVER;
        st->flags |= S_UDP_ROLE;
    }
    if (skipped(st->key.cgroup)) {
        count(C_UNSELECTED);
        return;
    }
    struct edge_key key = {};
    u16 lport, rport;
    u32 payload;
    if (!udp_header(skb, egress, &key, &lport, &rport, &payload))
        return;
    key.cgroup = st->key.cgroup;
    key.tgid = st->key.tgid;
    key.role = st->key.role;
    key.port = key.role == ROLE_UDP_CLIENT ? rport : lport;
    struct edge_val *e = edge_of(st, &key);
    if (!e)
        return;
    u32 n = skb->gso_segs ? skb->gso_segs : 1;
    add(egress ? &e->opened : &e->closed, n);
    add(egress ? &e->bytes_sent : &e->bytes_received, payload);
    note_open(e, bpf_ktime_get_ns());
}
#endif
