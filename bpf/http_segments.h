/* http_segments.h - http_step, the tail-called step of the HTTP/1.x parse: one window
 * of a head or one chunk-size line of http_messages.h's framing per step (WITH_HTTP).
 */

#ifdef WITH_HTTP
int http_step(struct __sk_buff *skb)
{
    struct step s;
    if (!step_begin(skb, &s))
        return 1;
    struct stream_dir *d = s.d;
    u8 mode = d->mode;
    u32 before = d->next;
    if (mode == M_CHUNK)
        chunk(skb, d, s.at, s.avail);
    else
        head(skb, s.st, s.h, d, s.requests, s.at, d->next, s.avail, s.c->now);
    step_next(skb, &s, mode, before, STEP_HTTP);
    return 1;
}
#endif
