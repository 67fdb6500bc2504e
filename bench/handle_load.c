/*
 * handle_load: a load generator for the Handle protocol (RFC 3652) resolution, over UDP or TCP,
 * and for DNS TXT queries over UDP (to put NSD under exactly the same load).
 *
 * Why it exists: no load tool speaks the Handle protocol. dnsperf, resperf, flamethrower and
 * kxdpgun speak DNS only; CNRI's and Teleinfo's SDKs are Java clients that wait for each answer.
 * This one works the way dnsperf does: it keeps up to -q queries outstanding (over -c sockets
 * or connections), optionally caps the send rate (-Q, like dnsperf's -Q), for -l seconds, and
 * reports what was sent, answered and lost, the rate of answers, and the latency of each answer
 * (p50/p90/p99/max from a 1 µs-resolution histogram). It costs little: sendmmsg/recvmmsg in
 * batches, one thread, requests built in place from a template.
 *
 * A request is op 1 (RESOLUTION), protocol 2.10 suggesting 2.11, opflags -F (default
 * 0x19000000: REC|CA|PO, what CNRI-derived clients send), no index list, the type list from -T,
 * no credential: the layout of identifier-resolution.md §1.14. Responses are matched by request
 * id (Handle: generation << 16 | slot; DNS: slot). A response whose slot is no longer waiting
 * (it timed out, or a duplicate) counts as "late"; a query unanswered after -t seconds as lost.
 *
 * Build: gcc -O2 -Wall -o bench/out/handle_load bench/handle_load.c   (bench/id_resolution.py
 * does this). Output: a human summary on stderr and one JSON line on stdout.
 *
 *   handle_load -p 2641 -g 88.100.1 -r 0:1000000 -l 10          # uniform over 1M generated names
 *   handle_load -p 2641 -f hot.txt -q 200 -c 8 -Q 100000 -l 10   # names from a file, capped rate
 *   handle_load -m dns -p 5353 -f names.txt -l 10                # DNS TXT queries (NSD)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SOCKETS 256
#define MAX_TYPES 8
#define BATCH 64
#define MAX_NAME 255
#define MAX_REQUEST 512
#define RX_SIZE 2048
#define FINE_US 10000      /* 1 µs buckets below 10 ms */
#define COARSE_US 100      /* 100 µs buckets from 10 ms to 10 s */
#define COARSE_N 100000
#define TCP_BUF (1 << 20)

enum mode { MODE_UDP, MODE_TCP, MODE_DNS };

struct slot {
    uint64_t sent_ns;
    uint32_t id;
    uint8_t active;
    uint8_t measured;
};

struct conn {
    int fd;
    /* TCP only: pending output and partial input. */
    unsigned char *out;
    size_t out_len;
    unsigned char *in;
    size_t in_len;
};

static struct {
    enum mode mode;
    const char *server;
    int port;
    const char *file;
    const char *gen_prefix;
    long gen_lo, gen_hi;
    int sequential;
    int outstanding;
    int sockets;
    double max_qps;
    double duration;
    double warmup;
    double timeout;
    uint32_t opflags;
    const char *types[MAX_TYPES];
    int ntypes;
    const char *label;
} opt = {
    .mode = MODE_UDP,
    .server = "127.0.0.1",
    .port = 2641,
    .gen_lo = 0,
    .gen_hi = 0,
    .outstanding = 100,
    .sockets = 4,
    .duration = 10.0,
    .warmup = 0.0,
    .timeout = 2.0,
    .opflags = 0x19000000u,
    .label = "",
};

/* Names to query: either a list read from a file, or generated from a prefix and a range. */
static char **names;
static uint32_t *name_lens;
static long n_names;

static struct slot *slots;
static int *free_stack;
static int n_free;
static uint32_t generation = 1;

static uint64_t hist_fine[FINE_US];
static uint64_t hist_coarse[COARSE_N];
static uint64_t lat_max_ns;
static double lat_sum_us;

static uint64_t loops, recv_calls, send_calls;
static uint64_t sent, received, ok, lost, late, malformed, extra_packets, send_errors;
static uint64_t rcodes[1024];
static uint64_t rcode_other;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static long next_seq;
static uint32_t expiration;
static volatile sig_atomic_t interrupted;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void usage(void) {
    fprintf(stderr,
            "usage: handle_load [-m udp|tcp|dns] [-s addr] [-p port] (-f file | -g prefix -r lo:hi)\n"
            "                   [-S] [-q outstanding] [-c sockets] [-Q max_qps] [-l seconds]\n"
            "                   [-w warmup_s] [-t timeout_s] [-F opflags] [-T type]... [-L label]\n"
            "  -m  udp: Handle over UDP (default); tcp: Handle over TCP, -c connections;\n"
            "      dns: DNS TXT queries over UDP (for NSD), names taken as DNS names\n"
            "  -f  names, one per line;  -g/-r  generate PREFIX/ID-%%07d for lo <= i < hi\n"
            "      (dns mode: id-%%07d.PREFIX)\n"
            "  -S  take names in order, cycling (default: uniformly at random)\n"
            "  -q  queries outstanding at most (default 100; at most 65535)\n"
            "  -c  UDP sockets / TCP connections (default 4; SO_REUSEPORT spreads by source port)\n"
            "  -Q  send at most this many queries per second (default: as fast as answered)\n"
            "  -l  seconds measured (default 10);  -w  seconds of warm-up before them (default 0)\n"
            "  -t  seconds after which an unanswered query is lost (default 2)\n"
            "  -F  Handle opflags (default 0x19000000 REC|CA|PO; 0x01000000 is PO only)\n"
            "  -T  ask only for values of this type (repeatable, up to 8)\n");
    exit(2);
}

static void read_names(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die(path);
    long cap = 1024;
    names = malloc(sizeof(char *) * (size_t)cap);
    name_lens = malloc(sizeof(uint32_t) * (size_t)cap);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        line[len] = 0;
        if (len == 0) continue;
        if (len > MAX_NAME) {
            fprintf(stderr, "handle_load: name longer than %d bytes: %s\n", MAX_NAME, line);
            exit(2);
        }
        if (n_names == cap) {
            cap *= 2;
            names = realloc(names, sizeof(char *) * (size_t)cap);
            name_lens = realloc(name_lens, sizeof(uint32_t) * (size_t)cap);
            if (!names || !name_lens) die("realloc");
        }
        names[n_names] = strndup(line, len);
        name_lens[n_names] = (uint32_t)len;
        n_names++;
    }
    fclose(f);
    if (n_names == 0) {
        fprintf(stderr, "handle_load: no names in %s\n", path);
        exit(2);
    }
}

/* The name of the next query, written to buf; returns its length. */
static size_t next_name(char *buf) {
    long i;
    long count = opt.file ? n_names : opt.gen_hi - opt.gen_lo;
    if (opt.sequential) {
        i = next_seq++ % count;
    } else {
        i = (long)(xorshift() % (uint64_t)count);
    }
    if (opt.file) {
        memcpy(buf, names[i], name_lens[i]);
        return name_lens[i];
    }
    int n;
    if (opt.mode == MODE_DNS)
        n = snprintf(buf, MAX_NAME + 1, "id-%07ld.%s", opt.gen_lo + i, opt.gen_prefix);
    else
        n = snprintf(buf, MAX_NAME + 1, "%s/ID-%07ld", opt.gen_prefix, opt.gen_lo + i);
    return (size_t)n;
}

/* A Handle resolution request (envelope + header + body + empty credential); returns its size. */
static size_t build_handle(unsigned char *p, uint32_t id, const char *name, size_t name_len) {
    size_t body = 4 + name_len + 4 + 4;
    for (int t = 0; t < opt.ntypes; t++) body += 4 + strlen(opt.types[t]);
    size_t msg_len = 24 + body + 4;
    /* Envelope: version 2.10, suggesting 2.11; session 0; request id; packet 0; length. */
    p[0] = 2;
    p[1] = 10;
    p[2] = 2;
    p[3] = 11;
    put32(p + 4, 0);
    put32(p + 8, id);
    put32(p + 12, 0);
    put32(p + 16, (uint32_t)msg_len);
    /* Header: op 1, rc 0, opflags, site serial 0xFFFF, recursion 0, reserved, expiry, body. */
    unsigned char *h = p + 20;
    put32(h, 1);
    put32(h + 4, 0);
    put32(h + 8, opt.opflags);
    h[12] = 0xFF;
    h[13] = 0xFF;
    h[14] = 0;
    h[15] = 0;
    put32(h + 16, expiration);
    put32(h + 20, (uint32_t)body);
    unsigned char *b = h + 24;
    put32(b, (uint32_t)name_len);
    memcpy(b + 4, name, name_len);
    b += 4 + name_len;
    put32(b, 0); /* index list: none */
    b += 4;
    put32(b, (uint32_t)opt.ntypes);
    b += 4;
    for (int t = 0; t < opt.ntypes; t++) {
        size_t tl = strlen(opt.types[t]);
        put32(b, (uint32_t)tl);
        memcpy(b + 4, opt.types[t], tl);
        b += 4 + tl;
    }
    put32(b, 0); /* credential length */
    b += 4;
    return (size_t)(b - p);
}

/* A DNS query for TXT records of name (RD set, no EDNS, as dnsperf sends by default). */
static size_t build_dns(unsigned char *p, uint16_t id, const char *name, size_t name_len) {
    p[0] = (unsigned char)(id >> 8);
    p[1] = (unsigned char)id;
    p[2] = 0x01; /* RD */
    p[3] = 0x00;
    p[4] = 0; p[5] = 1;  /* one question */
    memset(p + 6, 0, 6);
    size_t o = 12;
    size_t start = 0;
    for (size_t i = 0; i <= name_len; i++) {
        if (i == name_len || name[i] == '.') {
            size_t label = i - start;
            if (label > 0) {
                p[o++] = (unsigned char)label;
                memcpy(p + o, name + start, label);
                o += label;
            }
            start = i + 1;
        }
    }
    p[o++] = 0;
    p[o++] = 0; p[o++] = 16; /* TXT */
    p[o++] = 0; p[o++] = 1;  /* IN */
    return o;
}

static void record_latency(uint64_t ns) {
    uint64_t us = ns / 1000;
    if (us < FINE_US) {
        hist_fine[us]++;
    } else {
        uint64_t b = (us - FINE_US) / COARSE_US;
        if (b >= COARSE_N) b = COARSE_N - 1;
        hist_coarse[b]++;
    }
    if (ns > lat_max_ns) lat_max_ns = ns;
    lat_sum_us += (double)ns / 1000.0;
}

static double percentile_us(double p, uint64_t count) {
    if (count == 0) return 0.0;
    uint64_t rank = (uint64_t)(p * (double)count + 0.999999);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < FINE_US; i++) {
        seen += hist_fine[i];
        if (seen >= rank) return (double)i + 0.5;
    }
    for (int i = 0; i < COARSE_N; i++) {
        seen += hist_coarse[i];
        if (seen >= rank) return FINE_US + (double)i * COARSE_US + COARSE_US / 2.0;
    }
    return (double)lat_max_ns / 1000.0;
}

/* A response arrived: find its query by id, record the latency and the result code. */
static void on_response(const unsigned char *p, size_t len, uint64_t now) {
    uint32_t id;
    int code;
    int success;
    if (opt.mode == MODE_DNS) {
        if (len < 12) {
            malformed++;
            return;
        }
        id = (uint32_t)p[0] << 8 | p[1];
        code = p[3] & 0x0F;
        success = code == 0 && (p[6] | p[7]) != 0;
    } else {
        if (len < 44) {
            malformed++;
            return;
        }
        if (get32(p + 12) != 0) { /* a later packet of a multi-packet answer */
            extra_packets++;
            return;
        }
        id = get32(p + 8);
        code = (int)get32(p + 24);
        success = code == 1;
    }
    uint32_t s = id & 0xFFFF;
    if (s >= (uint32_t)opt.outstanding || !slots[s].active || slots[s].id != id) {
        late++;
        return;
    }
    struct slot *sl = &slots[s];
    sl->active = 0;
    free_stack[n_free++] = (int)s;
    if (!sl->measured) return;
    received++;
    if (success) ok++;
    if (code >= 0 && code < 1024)
        rcodes[code]++;
    else
        rcode_other++;
    record_latency(now - sl->sent_ns);
}

static int take_slot(uint64_t now, int measuring, uint32_t *id_out) {
    int s = free_stack[--n_free];
    uint32_t id;
    if (opt.mode == MODE_DNS) {
        id = (uint32_t)s;
    } else {
        id = (generation++ << 16) | (uint32_t)s;
        if ((generation & 0xFFFF) == 0) generation = 1;
    }
    slots[s].id = id;
    slots[s].sent_ns = now;
    slots[s].active = 1;
    slots[s].measured = (uint8_t)measuring;
    if (measuring) sent++;
    *id_out = id;
    return s;
}

static size_t build_request(unsigned char *p, uint32_t id) {
    char name[MAX_NAME + 1];
    size_t name_len = next_name(name);
    if (opt.mode == MODE_DNS) return build_dns(p, (uint16_t)id, name, name_len);
    return build_handle(p, id, name, name_len);
}

static void expire(uint64_t now) {
    uint64_t limit = (uint64_t)(opt.timeout * 1e9);
    for (int s = 0; s < opt.outstanding; s++) {
        if (slots[s].active && now - slots[s].sent_ns > limit) {
            slots[s].active = 0;
            free_stack[n_free++] = s;
            if (slots[s].measured) lost++;
        }
    }
}

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

static void big_buffers(int fd) {
    int size = 8 << 20;
    /* SO_*BUFFORCE passes the sysctl caps when run as root; otherwise the plain option. */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

/* TCP: parse whole frames (20-byte envelope + its message length) out of the input buffer. */
static void tcp_frames(struct conn *c, uint64_t now) {
    size_t pos = 0;
    while (c->in_len - pos >= 20) {
        uint32_t msg_len = get32(c->in + pos + 16);
        size_t total = 20 + (size_t)msg_len;
        if (total > TCP_BUF) {
            fprintf(stderr, "handle_load: TCP frame of %zu bytes; giving up\n", total);
            exit(3);
        }
        if (c->in_len - pos < total) break;
        on_response(c->in + pos, total, now);
        pos += total;
    }
    if (pos > 0) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
}

int main(int argc, char **argv) {
    int ch;
    while ((ch = getopt(argc, argv, "m:s:p:f:g:r:Sq:c:Q:l:w:t:F:T:L:h")) != -1) {
        switch (ch) {
        case 'm':
            if (!strcmp(optarg, "udp")) opt.mode = MODE_UDP;
            else if (!strcmp(optarg, "tcp")) opt.mode = MODE_TCP;
            else if (!strcmp(optarg, "dns")) opt.mode = MODE_DNS;
            else usage();
            break;
        case 's': opt.server = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'f': opt.file = optarg; break;
        case 'g': opt.gen_prefix = optarg; break;
        case 'r':
            if (sscanf(optarg, "%ld:%ld", &opt.gen_lo, &opt.gen_hi) != 2) usage();
            break;
        case 'S': opt.sequential = 1; break;
        case 'q': opt.outstanding = atoi(optarg); break;
        case 'c': opt.sockets = atoi(optarg); break;
        case 'Q': opt.max_qps = atof(optarg); break;
        case 'l': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 't': opt.timeout = atof(optarg); break;
        case 'F': opt.opflags = (uint32_t)strtoul(optarg, NULL, 0); break;
        case 'T':
            if (opt.ntypes == MAX_TYPES) usage();
            opt.types[opt.ntypes++] = optarg;
            break;
        case 'L': opt.label = optarg; break;
        default: usage();
        }
    }
    if (opt.file) {
        read_names(opt.file);
    } else if (!opt.gen_prefix || opt.gen_hi <= opt.gen_lo) {
        usage();
    }
    if (opt.outstanding < 1 || opt.outstanding > 65535) usage();
    if (opt.sockets < 1 || opt.sockets > MAX_SOCKETS) usage();
    if (opt.mode == MODE_TCP && opt.sockets > opt.outstanding) opt.sockets = opt.outstanding;

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    expiration = (uint32_t)wall.tv_sec + 43200;
    rng_state ^= (uint64_t)wall.tv_nsec * 0x2545F4914F6CDD1Dull;
    if (rng_state == 0) rng_state = 1;

    slots = calloc((size_t)opt.outstanding, sizeof *slots);
    free_stack = malloc(sizeof(int) * (size_t)opt.outstanding);
    for (int s = opt.outstanding - 1; s >= 0; s--) free_stack[n_free++] = s;

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    if (inet_pton(AF_INET, opt.server, &addr.sin_addr) != 1) {
        fprintf(stderr, "handle_load: %s is not an IPv4 address\n", opt.server);
        return 2;
    }
    struct conn conns[MAX_SOCKETS];
    struct pollfd pfds[MAX_SOCKETS];
    for (int i = 0; i < opt.sockets; i++) {
        int tcp = opt.mode == MODE_TCP;
        int fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
        if (fd < 0) die("socket");
        if (tcp) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        } else {
            big_buffers(fd);
        }
        /* Connected: the kernel filters to the server's address, and send/recv need no address. */
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
        set_nonblock(fd);
        conns[i] = (struct conn){.fd = fd};
        if (tcp) {
            conns[i].out = malloc(TCP_BUF);
            conns[i].in = malloc(TCP_BUF);
        }
        pfds[i].fd = fd;
    }

    static unsigned char tx[BATCH][MAX_REQUEST];
    static unsigned char rx[BATCH][RX_SIZE];
    struct mmsghdr tx_msgs[BATCH], rx_msgs[BATCH];
    struct iovec tx_iov[BATCH], rx_iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        rx_iov[i] = (struct iovec){.iov_base = rx[i], .iov_len = RX_SIZE};
        rx_msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &rx_iov[i], .msg_iovlen = 1}};
    }

    uint64_t t0 = now_ns();
    uint64_t measure_start = t0 + (uint64_t)(opt.warmup * 1e9);
    uint64_t end = measure_start + (uint64_t)(opt.duration * 1e9);
    uint64_t drain_deadline = 0;
    uint64_t next_expire = t0 + 10000000ull;
    uint64_t sent_all = 0; /* including warm-up, for the rate cap */
    int measuring = opt.warmup <= 0;
    int sending = 1;
    int rr = 0;
    /* Refill the window in batches of an eighth of it (at most BATCH): fewer, fuller syscalls. */
    long min_batch = opt.outstanding / 8;
    if (min_batch > BATCH) min_batch = BATCH;
    if (min_batch < 1) min_batch = 1;
    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);

    for (;;) {
        uint64_t now = now_ns();
        if (!measuring && now >= measure_start) {
            measuring = 1;
            getrusage(RUSAGE_SELF, &ru0);
        }
        if (sending && (now >= end || interrupted)) {
            sending = 0;
            drain_deadline = now + (uint64_t)(opt.timeout * 1e9);
        }
        if (!sending && (n_free == opt.outstanding || now >= drain_deadline)) break;

        long budget = 0;
        uint64_t wait_ns = 10000000ull;
        if (sending) {
            budget = n_free;
            if (opt.max_qps > 0) {
                double allowed = (double)(now - t0) / 1e9 * opt.max_qps - (double)sent_all;
                if (allowed < 1.0) {
                    budget = 0;
                    wait_ns = (uint64_t)((1.0 - allowed) / opt.max_qps * 1e9) + 1000;
                } else if ((long)allowed < budget) {
                    budget = (long)allowed;
                }
            } else if (budget < min_batch && n_free < opt.outstanding) {
                /* As fast as answered: refill the window in batches, not one query per call. */
                budget = 0;
            }
        }
        /* Send: a batch per socket, round robin, until the window or the rate budget is used. */
        while (budget > 0) {
            struct conn *c = &conns[rr];
            rr = (rr + 1) % opt.sockets;
            int n = budget < BATCH ? (int)budget : BATCH;
            if (opt.mode == MODE_TCP) {
                int k = 0;
                while (k < n && c->out_len + MAX_REQUEST <= TCP_BUF) {
                    uint32_t id;
                    take_slot(now, measuring, &id);
                    c->out_len += build_request(c->out + c->out_len, id);
                    k++;
                }
                sent_all += (uint64_t)k;
                budget -= k;
                if (k == 0) break;
                continue;
            }
            int slot_of[BATCH];
            for (int i = 0; i < n; i++) {
                uint32_t id;
                slot_of[i] = take_slot(now, measuring, &id);
                tx_iov[i] = (struct iovec){.iov_base = tx[i], .iov_len = build_request(tx[i], id)};
                tx_msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &tx_iov[i], .msg_iovlen = 1}};
            }
            send_calls++;
            int done = sendmmsg(c->fd, tx_msgs, (unsigned)n, 0);
            if (done < 0) done = 0;
            /* Not sent (a full socket buffer): give the slots back, try again later. */
            for (int i = n - 1; i >= done; i--) {
                int s = slot_of[i];
                slots[s].active = 0;
                free_stack[n_free++] = s;
                if (slots[s].measured) sent--;
                send_errors++;
            }
            sent_all += (uint64_t)done;
            budget -= n;
            if (done < n) break;
        }
        if (opt.mode == MODE_TCP) {
            for (int i = 0; i < opt.sockets; i++) {
                struct conn *c = &conns[i];
                while (c->out_len > 0) {
                    ssize_t w = write(c->fd, c->out, c->out_len);
                    if (w <= 0) {
                        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN))
                            break;
                        die("write");
                    }
                    memmove(c->out, c->out + w, c->out_len - (size_t)w);
                    c->out_len -= (size_t)w;
                }
            }
        }

        /* Wait for answers (or writability, or the next rate token), then read the ready ones. */
        for (int i = 0; i < opt.sockets; i++) {
            pfds[i].events = POLLIN;
            if (opt.mode == MODE_TCP && conns[i].out_len > 0) pfds[i].events |= POLLOUT;
        }
        now = now_ns();
        if (!sending) {
            wait_ns = drain_deadline > now ? drain_deadline - now : 0;
            if (wait_ns > 10000000ull) wait_ns = 10000000ull;
        } else if (opt.max_qps <= 0 && n_free >= min_batch) {
            wait_ns = 0; /* a full socket buffer stopped the sends: look again at once */
        }
        if (now + wait_ns > next_expire) wait_ns = next_expire > now ? next_expire - now : 0;
        struct timespec ts = {.tv_sec = (time_t)(wait_ns / 1000000000ull),
                              .tv_nsec = (long)(wait_ns % 1000000000ull)};
        loops++;
        int ready = ppoll(pfds, (nfds_t)opt.sockets, &ts, NULL);
        if (ready < 0 && errno != EINTR) die("ppoll");
        now = now_ns();
        for (int i = 0; ready > 0 && i < opt.sockets; i++) {
            if (!(pfds[i].revents & (POLLIN | POLLERR | POLLHUP))) continue;
            struct conn *c = &conns[i];
            if (opt.mode == MODE_TCP) {
                for (;;) {
                    ssize_t r = read(c->fd, c->in + c->in_len, TCP_BUF - c->in_len);
                    if (r == 0) {
                        fprintf(stderr, "handle_load: the server closed a connection\n");
                        exit(3);
                    }
                    if (r < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN) break;
                        die("read");
                    }
                    c->in_len += (size_t)r;
                    tcp_frames(c, now);
                }
                continue;
            }
            for (;;) {
                recv_calls++;
                int got = recvmmsg(c->fd, rx_msgs, BATCH, MSG_DONTWAIT, NULL);
                if (got <= 0) break;
                for (int k = 0; k < got; k++) on_response(rx[k], rx_msgs[k].msg_len, now);
                if (got < BATCH) break;
            }
        }
        if (now >= next_expire) {
            expire(now);
            next_expire = now + 10000000ull;
        }
    }
    uint64_t finished = now_ns();
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    /* Whatever is still outstanding after the drain is lost. */
    for (int s = 0; s < opt.outstanding; s++)
        if (slots[s].active && slots[s].measured) lost++;

    double seconds = opt.duration;
    if (interrupted) {
        uint64_t span = finished > measure_start ? finished - measure_start : 1;
        seconds = (double)span / 1e9;
    }
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                 (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    double qps = (double)received / seconds;
    double p50 = percentile_us(0.50, received), p90 = percentile_us(0.90, received);
    double p99 = percentile_us(0.99, received), p999 = percentile_us(0.999, received);
    double mean = received ? lat_sum_us / (double)received : 0.0;
    const char *mode_name = opt.mode == MODE_TCP ? "tcp" : opt.mode == MODE_DNS ? "dns" : "udp";

    fprintf(stderr,
            "%s%s%s over %s: sent %llu, answered %llu (ok %llu), lost %llu, late %llu in %.1f s\n"
            "  %.0f answers/s; latency µs p50 %.0f p90 %.0f p99 %.0f p99.9 %.0f max %.0f;"
            " generator CPU %.2f s\n",
            opt.label, *opt.label ? ": " : "", opt.file ? opt.file : opt.gen_prefix, mode_name,
            (unsigned long long)sent, (unsigned long long)received, (unsigned long long)ok,
            (unsigned long long)lost, (unsigned long long)late, seconds, qps, p50, p90, p99, p999,
            (double)lat_max_ns / 1000.0, cpu);

    printf("{\"label\":\"%s\",\"mode\":\"%s\",\"seconds\":%.3f,\"outstanding\":%d,\"sockets\":%d,"
           "\"max_qps\":%.0f,\"sent\":%llu,\"received\":%llu,\"ok\":%llu,\"lost\":%llu,"
           "\"late\":%llu,\"malformed\":%llu,\"extra_packets\":%llu,\"send_retries\":%llu,"
           "\"qps\":%.1f,\"mean_us\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,"
           "\"p999_us\":%.1f,\"max_us\":%.1f,\"generator_cpu_s\":%.3f,\"polls\":%llu,"
           "\"send_calls\":%llu,\"recv_calls\":%llu,\"rcodes\":{",
           opt.label, mode_name, seconds, opt.outstanding, opt.sockets, opt.max_qps,
           (unsigned long long)sent, (unsigned long long)received, (unsigned long long)ok,
           (unsigned long long)lost, (unsigned long long)late, (unsigned long long)malformed,
           (unsigned long long)extra_packets, (unsigned long long)send_errors, qps, mean, p50,
           p90, p99, p999, (double)lat_max_ns / 1000.0, cpu, (unsigned long long)loops,
           (unsigned long long)send_calls, (unsigned long long)recv_calls);
    int first = 1;
    for (int i = 0; i < 1024; i++) {
        if (!rcodes[i]) continue;
        printf("%s\"%d\":%llu", first ? "" : ",", i, (unsigned long long)rcodes[i]);
        first = 0;
    }
    if (rcode_other) printf("%s\"other\":%llu", first ? "" : ",", (unsigned long long)rcode_other);
    printf("}}\n");
    return 0;
}
