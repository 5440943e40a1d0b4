/* loadgen.c - workload generator for benchmarks/agent_overhead.py.
 *
 * Built at run time by benchmarks/build.py into a cache directory outside the
 * repository (never commit the binary). IPv4 only; the benchmark runs it inside
 * its own tpb-* network namespaces, so it only ever talks to loopback or to the
 * other end of its veth pair.
 *
 *   tpb-loadgen serve ADDR PORT WORKERS REQ RESP
 *       churn server: WORKERS threads accept, read REQ bytes, write RESP bytes and
 *       close first (so TIME_WAIT stays on the server and client ports recycle).
 *   tpb-loadgen churn ADDR PORT THREADS SECONDS REQ RESP
 *       churn clients: each thread loops connect -> send REQ -> read RESP to EOF
 *       -> close until SECONDS have passed.
 *   tpb-loadgen sink ADDR PORT
 *       bulk server: one thread per connection reads to EOF, then closes.
 *   tpb-loadgen bulk ADDR PORT CONNS SECONDS CHUNK
 *       bulk clients: CONNS connections each write CHUNK-byte buffers for
 *       SECONDS, then shut down writing and wait for the server's EOF, so every
 *       byte counted as sent has been received when the client exits.
 *
 *   tpb-loadgen udpserve ADDR PORT WORKERS REQ RESP
 *       UDP server: WORKERS threads, each on its own socket bound to ADDR:PORT
 *       (SO_REUSEPORT), answer each datagram of REQ bytes with one of RESP bytes.
 *   tpb-loadgen udpping ADDR PORT THREADS SECONDS REQ RESP
 *       UDP clients: each thread's unconnected socket loops sendto REQ -> recv RESP
 *       until SECONDS have passed (a reply not back within 200 ms counts as failed).
 *
 * Servers print "ready" once listening and one JSON line of totals on SIGTERM or
 * SIGINT; clients print one JSON line of totals when done.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_BUF (1 << 20)
#define MAX_ERRNO 256

static struct sockaddr_in addr;
static int listen_fd = -1;
static size_t req_bytes, resp_bytes, chunk_bytes;
static double deadline;
static atomic_ulong n_ok, n_failed, n_accepted, n_bytes;
static atomic_ulong errors[MAX_ERRNO];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what)
{
    fprintf(stderr, "tpb-loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void note_error(int err)
{
    atomic_fetch_add(&errors[err > 0 && err < MAX_ERRNO ? err : 0], 1);
}

static void print_errors(void)
{
    int first = 1;
    printf("\"errors\":{");
    for (int i = 0; i < MAX_ERRNO; i++) {
        unsigned long n = atomic_load(&errors[i]);
        if (!n)
            continue;
        const char *name = i ? strerrorname_np(i) : "short";
        printf("%s\"%s\":%lu", first ? "" : ",", name ? name : "?", n);
        first = 0;
    }
    printf("}");
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void parse_addr(const char *ip, const char *port)
{
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(port));
    if (inet_pton(AF_INET, ip, &addr.sin_addr) != 1) {
        fprintf(stderr, "tpb-loadgen: bad IPv4 address %s\n", ip);
        exit(2);
    }
}

static void start_listening(void)
{
    int one = 1;
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0)
        die("socket");
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        die("bind");
    if (listen(listen_fd, 4096) < 0)
        die("listen");
}

static void spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, fn, arg) != 0)
        die("pthread_create");
    pthread_attr_destroy(&attr);
}

/* Servers: threads inherit a mask blocking SIGTERM/SIGINT; main waits for one. */
static void block_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

static int wait_and_report(sigset_t *set)
{
    int sig;
    printf("ready\n");
    fflush(stdout);
    sigwait(set, &sig);
    printf("{\"accepted\":%lu,\"served\":%lu,\"failed\":%lu,\"bytes_received\":%lu,"
           "\"cpu_seconds\":%.3f,",
           atomic_load(&n_accepted), atomic_load(&n_ok), atomic_load(&n_failed),
           atomic_load(&n_bytes), cpu_seconds());
    print_errors();
    printf("}\n");
    fflush(stdout);
    _exit(0);
}

/* Next connection on listen_fd; errors are noted and skipped, successes counted. */
static int accept_counted(void)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            atomic_fetch_add(&n_accepted, 1);
            return fd;
        }
        note_error(errno);
    }
}

static void *serve_worker(void *arg)
{
    char *resp = calloc(1, resp_bytes + 1), *buf = malloc(req_bytes + 1);
    (void)arg;
    memset(resp, 'r', resp_bytes);
    for (;;) {
        int fd = accept_counted();
        size_t got = 0;
        while (got < req_bytes) {
            ssize_t n = read(fd, buf + got, req_bytes - got);
            if (n <= 0) {
                note_error(n < 0 ? errno : 0);
                break;
            }
            got += (size_t)n;
        }
        if (got == req_bytes && write_all(fd, resp, resp_bytes) == 0) {
            atomic_fetch_add(&n_ok, 1);
            atomic_fetch_add(&n_bytes, got);
        } else {
            atomic_fetch_add(&n_failed, 1);
        }
        close(fd);
    }
    return NULL;
}

static void *churn_worker(void *arg)
{
    char *req = calloc(1, req_bytes + 1), *buf = malloc(65536);
    unsigned long ok = 0, failed = 0, sent = 0;
    (void)arg;
    memset(req, 'q', req_bytes);
    while (now() < deadline) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            note_error(errno);
            failed++;
            continue;
        }
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
            write_all(fd, req, req_bytes) < 0) {
            note_error(errno);
            failed++;
            close(fd);
            continue;
        }
        sent += req_bytes;
        size_t got = 0;
        ssize_t n;
        while ((n = read(fd, buf, 65536)) > 0)
            got += (size_t)n;
        if (n == 0 && got == resp_bytes) {
            ok++;
        } else {
            note_error(n < 0 ? errno : 0);
            failed++;
        }
        close(fd);
    }
    atomic_fetch_add(&n_ok, ok);
    atomic_fetch_add(&n_failed, failed);
    atomic_fetch_add(&n_bytes, sent);
    return NULL;
}

/* A UDP socket on addr, one of WORKERS sharing it (bound before "ready" is printed). */
static int udp_bound(void)
{
    int one = 1, fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        die("udp socket");
    return fd;
}

static void *udp_serve_worker(void *arg)
{
    char *resp = calloc(1, resp_bytes + 1), *buf = malloc(MAX_BUF);
    int fd = (int)(long)arg;
    memset(resp, 'r', resp_bytes);
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof(peer);
        ssize_t n = recvfrom(fd, buf, MAX_BUF, 0, (struct sockaddr *)&peer, &len);
        if (n < 0) {
            note_error(errno);
            continue;
        }
        atomic_fetch_add(&n_accepted, 1);
        atomic_fetch_add(&n_bytes, (unsigned long)n);
        if (sendto(fd, resp, resp_bytes, 0, (struct sockaddr *)&peer, len) < 0) {
            note_error(errno);
            atomic_fetch_add(&n_failed, 1);
        } else {
            atomic_fetch_add(&n_ok, 1);
        }
    }
    return NULL;
}

static void *udp_ping_worker(void *arg)
{
    char *req = calloc(1, req_bytes + 1), *buf = malloc(65536);
    unsigned long ok = 0, failed = 0, sent = 0;
    struct timeval wait = {.tv_sec = 0, .tv_usec = 200000};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    (void)arg;
    memset(req, 'q', req_bytes);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait)) < 0)
        die("udp socket");
    while (now() < deadline) {
        if (sendto(fd, req, req_bytes, 0, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
            note_error(errno);
            failed++;
            continue;
        }
        sent += req_bytes;
        ssize_t n = recv(fd, buf, 65536, 0);
        if (n == (ssize_t)resp_bytes) {
            ok++;
        } else {
            note_error(n < 0 ? errno : 0);
            failed++; /* sent, no answer within 200 ms: dropped somewhere */
        }
    }
    close(fd);
    atomic_fetch_add(&n_ok, ok);
    atomic_fetch_add(&n_failed, failed);
    atomic_fetch_add(&n_bytes, sent);
    return NULL;
}

static void *sink_conn(void *arg)
{
    int fd = (int)(long)arg;
    char *buf = malloc(MAX_BUF);
    ssize_t n;
    while ((n = read(fd, buf, MAX_BUF)) > 0)
        atomic_fetch_add(&n_bytes, (unsigned long)n);
    if (n < 0)
        note_error(errno);
    close(fd);
    free(buf);
    return NULL;
}

static void *sink_acceptor(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept_counted();
        spawn(sink_conn, (void *)(long)fd);
    }
    return NULL;
}

static void *bulk_worker(void *arg)
{
    char *buf = calloc(1, chunk_bytes), drain[4096];
    unsigned long sent = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    (void)arg;
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        note_error(errno);
        atomic_fetch_add(&n_failed, 1);
        return NULL;
    }
    while (now() < deadline) {
        ssize_t n = write(fd, buf, chunk_bytes);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            note_error(errno);
            atomic_fetch_add(&n_failed, 1);
            break;
        }
        sent += (unsigned long)n;
    }
    shutdown(fd, SHUT_WR);
    while (read(fd, drain, sizeof(drain)) > 0)
        ;
    close(fd);
    atomic_fetch_add(&n_ok, 1);
    atomic_fetch_add(&n_bytes, sent);
    return NULL;
}

static int run_clients(void *(*fn)(void *), int threads, double seconds)
{
    pthread_t *ts = calloc((size_t)threads, sizeof(*ts));
    double start = now(), cpu0 = cpu_seconds();
    deadline = start + seconds;
    for (int i = 0; i < threads; i++)
        if (pthread_create(&ts[i], NULL, fn, NULL) != 0)
            die("pthread_create");
    for (int i = 0; i < threads; i++)
        pthread_join(ts[i], NULL);
    printf("{\"completed\":%lu,\"failed\":%lu,\"bytes_sent\":%lu,\"seconds\":%.6f,"
           "\"cpu_seconds\":%.3f,",
           atomic_load(&n_ok), atomic_load(&n_failed), atomic_load(&n_bytes), now() - start,
           cpu_seconds() - cpu0);
    print_errors();
    printf("}\n");
    return 0;
}

static size_t size_arg(const char *s)
{
    long v = atol(s);
    if (v <= 0 || v > MAX_BUF) {
        fprintf(stderr, "tpb-loadgen: size %s out of range 1..%d\n", s, MAX_BUF);
        exit(2);
    }
    return (size_t)v;
}

int main(int argc, char **argv)
{
    sigset_t set;
    signal(SIGPIPE, SIG_IGN);
    int udp = argc > 1 && !strncmp(argv[1], "udp", 3); /* udpserve, udpping */
    if (argc == 7 && !strcmp(argv[1] + (udp ? 3 : 0), "serve")) {
        parse_addr(argv[2], argv[3]);
        req_bytes = size_arg(argv[5]);
        resp_bytes = size_arg(argv[6]);
        block_signals(&set);
        if (!udp)
            start_listening();
        for (int i = 0; i < atoi(argv[4]); i++) {
            if (udp)
                spawn(udp_serve_worker, (void *)(long)udp_bound());
            else
                spawn(serve_worker, NULL);
        }
        return wait_and_report(&set);
    }
    if (argc == 8 && (!strcmp(argv[1], "churn") || !strcmp(argv[1], "udpping"))) {
        parse_addr(argv[2], argv[3]);
        req_bytes = size_arg(argv[6]);
        resp_bytes = size_arg(argv[7]);
        return run_clients(udp ? udp_ping_worker : churn_worker, atoi(argv[4]),
                           atof(argv[5]));
    }
    if (argc == 4 && !strcmp(argv[1], "sink")) {
        parse_addr(argv[2], argv[3]);
        block_signals(&set);
        start_listening();
        spawn(sink_acceptor, NULL);
        return wait_and_report(&set);
    }
    if (argc == 7 && !strcmp(argv[1], "bulk")) {
        parse_addr(argv[2], argv[3]);
        chunk_bytes = size_arg(argv[6]);
        return run_clients(bulk_worker, atoi(argv[4]), atof(argv[5]));
    }
    fprintf(stderr, "usage: see the comment at the top of benchmarks/loadgen.c\n");
    return 2;
}
