/* The pod sandbox ("pause") process of the real test node: holds the pod's
 * namespaces, reaps every child that is reparented to it (it is PID 1 of the
 * pod when the pod shares its PID namespace), and exits 0 on SIGTERM/SIGINT.
 *
 * Built statically by scripts/node/build-images.sh (gcc -static, glibc) and
 * packed alone into the pause image: no shell, no libc in the image.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig) { (void)sig; stop = 1; }

static void on_child(int sig) {
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static void handle(int sig, void (*fn)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL) < 0) {
        perror("sigaction");
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("traceprobe-pause 1");
        return 0;
    }
    if (getpid() != 1)
        fprintf(stderr, "pause: warning: not PID 1\n");
    handle(SIGTERM, on_term, 0);
    handle(SIGINT, on_term, 0);
    handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART);
    while (!stop)
        pause();
    fprintf(stderr, "pause: shutting down\n");
    return 0;
}
