/* dns_streams.h - DNS over TCP on the sock_ops core's TCP segments (WITH_DNS_REQUESTS):
 * dns_step, the tail-called step that hands each message (a 2-byte length, then the
 * message) to dns_requests.h's dns_message(), one per step, where the same rules as for
 * UDP match a response to its query by ID. A connection is DNS when its first
 * request-direction bytes are a length of 17 to 512 and the header of a standard query
 * with one question, whatever the port.
 */

#ifdef WITH_DNS_REQUESTS
static __always_inline int dns_query_start(u64 w, u32 len)
{
    u32 size = (w & 0xff) << 8 | ((w >> 8) & 0xff);
    u8 flags = w >> 32;
    u32 questions = ((w >> 48) & 0xff) << 8 | (w >> 56);
    return len >= 14 && size >= 17 && size <= 512 && !(flags & 0xf8) && questions == 1;
}

/* The message at the step's place: its length (held when the segment cuts it), then
 * the message itself when its header is in this segment. */
static __always_inline void dns_tcp_message(struct __sk_buff *skb, struct step *s)
{
    struct stream_dir *d = s->d;
    u32 size;
    if (d->parts) { /* the length's first byte came at the end of the last segment */
        u8 low;
        if (bpf_skb_load_bytes(skb, s->at, &low, 1)) {
            stream_lost(s->h, d);
            return;
        }
        size = (u32)d->length << 8 | low;
        d->parts = 0;
        d->length = 0;
        d->next += 1;
    } else if (s->avail < 2) {
        u8 high;
        if (bpf_skb_load_bytes(skb, s->at, &high, 1)) {
            stream_lost(s->h, d);
            return;
        }
        d->length = high;
        d->parts = 1;
        d->next += 1;
        return;
    } else {
        u16 be;
        if (bpf_skb_load_bytes(skb, s->at, &be, 2)) {
            stream_lost(s->h, d);
            return;
        }
        size = bpf_ntohs(be);
        d->next += 2;
    }
    u32 ahead = d->next - s->seq;
    if (ahead < s->len && s->len - ahead >= 12)
        dns_message(skb, s->sk, s->st, &s->st->key, 0, s->off + ahead, size, s->requests);
    d->next += size;
}

int dns_step(struct __sk_buff *skb)
{
    struct step s;
    if (!step_begin(skb, &s))
        return 1;
    u8 mode = s.d->mode;
    u32 before = s.d->next;
    dns_tcp_message(skb, &s);
    step_next(skb, &s, mode, before, STEP_DNS);
    return 1;
}
#endif
