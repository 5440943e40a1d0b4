/* udp_datagrams.h - the sock_ops core's UDP accounting (WITH_UDP): each datagram in
 * or out, from the cgroup_skb programs (tcp_segments.c), onto the edge of its socket's
 * owner and the peer its IP and UDP headers name. Between sock_storage.h and
 * sock_ops_core.c in the loader's order; the rules are in sock_ops_core.c's header.
 *
 * Programs: on_udp4_sendmsg, on_udp6_sendmsg (cgroup/sendmsg4, sendmsg6): the
 * destination a sendto()/sendmsg() names, before routing and NAT. Egress runs after
 * the netfilter OUTPUT hook, so a node process's datagram to a ClusterIP shows the pod
 * it was DNATed to there, while its answers come back from the ClusterIP: a datagram
 * out is put on the peer the application named (this hook's address; a connected
 * socket's own), so both directions land on one edge, as for TCP. Two threads sending
 * on one unconnected socket at once may swap their datagrams' peers.
 */

#ifdef WITH_UDP
/* Addresses and ports of a UDP datagram from its headers (skb data starts at the IP
 * header), oriented to the local socket; its payload bytes and where they start. 0:
 * not UDP, or a fragment
 * past the first (the hooks see whole datagrams, so this is only a guard). */
static __always_inline int udp_header(struct __sk_buff *skb, int egress, struct edge_key *key,
                                      u16 *lport, u16 *rport, u32 *payload, u32 *at)
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
    *at = l4 + 8;
    return 1;
}

/* The peer `addr` (`family`; v4 in the first 4 bytes) and `port` onto `key`, when it
 * is of the datagram's family (or a v4-mapped address of a v4 datagram). */
static __always_inline void set_peer(struct edge_key *key, u16 *rport, u8 family, u8 *addr,
                                     u16 port)
{
    if (family == AF_INET_ && key->family == AF_INET_) {
        __builtin_memcpy(key->raddr, addr, 4);
    } else if (family == AF_INET6_ && key->family == AF_INET6_) {
        __builtin_memcpy(key->raddr, addr, 16);
    } else if (family == AF_INET6_ && key->family == AF_INET_) {
        u32 *w = (u32 *)addr;
        if (w[0] || w[1] || w[2] != bpf_htonl(0xffff))
            return;
        __builtin_memcpy(key->raddr, addr + 12, 4);
    } else {
        return;
    }
    *rport = port;
}

/* A datagram out goes to the peer the application named: its sendmsg's address
 * (`named`), else the connected socket's (the headers may show it after NAT). */
static __always_inline void app_peer(struct sock_state *st, struct bpf_sock *sk,
                                     struct edge_key *key, u16 *rport, int named)
{
    if (named) {
        set_peer(key, rport, st->udp_dst_family, st->udp_dst, st->udp_dst_port);
        return;
    }
    if (!sk->dst_port)
        return; /* not connected: the headers' is all there is */
    if (sk->family == AF_INET_) {
        u32 a = sk->dst_ip4;
        set_peer(key, rport, AF_INET_, (u8 *)&a, bpf_ntohs(sk->dst_port));
        return;
    }
    u32 a6[4] = {sk->dst_ip6[0], sk->dst_ip6[1], sk->dst_ip6[2], sk->dst_ip6[3]};
    set_peer(key, rport, AF_INET6_, (u8 *)a6, bpf_ntohs(sk->dst_port));
}

/* Where this sendmsg sends, for the egress of its datagram. */
static __always_inline int sending(struct bpf_sock_addr *ctx, u8 family)
{
    struct bpf_sock *sk = ctx->sk;
    if (!sk || skipped(bpf_get_current_cgroup_id()))
        return 1; /* not counted: no storage for it either */
    struct sock_state *st = socks.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!st)
        return 1;
    if (family == AF_INET_) {
        u32 a = ctx->user_ip4;
        __builtin_memcpy(st->udp_dst, &a, 4);
    } else {
        u32 a6[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
        __builtin_memcpy(st->udp_dst, a6, 16);
    }
    st->udp_dst_family = family;
    st->udp_dst_port = bpf_ntohs((u16)ctx->user_port);
    st->flags |= S_UDP_DST;
    return 1;
}

int on_udp4_sendmsg(struct bpf_sock_addr *ctx)
{
    return sending(ctx, AF_INET_);
}

int on_udp6_sendmsg(struct bpf_sock_addr *ctx)
{
    return sending(ctx, AF_INET6_);
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
    int named = egress && (st->flags & S_UDP_DST);
    if (named)
        st->flags &= ~S_UDP_DST; /* this datagram's, whatever becomes of it */
    if (skipped(st->key.cgroup)) {
        count(C_UNSELECTED);
        return;
    }
    struct edge_key key = {};
    u16 lport, rport;
    u32 payload, at;
    if (!udp_header(skb, egress, &key, &lport, &rport, &payload, &at))
        return;
    if (egress)
        app_peer(st, sk, &key, &rport, named);
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
#ifdef WITH_DNS_REQUESTS
    if (n == 1) /* a GSO batch is no DNS */
        dns_message(skb, sk, st, &key, rport, at, payload,
                    egress == (key.role == ROLE_UDP_CLIENT));
#endif
}
#endif
