/* http_heads.h - the bytes of one HTTP/1.x head, as http_messages.h frames them: a
 * window of it scanned a word at a time for its line ends, the head's end, its
 * Content-Length and chunked coding; a request line's method, a status line's code.
 * Pure byte work on a per-CPU copy of the window; loaded before http_messages.h
 * (WITH_HTTP).
 */

#ifdef WITH_HTTP
#define HTTP_HEAD_MAX 256 /* one window of a head, scanned at once; a power of two */

#define H_LENGTH 1  /* Content-Length seen */
#define H_CHUNKED 2 /* Transfer-Encoding: chunked seen */

/* The window being scanned, and what the scan found (per CPU: too big for the stack).
 * 32 bytes of slack past the window keep the masked reads of a line's start in bounds. */
struct http_scratch {
    u8 buf[HTTP_HEAD_MAX + 32];
    u32 n;       /* bytes in the window */
    u32 line;    /* start of the current line */
    u32 end;     /* just past the head's empty line, 0 while not found */
    u32 length_at; /* 1 + where Content-Length's value starts, 0: not seen */
    u64 length;
    u32 flags;   /* H_* */
};
BPF_PERCPU_ARRAY(http_scratch, struct http_scratch, 1);

/* 8 bytes of the window at `at` (any offset: masked into the buffer and its slack). */
static __always_inline u64 word_at(struct http_scratch *s, u32 at)
{
    u64 v;
    __builtin_memcpy(&v, s->buf + (at & (HTTP_HEAD_MAX - 1)), 8);
    return v;
}

#define LOWER 0x2020202020202020ULL
/* Little-endian words of "content-", "length:", "transfer", "-encodin", "g:", "chunked". */
#define W_CONTENT 0x2d746e65746e6f63ULL
#define W_LENGTH 0x003a6874676e656cULL
#define W_TRANSFER 0x726566736e617274ULL
#define W_ENCODIN 0x6e69646f636e652dULL
#define W_G 0x3a67ULL
#define W_CHUNKED 0x64656b6e756863ULL
#define MASK7 0x00ffffffffffffffULL

/* The header line starting at `at`: where Content-Length is (its value is read once the
 * window is scanned), or chunked transfer coding. Header names are case-insensitive. */
static __always_inline void header_line(struct http_scratch *s, u32 at)
{
    u64 w0 = word_at(s, at) | LOWER;
    if (w0 == W_CONTENT) {
        if (((word_at(s, at + 8) | LOWER) & MASK7) == W_LENGTH)
            s->length_at = at + 15 + 1;
    } else if (w0 == W_TRANSFER) {
        if ((word_at(s, at + 8) | LOWER) == W_ENCODIN &&
            ((word_at(s, at + 16) | LOWER) & 0xffff) == W_G) {
            u32 v = at + 18;
            if (s->buf[v & (HTTP_HEAD_MAX - 1)] == ' ')
                v++;
            if (((word_at(s, v) | LOWER) & MASK7) == W_CHUNKED)
                s->flags |= H_CHUNKED;
        }
    }
}

/* Content-Length's value, from where header_line() found it. */
static __always_inline void length_value(struct http_scratch *s)
{
    u32 at = s->length_at;
    if (!at)
        return;
    at--;
    u64 n = 0;
    u32 digits = 0;
    for (u32 k = 0; k < 21; k++) {
        u8 c = s->buf[(at + k) & (HTTP_HEAD_MAX - 1)];
        if (c == ' ' && !digits)
            continue;
        if (c < '0' || c > '9')
            break;
        n = n * 10 + (c - '0');
        digits++;
    }
    if (digits) {
        s->length = n;
        s->flags |= H_LENGTH;
    }
}

/* Scan s->buf[0, n) for line ends from s->line on; 1 when the head's empty line is
 * found (s->end just past it). Bytes are read a word at a time and only words holding
 * a newline are looked into. The line's start and the window's length are read from
 * the map, not kept in registers, so the verifier finds its states at each word alike
 * whatever path led there (else it follows every path apart and gives up). */
static __always_inline int scan_head(struct http_scratch *s, u32 n)
{
    volatile u32 *linep = &s->line;
    volatile u32 *np = &s->n;
    *np = n;
    for (u32 w = 0; w < HTTP_HEAD_MAX / 8; w++) {
        u32 at = w * 8;
        if (at >= *np)
            break;
        /* 0x80 in each byte of v that is a newline, exactly (no borrow between bytes). */
        u64 x = word_at(s, at) ^ 0x0a0a0a0a0a0a0a0aULL;
        u64 lines = ~(((x & 0x7f7f7f7f7f7f7f7fULL) + 0x7f7f7f7f7f7f7f7fULL) | x |
                      0x7f7f7f7f7f7f7f7fULL);
        u32 left = *np - at;
        if (left < 8)
            lines &= (1ULL << (8 * left)) - 1; /* bytes past the window are not its */
        /* Newline by newline: the lowest one's byte is 7 minus the top byte of its bit
         * (moved to bit 8k) times 0x0706..00, a multiply instead of a search. */
        for (u32 k = 0; k < 8 && lines; k++) {
            u64 low = lines & -lines;
            lines &= lines - 1;
            u32 i = at + 7 - (u32)(((low >> 7) * 0x0706050403020100ULL) >> 56);
            u32 line = *linep;
            if (i == line || (i == line + 1 && s->buf[line & (HTTP_HEAD_MAX - 1)] == '\r')) {
                s->end = i + 1;
                length_value(s);
                return 1;
            }
            header_line(s, line);
            *linep = i + 1;
        }
    }
    length_value(s);
    return 0;
}

/* The method a request line starts with (its first 8 bytes, little-endian); 0: none. */
static __always_inline u8 method_of(u64 w)
{
    u32 w4 = w;
    if (w4 == 0x20544547) /* "GET " */
        return METHOD_GET;
    if ((w & 0xffffffffffULL) == 0x2054534f50ULL) /* "POST " */
        return METHOD_POST;
    if (w4 == 0x20545550) /* "PUT " */
        return METHOD_PUT;
    if ((w & 0xffffffffffULL) == 0x2044414548ULL) /* "HEAD " */
        return METHOD_HEAD;
    if ((w & 0xffffffffffffffULL) == 0x204554454c4544ULL) /* "DELETE " */
        return METHOD_DELETE;
    if ((w & 0xffffffffffffULL) == 0x204843544150ULL) /* "PATCH " */
        return METHOD_PATCH;
    if (w == 0x20534e4f4954504fULL) /* "OPTIONS " */
        return METHOD_OPTIONS;
    if (w == 0x205443454e4e4f43ULL) /* "CONNECT " */
        return METHOD_CONNECT;
    if ((w & 0xffffffffffffULL) == 0x204543415254ULL) /* "TRACE " */
        return METHOD_TRACE;
    return 0;
}

/* A status line's code ("HTTP/1.x NNN"), 0 when `s` does not start with one. */
static __always_inline u16 status_of(struct http_scratch *s)
{
    u64 w = word_at(s, 0);
    if ((w & 0xffffffffffffffULL) != 0x2e312f50545448ULL) /* "HTTP/1." */
        return 0;
    u8 a = s->buf[9], b = s->buf[10], c = s->buf[11];
    if (s->buf[8] != ' ' || a < '1' || a > '5' || b < '0' || b > '9' || c < '0' || c > '9')
        return 0;
    return (a - '0') * 100 + (b - '0') * 10 + (c - '0');
}
#endif
