/* stream_bytes.h - bytes the request protocols' steps read beside the packet: a per-CPU
 * scratch buffer (read at variable offsets, and results kept in memory where the
 * verifier must not follow every value), and names as words to compare at once. Loaded
 * after tcp_streams.h (WITH_STREAMS).
 */

#ifdef WITH_STREAMS
/* Bytes of a message a database step reads (per CPU: read at variable offsets). */
struct db_scratch {
    u8 buf[128];
    u32 answers; /* Redis: replies begun in this step, answered at its end */
    u32 errors;  /* Redis: which of them are errors, a bit each */
    u32 value;   /* HTTP/2: the last HPACK integer or digits read, and its bytes: kept */
    u32 used;    /* here, not in registers, so the verifier's paths meet after each */
};
BPF_PERCPU_ARRAY(db_scratch, struct db_scratch, 1);

/* A name of up to 8 bytes as a little-endian word, folded to a constant by the
 * compiler: LIT8("GET") == 'G' | 'E' << 8 | 'T' << 16. */
#define LIT8(s) lit8(s "\0\0\0\0\0\0\0\0")
static __always_inline u64 lit8(const char *p)
{
    u64 v;
    __builtin_memcpy(&v, p, 8);
    return v;
}

/* The letters of b[at, at + 9), upper-cased, as a word: a keyword's first 8 letters
 * up to the first byte that is no letter; 0 when there is none, or more than 8. */
static __always_inline u64 upper_word(struct db_scratch *b, u32 at, u32 n)
{
    u64 w = 0;
    for (u32 k = 0; k < 9; k++) {
        u8 c = b->buf[(at + k) & 127] & 0xdf;
        if (k >= n || c < 'A' || c > 'Z')
            return w;
        if (k == 8)
            return 0;
        w |= (u64)c << (8 * k);
    }
    return 0;
}
#endif
