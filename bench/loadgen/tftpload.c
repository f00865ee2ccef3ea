/* tftpload: N concurrent TFTP read transfers, every byte checked against the local copy of the file.
 *
 * One epoll loop, one non-blocking UDP socket per transfer (its own TID). RFC 1350 + 2347/2348/2349 +
 * 7440 (windowsize). The block counter is 64-bit: the 16-bit wire number is compared with the low bits,
 * so a server that wraps 65535 -> 0 (the common "rollover") passes and one that stops or wraps elsewhere
 * fails the byte check. Prints one JSON object on stdout; exit 0 only when every transfer was intact.
 *
 * Kept cheaper than any server: no allocation per packet, memcmp against an mmap of the file.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { IDLE, WAIT_FIRST, RUNNING, DONE, FAILED };
enum { MAX_ERRS = 8, PKT = 65536 + 4 };

struct xfer {
    int fd, state, retries;
    unsigned dups;
    struct sockaddr_in peer;       /* the server's TID once known */
    uint64_t next;                 /* next expected block, 1-based, 64-bit */
    uint64_t last_acked;
    unsigned blksize, windowsize, in_window;
    double started, last_send;
};

static struct {
    const char *server, *file, *expect;
    int spread; /* each client slot binds its own 127.77.x.y: a storm of distinct machines, not one IP */
    int port, clients, total, blksize, windowsize, tsize, timeout_ms, retries;
    double deadline;
} opt = {"127.0.0.1", NULL, NULL, 0, 69, 1, 1, 0, 0, 0, 1000, 6, 60.0};

static const uint8_t *data;
static uint64_t fsize;
static struct sockaddr_in server;
static uint64_t blocks_ok, bytes_ok, retransmits, out_of_order;
static unsigned max_window = 1; /* largest windowsize a server granted */
static int ok_count, fail_count, started_count, epfd;
static char errs[MAX_ERRS][160];
static int nerrs;
static double *lat;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void note_error(const char *msg) {
    for (int i = 0; i < nerrs; i++)
        if (strcmp(errs[i], msg) == 0) return;
    if (nerrs < MAX_ERRS) snprintf(errs[nerrs++], sizeof errs[0], "%s", msg);
}

static void finish(struct xfer *x, int ok, const char *why) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, x->fd, NULL);
    close(x->fd);
    x->fd = -1;
    if (ok) {
        x->state = DONE;
        lat[ok_count++] = now() - x->started;
    } else {
        x->state = FAILED;
        fail_count++;
        note_error(why);
    }
}

static void send_to(struct xfer *x, const void *buf, size_t len, const struct sockaddr_in *to) {
    if (sendto(x->fd, buf, len, 0, (const struct sockaddr *)to, sizeof *to) < 0 && errno != EAGAIN)
        note_error("sendto failed");
    x->last_send = now();
}

static void send_ack(struct xfer *x, uint64_t block) {
    uint8_t ack[4] = {0, 4, (uint8_t)(block >> 8), (uint8_t)block};
    send_to(x, ack, sizeof ack, &x->peer);
    x->last_acked = block;
}

static size_t build_rrq(uint8_t *p) {
    size_t n = 0;
    p[n++] = 0;
    p[n++] = 1;
    n += (size_t)sprintf((char *)p + n, "%s", opt.file) + 1;
    n += (size_t)sprintf((char *)p + n, "octet") + 1;
    if (opt.blksize) {
        n += (size_t)sprintf((char *)p + n, "blksize") + 1;
        n += (size_t)sprintf((char *)p + n, "%d", opt.blksize) + 1;
    }
    if (opt.tsize) {
        n += (size_t)sprintf((char *)p + n, "tsize") + 1;
        n += (size_t)sprintf((char *)p + n, "0") + 1;
    }
    if (opt.windowsize > 1) {
        n += (size_t)sprintf((char *)p + n, "windowsize") + 1;
        n += (size_t)sprintf((char *)p + n, "%d", opt.windowsize) + 1;
    }
    return n;
}

static uint8_t rrq[600];
static size_t rrq_len;

static void start(struct xfer *x, int slot) {
    memset(x, 0, sizeof *x);
    x->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (x->fd < 0) { perror("socket"); exit(2); }
    if (opt.spread) {
        struct sockaddr_in me = {.sin_family = AF_INET};
        me.sin_addr.s_addr = htonl(0x7f4d0000u + 256u * (unsigned)(slot / 200) + (unsigned)(slot % 200) + 10u);
        if (bind(x->fd, (struct sockaddr *)&me, sizeof me) < 0) { perror("bind"); exit(2); }
    }
    int rcv = 4 << 20;
    if (setsockopt(x->fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv) < 0)
        setsockopt(x->fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = x};
    epoll_ctl(epfd, EPOLL_CTL_ADD, x->fd, &ev);
    x->state = WAIT_FIRST;
    x->started = now();
    x->blksize = 512;
    x->windowsize = 1;
    started_count++;
    send_to(x, rrq, rrq_len, &server);
}

/* OACK: every option must be one we asked for, within what we asked; tsize must be the file's size. */
static int parse_oack(struct xfer *x, const uint8_t *p, size_t n) {
    size_t i = 2;
    while (i < n) {
        const char *name = (const char *)p + i;
        size_t nl = strnlen(name, n - i);
        if (i + nl >= n) return -1;
        i += nl + 1;
        const char *val = (const char *)p + i;
        size_t vl = strnlen(val, n - i);
        if (i + vl >= n) return -1;
        i += vl + 1;
        unsigned long long v = strtoull(val, NULL, 10);
        if (strcasecmp(name, "blksize") == 0) {
            if (!opt.blksize || v < 8 || v > (unsigned long long)opt.blksize) return -1;
            x->blksize = (unsigned)v;
        } else if (strcasecmp(name, "windowsize") == 0) {
            if (opt.windowsize <= 1 || v < 1 || v > (unsigned long long)opt.windowsize) return -1;
            x->windowsize = (unsigned)v;
            if (x->windowsize > max_window) max_window = x->windowsize;
        } else if (strcasecmp(name, "tsize") == 0) {
            if (!opt.tsize || v != fsize) return -2;
        } else {
            return -1;
        }
    }
    return 0;
}

static void on_packet(struct xfer *x, const uint8_t *p, size_t n, const struct sockaddr_in *from) {
    if (x->state == WAIT_FIRST) {
        if (from->sin_addr.s_addr != server.sin_addr.s_addr) return;
        x->peer = *from;
    } else if (from->sin_port != x->peer.sin_port || from->sin_addr.s_addr != x->peer.sin_addr.s_addr) {
        uint8_t err[] = {0, 5, 0, 5, 'w', 'r', 'o', 'n', 'g', ' ', 'T', 'I', 'D', 0};
        sendto(x->fd, err, sizeof err, 0, (const struct sockaddr *)from, sizeof *from);
        return;
    }
    if (n < 4) { finish(x, 0, "short packet"); return; }
    unsigned op = (unsigned)(p[0] << 8 | p[1]);
    if (op == 5) {
        char msg[160];
        snprintf(msg, sizeof msg, "server ERROR %u: %.100s", (unsigned)(p[2] << 8 | p[3]), (const char *)p + 4);
        finish(x, 0, msg);
        return;
    }
    if (op == 6) {
        if (x->state != WAIT_FIRST) return; /* duplicate OACK: our ACK 0 will be retransmitted on timeout */
        int r = parse_oack(x, p, n);
        if (r) { finish(x, 0, r == -2 ? "OACK tsize differs from the file size" : "bad OACK"); return; }
        x->state = RUNNING;
        x->next = 1;
        x->retries = 0;
        send_ack(x, 0);
        return;
    }
    if (op != 3) { finish(x, 0, "unexpected opcode"); return; }
    if (x->state == WAIT_FIRST) { /* options ignored: plain RFC 1350 */
        x->state = RUNNING;
        x->next = 1;
    }
    unsigned block = (unsigned)(p[2] << 8 | p[3]);
    size_t len = n - 4;
    if (block != (unsigned)(x->next & 0xffff)) {
        /* Gap: ACK the last in-order block once (RFC 7440); a repeated old block means our ACK was
         * lost, re-ACK it but not for every duplicate of a window. */
        out_of_order++;
        if (x->last_acked != x->next - 1 || ++x->dups >= x->windowsize) {
            x->dups = 0;
            x->in_window = 0;
            send_ack(x, x->next - 1);
        }
        return;
    }
    uint64_t off = (x->next - 1) * (uint64_t)x->blksize;
    if (len > x->blksize || off + len > fsize || memcmp(data + off, p + 4, len) != 0) {
        finish(x, 0, "DATA differs from the file");
        return;
    }
    blocks_ok++;
    bytes_ok += len;
    x->retries = 0;
    x->dups = 0;
    if (len < x->blksize) {
        send_ack(x, x->next);
        if (off + len != fsize) finish(x, 0, "transfer ended early");
        else finish(x, 1, NULL);
        return;
    }
    x->next++;
    if (++x->in_window >= x->windowsize) {
        x->in_window = 0;
        send_ack(x, x->next - 1);
    }
}

static void check_timeouts(struct xfer *xs, int n, double t) {
    for (int i = 0; i < n; i++) {
        struct xfer *x = &xs[i];
        if (x->state != WAIT_FIRST && x->state != RUNNING) continue;
        if (t - x->last_send < opt.timeout_ms / 1000.0) continue;
        if (++x->retries > opt.retries) {
            finish(x, 0, x->state == WAIT_FIRST ? "no answer to RRQ" : "timeout mid-transfer");
            continue;
        }
        retransmits++;
        if (x->state == WAIT_FIRST) send_to(x, rrq, rrq_len, &server);
        else { x->in_window = 0; send_ack(x, x->next - 1); }
    }
}

static int cmp(const void *a, const void *b) {
    double d = *(const double *)a - *(const double *)b;
    return (d > 0) - (d < 0);
}

static void usage(void) {
    fprintf(stderr, "usage: tftpload --file NAME --expect PATH [--server IP] [--port N] [--clients N]\n"
                    "  [--total N] [--blksize N] [--windowsize N] [--tsize] [--timeout-ms N] [--retries N]\n"
                    "  [--deadline S] [--spread]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tsize")) { opt.tsize = 1; continue; }
        if (!strcmp(a, "--spread")) { opt.spread = 1; continue; }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--server")) opt.server = v;
        else if (!strcmp(a, "--port")) opt.port = atoi(v);
        else if (!strcmp(a, "--file")) opt.file = v;
        else if (!strcmp(a, "--expect")) opt.expect = v;
        else if (!strcmp(a, "--clients")) opt.clients = atoi(v);
        else if (!strcmp(a, "--total")) opt.total = atoi(v);
        else if (!strcmp(a, "--blksize")) opt.blksize = atoi(v);
        else if (!strcmp(a, "--windowsize")) opt.windowsize = atoi(v);
        else if (!strcmp(a, "--timeout-ms")) opt.timeout_ms = atoi(v);
        else if (!strcmp(a, "--retries")) opt.retries = atoi(v);
        else if (!strcmp(a, "--deadline")) opt.deadline = atof(v);
        else usage();
    }
    if (!opt.file || !opt.expect || opt.clients < 1 || opt.total < 1 || strlen(opt.file) > 400) usage();
    if (opt.clients > opt.total) opt.clients = opt.total;

    int fd = open(opt.expect, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) { perror(opt.expect); return 2; }
    fsize = (uint64_t)st.st_size;
    data = fsize ? mmap(NULL, fsize, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0) : (const uint8_t *)"";
    if (data == MAP_FAILED) { perror("mmap"); return 2; }
    close(fd);

    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.server, &server.sin_addr) != 1) usage();
    rrq_len = build_rrq(rrq);
    lat = calloc((size_t)opt.total, sizeof *lat);
    struct xfer *xs = calloc((size_t)opt.clients, sizeof *xs);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!lat || !xs || epfd < 0) return 2;

    double t0 = now(), last_sweep = t0;
    for (int i = 0; i < opt.clients; i++) start(&xs[i], i);
    static uint8_t buf[PKT];
    struct epoll_event evs[256];
    while (ok_count + fail_count < opt.total) {
        double t = now();
        if (ok_count == 0 && fail_count >= opt.clients) { /* nothing ever answers: do not wait out the rest */
            fail_count = opt.total;
            note_error("aborted: no transfer completed");
            break;
        }
        if (t - t0 > opt.deadline) {
            for (int i = 0; i < opt.clients; i++)
                if (xs[i].state == WAIT_FIRST || xs[i].state == RUNNING) finish(&xs[i], 0, "deadline");
            fail_count += opt.total - started_count;
            if (opt.total > started_count) note_error("deadline (never started)");
            break;
        }
        int ne = epoll_wait(epfd, evs, 256, 5);
        for (int e = 0; e < ne; e++) {
            struct xfer *x = evs[e].data.ptr;
            for (int k = 0; k < 64 && x->fd >= 0; k++) { /* drain, bounded */
                struct sockaddr_in from;
                socklen_t fl = sizeof from;
                ssize_t r = recvfrom(x->fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
                if (r < 0) break;
                on_packet(x, buf, (size_t)r, &from);
            }
        }
        t = now();
        if (t - last_sweep > 0.005) {
            check_timeouts(xs, opt.clients, t);
            last_sweep = t;
        }
        for (int i = 0; i < opt.clients && started_count < opt.total; i++)
            if (xs[i].state == DONE || xs[i].state == FAILED) start(&xs[i], i);
    }
    double elapsed = now() - t0;
    qsort(lat, (size_t)ok_count, sizeof *lat, cmp);
    double p50 = ok_count ? lat[ok_count / 2] : 0, p99 = ok_count ? lat[(ok_count * 99) / 100] : 0;
    printf("{\"ok\": %d, \"failed\": %d, \"total\": %d, \"bytes\": %llu, \"blocks\": %llu, \"elapsed\": %.6f, "
           "\"retransmits\": %llu, \"out_of_order\": %llu, \"windowsize\": %u, \"p50_s\": %.6f, \"p99_s\": %.6f, \"errors\": [",
           ok_count, fail_count, opt.total, (unsigned long long)bytes_ok, (unsigned long long)blocks_ok, elapsed,
           (unsigned long long)retransmits, (unsigned long long)out_of_order, max_window, p50, p99);
    for (int i = 0; i < nerrs; i++) {
        printf("%s\"", i ? ", " : "");
        for (const char *c = errs[i]; *c; c++)
            if (*c == '"' || *c == '\\') printf("\\%c", *c);
            else if ((unsigned char)*c >= 32 && (unsigned char)*c < 127) putchar(*c);
        putchar('"');
    }
    printf("]}\n");
    return fail_count == 0 && ok_count == opt.total ? 0 : 1;
}
