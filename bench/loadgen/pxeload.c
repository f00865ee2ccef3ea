/* pxeload: PXE DISCOVER (port 67) or boot-server REQUEST (port 4011) generator, K requests in flight.
 *
 * Every request has its own MAC, xid and UUID (option 97), so a server that keeps state per client shows
 * it in its memory. Every reply is checked: BOOTREPLY, xid of a request in flight, same chaddr, option 53
 * OFFER (67) or ACK (4011), option 60 "PXEClient", option 97 echoed when present, yiaddr 0.0.0.0 (on
 * 4011 dnsmasq puts the client's own ciaddr there, which is accepted and counted apart).
 * Prints one JSON object; exit 0 only when every request got a correct reply.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { NOT_SENT, IN_FLIGHT, ANSWERED, LOST, BAD };
enum { MAX_ERRS = 8 };

struct req {
    uint8_t state, tries;
    double first_send, last_send;
};

static struct {
    const char *iface, *server, *client_ip, *mode;
    int count, inflight, timeout_ms, retries, arch;
    unsigned seed;
    double deadline;
    int distinct; /* 1: every request has its own option 12, so no two share a shape (a cold memo) */
} opt = {NULL, NULL, "0.0.0.0", "discover", 1000, 64, 1000, 2, 0, 1, 60.0, 0};

static struct req *reqs;
static double *lat;
static int n_ok, n_lost, n_bad, n_dup, n_yiaddr_ciaddr, in_flight, next_idx;
static uint64_t retries;
static uint32_t xid_base, ciaddr;
static char errs[MAX_ERRS][160];
static int nerrs;
static int request_mode;

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

static void mac_of(int i, uint8_t mac[6]) {
    mac[0] = 0x02; /* locally administered */
    mac[1] = (uint8_t)opt.seed;
    mac[2] = (uint8_t)(opt.seed >> 8);
    mac[3] = (uint8_t)(i >> 16);
    mac[4] = (uint8_t)(i >> 8);
    mac[5] = (uint8_t)i;
}

static void uuid_of(int i, uint8_t u[17]) {
    u[0] = 0;
    for (int k = 0; k < 12; k++) u[1 + k] = (uint8_t)(0xb0 + k + opt.seed);
    u[13] = (uint8_t)(i >> 24);
    u[14] = (uint8_t)(i >> 16);
    u[15] = (uint8_t)(i >> 8);
    u[16] = (uint8_t)i;
}

static size_t build(int i, uint8_t *p) {
    memset(p, 0, 548);
    p[0] = 1;
    p[1] = 1;
    p[2] = 6;
    uint32_t xid = htonl(xid_base + (uint32_t)i);
    memcpy(p + 4, &xid, 4);
    if (!request_mode) p[10] = 0x80; /* broadcast flag: no address yet */
    else memcpy(p + 12, &ciaddr, 4);
    mac_of(i, p + 28);
    const uint8_t cookie[4] = {99, 130, 83, 99};
    memcpy(p + 236, cookie, 4);
    size_t n = 240;
    p[n++] = 53; p[n++] = 1; p[n++] = request_mode ? 3 : 1;
    p[n++] = 57; p[n++] = 2; p[n++] = 0x05; p[n++] = 0xc0;
    p[n++] = 93; p[n++] = 2; p[n++] = (uint8_t)(opt.arch >> 8); p[n++] = (uint8_t)opt.arch;
    p[n++] = 94; p[n++] = 3; p[n++] = 1; p[n++] = 2; p[n++] = 1;
    p[n++] = 97; p[n++] = 17; uuid_of(i, p + n); n += 17;
    static const uint8_t prl[] = {1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 22, 23, 28, 40, 41, 42, 43,
                                  50, 51, 54, 58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135};
    p[n++] = 55; p[n++] = sizeof prl; memcpy(p + n, prl, sizeof prl); n += sizeof prl;
    char vc[40];
    int vl = snprintf(vc, sizeof vc, "PXEClient:Arch:%05d:UNDI:002001", opt.arch);
    p[n++] = 60; p[n++] = (uint8_t)vl; memcpy(p + n, vc, (size_t)vl); n += (size_t)vl;
    if (opt.distinct) { /* a host name of its own (option 12): no two requests share a shape */
        char hn[16];
        int hl = snprintf(hn, sizeof hn, "pxe-%08x", (unsigned)i);
        p[n++] = 12; p[n++] = (uint8_t)hl; memcpy(p + n, hn, (size_t)hl); n += (size_t)hl;
    }
    if (request_mode) { /* boot server type 0x8000 (dnsmasq's first pxe-service), layer 0 */
        const uint8_t o43[] = {43, 7, 71, 4, 0x80, 0x00, 0x00, 0x00, 255};
        memcpy(p + n, o43, sizeof o43);
        n += sizeof o43;
    }
    p[n++] = 255;
    return n < 300 ? 300 : n;
}

/* Find option `code` in the options area; NULL when absent or overrunning. */
static const uint8_t *find_opt(const uint8_t *p, size_t n, uint8_t code, uint8_t *len) {
    size_t i = 240;
    while (i < n) {
        uint8_t c = p[i];
        if (c == 255) return NULL;
        if (c == 0) { i++; continue; }
        if (i + 1 >= n || i + 2 + p[i + 1] > n) return NULL;
        if (c == code) { *len = p[i + 1]; return p + i + 2; }
        i += 2 + (size_t)p[i + 1];
    }
    return NULL;
}

static int check_reply(const uint8_t *p, size_t n, int *idx) {
    static const uint8_t cookie[4] = {99, 130, 83, 99};
    if (n < 240 || p[0] != 2 || memcmp(p + 236, cookie, 4) != 0) return -1; /* not a reply to anyone */
    uint32_t xid;
    memcpy(&xid, p + 4, 4);
    uint32_t i = ntohl(xid) - xid_base;
    if (i >= (uint32_t)opt.count) return -1;
    *idx = (int)i;
    if (reqs[i].state == ANSWERED) { n_dup++; return -1; }
    if (reqs[i].state != IN_FLIGHT) return -1;
    uint8_t mac[6];
    mac_of((int)i, mac);
    if (memcmp(p + 28, mac, 6) != 0) { note_error("chaddr differs"); return 1; }
    uint32_t yi;
    memcpy(&yi, p + 16, 4);
    if (yi != 0) {
        if (!(request_mode && yi == ciaddr)) { note_error("yiaddr is not 0.0.0.0"); return 1; }
        n_yiaddr_ciaddr++;
    }
    uint8_t len;
    const uint8_t *o = find_opt(p, n, 53, &len);
    if (!o || len != 1 || o[0] != (request_mode ? 5 : 2)) { note_error("option 53 not OFFER/ACK"); return 1; }
    o = find_opt(p, n, 60, &len);
    if (!o || len < 9 || memcmp(o, "PXEClient", 9) != 0) { note_error("option 60 is not PXEClient"); return 1; }
    o = find_opt(p, n, 97, &len);
    if (o) {
        uint8_t u[17];
        uuid_of((int)i, u);
        if (len != 17 || memcmp(o, u, 17) != 0) { note_error("option 97 not echoed"); return 1; }
    }
    return 0;
}

static int cmp(const void *a, const void *b) {
    double d = *(const double *)a - *(const double *)b;
    return (d > 0) - (d < 0);
}

static void usage(void) {
    fprintf(stderr, "usage: pxeload --server IP [--iface IF] [--mode discover|request] [--client-ip IP]\n"
                    "  [--count N] [--inflight K] [--timeout-ms T] [--retries R] [--arch A] [--seed S]\n"
                    "  [--deadline S] [--distinct-shapes 0|1]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--iface")) opt.iface = v;
        else if (!strcmp(a, "--server")) opt.server = v;
        else if (!strcmp(a, "--client-ip")) opt.client_ip = v;
        else if (!strcmp(a, "--mode")) opt.mode = v;
        else if (!strcmp(a, "--count")) opt.count = atoi(v);
        else if (!strcmp(a, "--inflight")) opt.inflight = atoi(v);
        else if (!strcmp(a, "--timeout-ms")) opt.timeout_ms = atoi(v);
        else if (!strcmp(a, "--retries")) opt.retries = atoi(v);
        else if (!strcmp(a, "--arch")) opt.arch = atoi(v);
        else if (!strcmp(a, "--seed")) opt.seed = (unsigned)atoi(v);
        else if (!strcmp(a, "--deadline")) opt.deadline = atof(v);
        else if (!strcmp(a, "--distinct-shapes")) opt.distinct = atoi(v);
        else usage();
    }
    if (argc % 2 == 0 || !opt.server || opt.count < 1 || opt.inflight < 1 || opt.count > (1 << 24)) usage();
    request_mode = !strcmp(opt.mode, "request");
    if (!request_mode && strcmp(opt.mode, "discover")) usage();
    xid_base = 0x5b000000u ^ (opt.seed << 24) ^ (uint32_t)getpid() << 8;
    if (inet_pton(AF_INET, opt.client_ip, &ciaddr) != 1) usage();

    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1, buf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    if (opt.iface && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, opt.iface, (socklen_t)strlen(opt.iface)) < 0) {
        perror("SO_BINDTODEVICE");
        return 2;
    }
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(request_mode ? 4011 : 68)};
    if (request_mode) me.sin_addr.s_addr = ciaddr; /* EDK2 asks from ciaddr:4011 */
    if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0) { perror("bind"); return 2; }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(request_mode ? 4011 : 67)};
    if (inet_pton(AF_INET, request_mode ? opt.server : "255.255.255.255", &to.sin_addr) != 1) usage();

    reqs = calloc((size_t)opt.count, sizeof *reqs);
    lat = calloc((size_t)opt.count, sizeof *lat);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    if (!reqs || !lat || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) return 2;

    uint8_t pkt[600], rx[2048];
    double t0 = now(), last_sweep = t0;
    int done = 0, low = 0;
    while (done < opt.count) {
        double t = now();
        if (t - t0 > opt.deadline) { note_error("deadline"); break; }
        if (n_ok == 0 && n_lost >= opt.inflight) { note_error("aborted: nothing answered"); break; }
        while (in_flight < opt.inflight && next_idx < opt.count) {
            int i = next_idx++;
            size_t n = build(i, pkt);
            reqs[i].state = IN_FLIGHT;
            reqs[i].first_send = reqs[i].last_send = now();
            if (sendto(fd, pkt, n, 0, (struct sockaddr *)&to, sizeof to) < 0 && errno != EAGAIN)
                note_error("sendto failed");
            in_flight++;
        }
        struct epoll_event evs[1];
        epoll_wait(ep, evs, 1, 5);
        for (int k = 0; k < 256; k++) { /* drain, bounded */
            ssize_t r = recv(fd, rx, sizeof rx, 0);
            if (r < 0) break;
            int idx = -1;
            int c = check_reply(rx, (size_t)r, &idx);
            if (c < 0) continue;
            in_flight--;
            done++;
            if (c == 0) {
                reqs[idx].state = ANSWERED;
                lat[n_ok++] = now() - reqs[idx].first_send;
            } else {
                reqs[idx].state = BAD;
                n_bad++;
            }
        }
        t = now();
        if (t - last_sweep > 0.01) {
            last_sweep = t;
            while (low < next_idx && reqs[low].state != IN_FLIGHT) low++; /* oldest still in flight */
            for (int i = low; i < next_idx; i++) {
                struct req *q = &reqs[i];
                if (q->state != IN_FLIGHT || t - q->last_send < opt.timeout_ms / 1000.0) continue;
                if (q->tries >= opt.retries) {
                    q->state = LOST;
                    n_lost++;
                    in_flight--;
                    done++;
                    continue;
                }
                q->tries++;
                retries++;
                q->last_send = t;
                size_t n = build(i, pkt);
                sendto(fd, pkt, n, 0, (struct sockaddr *)&to, sizeof to);
            }
        }
    }
    double elapsed = now() - t0;
    int unanswered = opt.count - n_ok - n_bad;
    qsort(lat, (size_t)n_ok, sizeof *lat, cmp);
    double p50 = n_ok ? lat[n_ok / 2] : 0, p99 = n_ok ? lat[(n_ok * 99) / 100] : 0;
    double mx = n_ok ? lat[n_ok - 1] : 0;
    printf("{\"ok\": %d, \"total\": %d, \"lost\": %d, \"bad\": %d, \"duplicates\": %d, \"retries\": %llu, "
           "\"yiaddr_is_ciaddr\": %d, \"elapsed\": %.6f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, "
           "\"errors\": [",
           n_ok, opt.count, unanswered, n_bad, n_dup, (unsigned long long)retries, n_yiaddr_ciaddr, elapsed,
           p50 * 1e3, p99 * 1e3, mx * 1e3);
    for (int i = 0; i < nerrs; i++) printf("%s\"%s\"", i ? ", " : "", errs[i]);
    printf("]}\n");
    return n_ok == opt.count ? 0 : 1;
}
