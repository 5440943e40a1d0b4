/* conn_bytes_kprobe.c - bytes per connection where sock:sock_send_length and
 * sock:sock_recv_length are missing (kernels before 6.3). Appended to
 * conn_tracker.c (it uses on_io, `conns` and the edge maps there), compiled
 * with -DWITH_BYTES_KPROBE instead of -DWITH_BYTES.
 *
 * Hooks (attached by the agent by name, only when the kernel has kprobes):
 *   kprobe/tcp_sendmsg       the socket, kept per thread until the return
 *   kretprobe/tcp_sendmsg    bytes sent: what tcp_sendmsg returned
 *   kprobe/tcp_cleanup_rbuf  bytes received: its `copied` argument, what one
 *                            recvmsg() took off the socket (MSG_PEEK reads
 *                            count too: the function does not say)
 * Reads registers only (arguments and return values), no kernel memory. Kprobes
 * themselves are refused under lockdown=confidentiality and absent from kernels
 * built without CONFIG_KPROBES; there the agent reports bytes as Degraded.
 * Not seen: sendfile/splice (as with the tracepoints), TCP only.
 *
 * Maps: sendmsg_sk HASH thread id -> socket address (entry to return), bounded.
 * Minimum kernel: 4.x with kprobes. Fallback of: WITH_BYTES's tracepoints.
 */

#include <uapi/linux/ptrace.h>

BPF_HASH(sendmsg_sk, u64, u64, 16384);

int bytes_sendmsg_entry(struct pt_regs *ctx)
{
    u64 tid = bpf_get_current_pid_tgid();
    u64 sk = PT_REGS_PARM1(ctx);
    sendmsg_sk.update(&tid, &sk);
    return 0;
}

int bytes_sendmsg_return(struct pt_regs *ctx)
{
    u64 tid = bpf_get_current_pid_tgid();
    u64 *sk = sendmsg_sk.lookup(&tid);
    if (!sk)
        return 0;
    u64 socket = *sk;
    sendmsg_sk.delete(&tid);
    return on_io(socket, 0, IPPROTO_TCP_, (int)PT_REGS_RC(ctx), 0, 1);
}

int bytes_cleanup_rbuf(struct pt_regs *ctx)
{
    return on_io(PT_REGS_PARM1(ctx), 0, IPPROTO_TCP_, (int)PT_REGS_PARM2(ctx), 0, 0);
}
