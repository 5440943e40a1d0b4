/* pg_fields.h - what of a PostgreSQL message's bytes the counts read (WITH_POSTGRES): a
 * startup or SSL request's first bytes, a statement's operation (its first keyword, one
 * of PG_OPERATIONS) and an ErrorResponse's SQLSTATE. Loaded before pg_messages.h.
 */

#ifdef WITH_POSTGRES
#define PG_PROTOCOL_3 196608
#define PG_SSL_REQUEST 80877103
#define PG_GSS_REQUEST 80877104

/* OP_* are their positions, from 1; traceprobe_api.records.POSTGRES_OPERATIONS. */
#define PG_OPERATIONS(X) X(SELECT) X(INSERT) X(UPDATE) X(DELETE) X(MERGE) X(WITH) \
    X(BEGIN) X(START) X(COMMIT) X(END) X(ROLLBACK) X(RELEASE) X(CREATE) X(ALTER) X(DROP) \
    X(TRUNCATE) X(COPY) X(SET) X(SHOW) X(RESET) X(CALL) X(DO) X(EXPLAIN) X(ANALYZE) \
    X(VACUUM) X(LISTEN) X(NOTIFY) X(UNLISTEN) X(PREPARE) X(EXECUTE) X(DECLARE) X(FETCH) \
    X(CLOSE) X(DISCARD) X(LOCK) X(GRANT) X(REVOKE) X(VALUES) X(TABLE)

static __always_inline int pg_startup(u64 w, u32 len)
{
    u32 size = bpf_ntohl((u32)w), code = bpf_ntohl((u32)(w >> 32));
    return len >= 8 && size >= 8 && size <= 10000 &&
           (code == PG_PROTOCOL_3 || code == PG_SSL_REQUEST || code == PG_GSS_REQUEST);
}

/* OP_* of the statement at b[at...] (`n` bytes read), past its leading blanks. */
static __always_inline u8 pg_operation(struct db_scratch *b, u32 at, u32 n)
{
    for (u32 k = 0; k < 8; k++) {
        u8 c = b->buf[at & 127];
        if (c != ' ' && c != '\n' && c != '\t' && c != '\r' && c != '(')
            break;
        at++;
    }
    u64 w = upper_word(b, at, n > at ? n - at : 0);
    u8 op = 0;
#define X(name) op++; if (w == LIT8(#name)) return op;
    PG_OPERATIONS(X)
#undef X
    return 0;
}

/* An ErrorResponse's SQLSTATE (its field 'C') from its first `n` bytes, base 36; 1
 * when not among them. */
static __always_inline u32 sqlstate(struct db_scratch *b, u32 n)
{
    u32 start = 1; /* b[i] begins a field: its type, then a string to a NUL */
    for (u32 i = 0; i < 56; i++) {
        if (i >= n)
            break;
        u8 c = b->buf[i];
        if (start && c == 'C') {
            u32 code = 0;
            for (u32 k = 1; k <= 5; k++) {
                u8 x = b->buf[(i + k) & 127];
                if (x >= '0' && x <= '9')
                    code = code * 36 + (x - '0');
                else if (x >= 'A' && x <= 'Z')
                    code = code * 36 + (x - 'A' + 10);
                else
                    return 1;
            }
            return code ? code : 1;
        }
        if (start && !c)
            break; /* the fields' end */
        start = !c;
    }
    return 1;
}
#endif
