/*
** frame_feed.c: feeds one backend socket of a netbe device with frames as
** fast as the device takes them, so the device's guest side runs saturated
** (scripts/bench-vhost-dpdk, device->driver).
**
**   frame_feed SIZE stream PATH          connect to stream,listen=unix:PATH
**   frame_feed SIZE dgram  LOCAL REMOTE  bind LOCAL, send to dgram,local=REMOTE
**
** Every frame is the same SIZE-byte Ethernet/IPv4/UDP frame, as testpmd's
** txonly mode sends. Writes block, so the feed goes at the pace of the
** reader and costs little: a stream write carries a batch of length-prefixed
** records, a dgram sendmmsg a batch of datagrams. Runs until killed or until
** the reader goes away.
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#define BATCH 64
#define FRAME_MAX 9000

static void die(const char *what)
{
    fprintf(stderr, "frame_feed: %s: %s\n", what, strerror(errno));
    exit(1);
}

static struct sockaddr_un unix_addr(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "frame_feed: path '%s' is too long\n", path);
        exit(2);
    }
    strcpy(sa.sun_path, path);
    return sa;
}

/* A UDP frame of LEN bytes from 198.18.0.1 to 198.18.0.2 (the benchmark
** range), checksummed as testpmd's txonly does: IPv4 header yes, UDP no. */
static void make_frame(uint8_t *f, size_t len)
{
    static const uint8_t dst[6] = {0x52, 0x54, 0, 0x12, 0x34, 0x56};
    static const uint8_t src[6] = {0x02, 0, 0, 0, 0, 0x01};
    memset(f, 0, len);
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    f[12] = 0x08;
    uint8_t *ip = f + 14;
    uint16_t ip_len = (uint16_t)(len - 14), udp_len = (uint16_t)(len - 34);
    ip[0] = 0x45;
    ip[2] = (uint8_t)(ip_len >> 8); ip[3] = (uint8_t)ip_len;
    ip[8] = 64; ip[9] = 17;
    ip[12] = 198; ip[13] = 18; ip[15] = 1;
    ip[16] = 198; ip[17] = 18; ip[19] = 2;
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2)
        sum += (uint32_t)(ip[i] << 8 | ip[i + 1]);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    ip[10] = (uint8_t)(~sum >> 8); ip[11] = (uint8_t)~sum;
    uint8_t *udp = ip + 20;
    udp[0] = 0x04; udp[1] = 0x00;            /* ports 1024 -> 1025 */
    udp[2] = 0x04; udp[3] = 0x01;
    udp[4] = (uint8_t)(udp_len >> 8); udp[5] = (uint8_t)udp_len;
}

static void feed_stream(const uint8_t *frame, size_t len, const char *path)
{
    struct sockaddr_un sa = unix_addr(path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die(path);
    /* One write carries BATCH records, so the feed's cost per frame is small. */
    size_t rec = len + 4, total = rec * BATCH;
    uint8_t *buf = malloc(total);
    if (!buf)
        die("malloc");
    uint32_t be32 = htonl((uint32_t)len);
    for (int i = 0; i < BATCH; i++) {
        memcpy(buf + i * rec, &be32, 4);
        memcpy(buf + i * rec + 4, frame, len);
    }
    for (;;) {
        for (size_t off = 0; off < total;) {
            ssize_t n = write(fd, buf + off, total - off);
            if (n < 0 && errno != EINTR)
                die("write");
            if (n > 0)
                off += (size_t)n;
        }
    }
}

static void feed_dgram(uint8_t *frame, size_t len, const char *local, const char *remote)
{
    struct sockaddr_un la = unix_addr(local), ra = unix_addr(remote);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    unlink(local);
    if (fd < 0 || bind(fd, (struct sockaddr *)&la, sizeof la) < 0)
        die(local);
    if (connect(fd, (struct sockaddr *)&ra, sizeof ra) < 0)
        die(remote);
    struct iovec iov = {frame, len};
    struct mmsghdr m[BATCH];
    memset(m, 0, sizeof m);
    for (int i = 0; i < BATCH; i++) {
        m[i].msg_hdr.msg_iov = &iov;
        m[i].msg_hdr.msg_iovlen = 1;
    }
    for (;;)
        if (sendmmsg(fd, m, BATCH, 0) < 0 && errno != EINTR) {
            unlink(local);
            die("sendmmsg");
        }
}

int main(int argc, char **argv)
{
    static uint8_t frame[FRAME_MAX];
    long size = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
    int stream = argc == 4 && strcmp(argv[2], "stream") == 0;
    int dgram = argc == 5 && strcmp(argv[2], "dgram") == 0;
    if (size < 60 || size > FRAME_MAX || (!stream && !dgram)) {
        fprintf(stderr, "usage: frame_feed SIZE stream PATH | SIZE dgram LOCAL REMOTE"
                " (SIZE 60 to %d)\n", FRAME_MAX);
        return 2;
    }
    make_frame(frame, (size_t)size);
    if (stream)
        feed_stream(frame, (size_t)size, argv[3]);
    else
        feed_dgram(frame, (size_t)size, argv[3], argv[4]);
    return 0;
}
