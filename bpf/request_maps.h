/* request_maps.h - where the sock_ops core counts answered requests, whatever their
 * protocol (http_messages.h, dns_requests.h): per edge, protocol, method and status, a
 * count, the latencies' sum and a histogram. Loaded after sock_storage.h.
 *
 * Maps: requests0/1 HASH struct req_key -> struct req_val (MAX_REQS each), switched by
 * edge_maps.h's `active` and drained with the edges. Not per CPU: a value is 440 bytes,
 * and requests are few beside segments, so the adds are atomic instead.
 */

#if defined(WITH_HTTP) || defined(WITH_DNS_REQUESTS) || defined(WITH_POSTGRES) || \
    defined(WITH_REDIS) || defined(WITH_HTTP2)
#define REQ_BUCKETS 102 /* see bucket_of() */
#ifndef MAX_REQS
#define MAX_REQS 4096
#endif

#define PROTO_HTTP 1
#define PROTO_DNS 2
#define PROTO_TLS 3   /* connections seen to be TLS, not parsed: a count alone */
#define PROTO_HTTP2 4 /* connections seen to be cleartext HTTP/2, not parsed */
#define PROTO_POSTGRES 5
#define PROTO_REDIS 6
#define PROTO_GRPC 7

struct req_key {
    struct edge_key edge;
    u32 status;  /* HTTP: the status code; DNS: the response code; Postgres: the
                  * SQLSTATE, base 36 (0: success); Redis: 1 for an error reply;
                  * gRPC: the grpc-status */
    u8 method;   /* HTTP: METHOD_*; DNS: QTYPE_*; Postgres: OP_*; Redis: CMD_*; 0: other */
    u8 protocol; /* PROTO_* */
    u16 pad;
};

struct req_val {
    u64 count;
    u64 duration_sum_ns;
    u32 buckets[REQ_BUCKETS];
    char comm[16];
};

/* Not preallocated: 3.6 MB for two full maps, where most nodes hold few edges with
 * requests. */
BPF_F_TABLE("hash", struct req_key, struct req_val, requests0, MAX_REQS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct req_key, struct req_val, requests1, MAX_REQS, BPF_F_NO_PREALLOC);
/* A new entry's first value (too big for the stack): zero but for the comm. */
BPF_PERCPU_ARRAY(req_init, struct req_val, 1);

/* Bucket 0 is under 1.024 us; then four per octave (2^o, 1.25, 1.5, 1.75 x 2^o) from
 * 2^10 to 2^35 ns (34 s); the last is everything above. user space has the bounds. */
static __always_inline u32 bucket_of(u64 ns)
{
    if (ns < (1ULL << 10))
        return 0;
    u32 o = 0;
    u64 v = ns;
    if (v >> 32) { v >>= 32; o += 32; }
    if (v >> 16) { v >>= 16; o += 16; }
    if (v >> 8) { v >>= 8; o += 8; }
    if (v >> 4) { v >>= 4; o += 4; }
    if (v >> 2) { v >>= 2; o += 2; }
    if (v >> 1) { o += 1; }
    if (o >= 35)
        return REQ_BUCKETS - 1;
    return 1 + (o - 10) * 4 + ((ns >> (o - 2)) & 3);
}

/* One answered request on `edge` (its owner's `comm`), `ns` from request to response. */
static __always_inline void count_request(struct edge_key *edge, char *comm, u8 protocol,
                                          u8 method, u32 status, u64 ns)
{
    struct req_key key = {.status = status, .method = method, .protocol = protocol};
    __builtin_memcpy(&key.edge, edge, sizeof(key.edge));
    int zero = 0;
    u32 *sel = active.lookup(&zero);
    int second = sel && *sel;
    struct req_val *val = second ? requests1.lookup(&key) : requests0.lookup(&key);
    if (!val) {
        struct req_val *init = req_init.lookup(&zero);
        if (!init)
            return;
        __builtin_memcpy(init->comm, comm, sizeof(init->comm));
        val = second ? requests1.lookup_or_try_init(&key, init)
                     : requests0.lookup_or_try_init(&key, init);
        if (!val) {
            count(C_REQ_MAP_FULL);
            return;
        }
    }
    __sync_fetch_and_add(&val->count, 1);
    __sync_fetch_and_add(&val->duration_sum_ns, ns);
    u32 b = bucket_of(ns);
    if (b < REQ_BUCKETS)
        __sync_fetch_and_add(&val->buckets[b], 1);
}
#endif
