/*
** vhost_client_test.c: a QEMU-style vhost-user front-end against the
** vhost-user-net example device (built under ASan and UBSan as
** build/vhost-user-net; VHOST_USER_NET overrides the path). It negotiates
** as QEMU does (features, protocol features with REPLY_ACK, a memfd memory
** table, rings with kick and call eventfds), then plays a hostile guest:
**   - a 200 KB tx chain with a checksum header must come back with used
**     length 0 and be counted by the device as an oversize drop;
**   - a normal frame after it must still reach the backend, a dgram
**     socket this test listens on, with its checksum completed;
**   - a batch of tx chains made available with one kick must be used
**     with one interrupt (none while the guest sets NO_INTERRUPT), and
**     the device must ask for kicks again (no NO_NOTIFY) once it waits;
**   - a 100 KB datagram from the peer must be skipped, and the frame
**     behind it land in the guest's receive buffer;
**   - memory tables that move running rings away or map past the end of
**     their file must be refused, the device staying up for the next
**     connection.
** The device runs in a temporary directory and is ended by its pid.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "check.h"
#include "netbe.h"

#define MEM_SIZE (1 << 20)
#define QSIZE 8
#define HL 12
#define BIG (200 * 1024)

/* Guest physical layout: one ring per 12 KiB, then buffers. */
static const uint64_t ring_gpa[2] = {0x0000, 0x3000};   /* rx, tx: desc, +0x1000 avail, +0x2000 used */
#define RX_BUF_GPA 0x10000
#define RX_BUF_LEN 4096
#define TX_BIG_GPA 0x40000
#define TX_SMALL_GPA 0x90000

#define VU_GET_FEATURES 1
#define VU_SET_FEATURES 2
#define VU_SET_OWNER 3
#define VU_SET_MEM_TABLE 5
#define VU_SET_VRING_NUM 8
#define VU_SET_VRING_ADDR 9
#define VU_SET_VRING_BASE 10
#define VU_SET_VRING_KICK 12
#define VU_SET_VRING_CALL 13
#define VU_GET_PROTOCOL_FEATURES 15
#define VU_SET_PROTOCOL_FEATURES 16
#define VU_SET_VRING_ENABLE 18
#define VU_NEED_REPLY (1u << 3)
#define VU_F_PROTOCOL_FEATURES (1ull << 30)
#define VU_PF_REPLY_ACK (1ull << 3)

static char dir[64], log_path[100];
static pid_t dev_pid = -1;
static int conn = -1, peer = -1, memfd = -1;
static uint8_t *mem;
static int kick[2] = {-1, -1}, call[2] = {-1, -1};

static void put16(uint64_t gpa, uint16_t v) { memcpy(mem + gpa, &v, 2); }
static uint16_t get16(uint64_t gpa) { return __atomic_load_n((uint16_t *)(mem + gpa), __ATOMIC_ACQUIRE); }
static uint32_t get32(uint64_t gpa) { uint32_t v; memcpy(&v, mem + gpa, 4); return v; }

static void desc(int q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags)
{
    uint8_t *d = mem + ring_gpa[q] + 16 * i;
    uint16_t next = 0;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
}

/* Make HEAD available as entry IDX of queue Q and kick the device. */
static void offer(int q, uint16_t idx, uint16_t head)
{
    put16(ring_gpa[q] + 0x1000 + 4 + 2 * (idx % QSIZE), head);
    __atomic_store_n((uint16_t *)(mem + ring_gpa[q] + 0x1000 + 2), (uint16_t)(idx + 1),
                     __ATOMIC_RELEASE);
    eventfd_write(kick[q], 1);
}

/* Wait up to 5 s for queue Q's used index to reach IDX. */
static int wait_used(int q, uint16_t idx)
{
    for (int i = 0; i < 500; i++) {
        if (get16(ring_gpa[q] + 0x2000 + 2) == idx)
            return 1;
        usleep(10000);
    }
    return 0;
}

/* Send one message; with FDS attached when NFDS > 0. */
static int vu_send(uint32_t req, uint32_t flags, const void *payload, uint32_t size,
                   const int *fds, int nfds)
{
    uint8_t buf[12 + 300];
    uint32_t hdr[3] = {req, 1 | flags, size};
    memcpy(buf, hdr, 12);
    if (size)
        memcpy(buf + 12, payload, size);
    struct iovec v = {buf, 12 + size};
    char ctl[CMSG_SPACE(8 * sizeof(int))];
    struct msghdr mh = {.msg_iov = &v, .msg_iovlen = 1};
    if (nfds) {
        mh.msg_control = ctl;
        mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    return sendmsg(conn, &mh, MSG_NOSIGNAL) == (ssize_t)(12 + size);
}

static int vu_u64(uint32_t req, uint64_t v)
{
    return vu_send(req, 0, &v, 8, NULL, 0);
}

/* Read a reply carrying a u64 (a value or a REPLY_ACK status). */
static int vu_reply(uint32_t req, uint64_t *v)
{
    uint8_t buf[20];
    struct pollfd p = {conn, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1 || recv(conn, buf, 20, MSG_WAITALL) != 20)
        return 0;
    uint32_t hdr[3];
    memcpy(hdr, buf, 12);
    memcpy(v, buf + 12, 8);
    return hdr[0] == req && hdr[2] == 8;
}

static int vu_state(uint32_t req, uint32_t index, uint32_t num)
{
    uint32_t s[2] = {index, num};
    return vu_send(req, 0, s, 8, NULL, 0);
}

/* The whole log of the device so far. */
static char *device_log(void)
{
    static char text[1 << 16];
    int fd = open(log_path, O_RDONLY);
    ssize_t n = fd < 0 ? 0 : read(fd, text, sizeof text - 1);
    text[n > 0 ? n : 0] = '\0';
    if (fd >= 0)
        close(fd);
    return text;
}

/* Wait up to 5 s for WHAT in the device's log. */
static int log_has(const char *what)
{
    for (int i = 0; i < 500; i++) {
        if (strstr(device_log(), what))
            return 1;
        usleep(10000);
    }
    return 0;
}

static int unix_addr(struct sockaddr_un *sa, const char *name)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    snprintf(sa->sun_path, sizeof sa->sun_path, "%s/%s", dir, name);
    return (int)sizeof *sa;
}

/* Start the device on a dgram backend whose far end is this test's
** socket, and connect to it as QEMU would. */
static int start_device(void)
{
    struct sockaddr_un sa;
    const char *bin = getenv("VHOST_USER_NET") ? getenv("VHOST_USER_NET")
                                               : "build/vhost-user-net";
    char sock[100], spec[300];
    snprintf(sock, sizeof sock, "%s/vu.sock", dir);
    snprintf(spec, sizeof spec, "dgram,local=unix:%s/dev,remote=unix:%s/peer", dir, dir);
    snprintf(log_path, sizeof log_path, "%s/log", dir);
    peer = socket(AF_UNIX, SOCK_DGRAM, 0);
    int big = 1 << 20;
    setsockopt(peer, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (bind(peer, (struct sockaddr *)&sa, (socklen_t)unix_addr(&sa, "peer")) < 0)
        return 0;
    CHECK(access(bin, X_OK) == 0, "%s: build it first (make)", bin);
    dev_pid = fork();
    if (dev_pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(bin, bin, "--socket", sock, "--allow-files", dir, spec, (char *)NULL);
        _exit(127);
    }
    if (!log_has("listening on"))
        return 0;
    conn = socket(AF_UNIX, SOCK_STREAM, 0);
    return connect(conn, (struct sockaddr *)&sa, (socklen_t)unix_addr(&sa, "vu.sock")) == 0;
}

/* QEMU's order: features, protocol features, owner, memory, then each
** ring's size, base, addresses, kick and call, and enable. */
static int negotiate(void)
{
    uint64_t f, pf, ack;
    if (!vu_send(VU_GET_FEATURES, 0, NULL, 0, NULL, 0) || !vu_reply(VU_GET_FEATURES, &f))
        return 0;
    CHECK(f & VU_F_PROTOCOL_FEATURES && f & NETBE_F_CSUM && f & NETBE_F_VERSION_1,
          "features 0x%llx", (unsigned long long)f);
    if (!vu_send(VU_GET_PROTOCOL_FEATURES, 0, NULL, 0, NULL, 0) ||
        !vu_reply(VU_GET_PROTOCOL_FEATURES, &pf) || !(pf & VU_PF_REPLY_ACK))
        return 0;
    vu_u64(VU_SET_PROTOCOL_FEATURES, VU_PF_REPLY_ACK);
    vu_send(VU_SET_OWNER, 0, NULL, 0, NULL, 0);
    vu_u64(VU_SET_FEATURES, NETBE_F_VERSION_1 | NETBE_F_CSUM | VU_F_PROTOCOL_FEATURES);
    struct { uint32_t n, pad; uint64_t gpa, size, uva, off; } table =
        {1, 0, 0, MEM_SIZE, (uint64_t)(uintptr_t)mem, 0};
    if (!vu_send(VU_SET_MEM_TABLE, VU_NEED_REPLY, &table, sizeof table, &memfd, 1) ||
        !vu_reply(VU_SET_MEM_TABLE, &ack) || ack != 0)
        return 0;
    for (int q = 0; q < 2; q++) {
        uint64_t base = (uint64_t)(uintptr_t)mem + ring_gpa[q];
        struct { uint32_t index, flags; uint64_t desc, used, avail, log; } addr =
            {(uint32_t)q, 0, base, base + 0x2000, base + 0x1000, 0};
        kick[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        call[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        uint64_t index = (uint64_t)q;
        if (!vu_state(VU_SET_VRING_NUM, (uint32_t)q, QSIZE) ||
            !vu_state(VU_SET_VRING_BASE, (uint32_t)q, 0) ||
            !vu_send(VU_SET_VRING_ADDR, 0, &addr, sizeof addr, NULL, 0) ||
            !vu_send(VU_SET_VRING_KICK, 0, &index, 8, &kick[q], 1) ||
            !vu_send(VU_SET_VRING_CALL, 0, &index, 8, &call[q], 1))
            return 0;
    }
    for (int q = 0; q < 2; q++)
        if (!vu_send(VU_SET_VRING_ENABLE, VU_NEED_REPLY, (uint32_t[2]){(uint32_t)q, 1}, 8,
                     NULL, 0) || !vu_reply(VU_SET_VRING_ENABLE, &ack) || ack != 0)
            return 0;
    return 1;
}

static uint16_t csum_fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)s;
}

static uint32_t sum16(const uint8_t *p, size_t len, uint32_t s)
{
    for (size_t i = 0; i < len; i++)
        s += i & 1 ? p[i] : (uint32_t)p[i] << 8;
    return s;
}

/* An IPv4 UDP frame of LEN bytes at F whose checksum the guest left
** partial (the pseudo-header sum in the field), as Linux does with CSUM. */
static void udp_frame(uint8_t *f, size_t len, uint8_t seed)
{
    size_t udp_len = len - 34;
    memset(f, 0, len);
    memcpy(f, "\x02\0\0\0\0\x02\x52\x54\0\x12\x34\x56\x08\x00", 14);
    uint8_t *ip = f + 14, *udp = f + 34;
    ip[0] = 0x45;
    ip[2] = (uint8_t)((len - 14) >> 8);
    ip[3] = (uint8_t)(len - 14);
    ip[8] = 64;
    ip[9] = 17;
    ip[12] = 10; ip[15] = 15;
    ip[16] = 10; ip[19] = 2;
    uint16_t c = (uint16_t)~csum_fold(sum16(ip, 20, 0));
    ip[10] = (uint8_t)(c >> 8);
    ip[11] = (uint8_t)c;
    udp[0] = 0x30; udp[1] = 0x39; udp[2] = 0x00; udp[3] = 0x35;
    udp[4] = (uint8_t)(udp_len >> 8);
    udp[5] = (uint8_t)udp_len;
    for (size_t i = 8; i < udp_len; i++)
        udp[i] = (uint8_t)(seed + i);
    uint16_t partial = csum_fold(sum16(ip + 12, 8, 0) + 17 + (uint32_t)udp_len);
    udp[6] = (uint8_t)(partial >> 8);
    udp[7] = (uint8_t)partial;
}

/* A 200 KB tx chain with a checksum header: given back unread with used
** length 0, counted by the device as an oversize drop. */
static void test_oversize_tx(void)
{
    uint8_t *h = mem + TX_BIG_GPA;
    udp_frame(h + HL, 1000, 1);
    h[0] = 1;                                    /* NEEDS_CSUM */
    h[6] = 34;                                   /* csum_start: the UDP header */
    h[8] = 6;                                    /* csum_offset: its checksum */
    desc(1, 0, TX_BIG_GPA, BIG, 0);
    offer(1, 0, 0);
    CHECK(wait_used(1, 1), "the 200 KB chain never came back (used idx %u)",
          get16(ring_gpa[1] + 0x2000 + 2));
    CHECK(get32(ring_gpa[1] + 0x2000 + 4) == 0 && get32(ring_gpa[1] + 0x2000 + 8) == 0,
          "used entry: head %u length %u, expected head 0 length 0",
          get32(ring_gpa[1] + 0x2000 + 4), get32(ring_gpa[1] + 0x2000 + 8));
    kill(dev_pid, SIGUSR1);
    CHECK(log_has("queue 1 (tx): 0 frames, 1 dropped, of them 1 oversize"),
          "the device did not count the drop:\n%s", device_log());
}

/* The queue goes on: a normal frame reaches the peer, checksum completed. */
static void test_tx_still_serving(void)
{
    uint8_t *h = mem + TX_SMALL_GPA, want[200], got[300];
    const size_t len = 90;
    memset(h, 0, HL);
    udp_frame(h + HL, len, 2);
    h[0] = 1;
    h[6] = 34;
    h[8] = 6;
    memcpy(want, h + HL, len);
    desc(1, 1, TX_SMALL_GPA, HL + len, 0);
    offer(1, 1, 1);
    struct pollfd p = {peer, POLLIN, 0};
    ssize_t n = poll(&p, 1, 5000) == 1 ? recv(peer, got, sizeof got, 0) : -1;
    CHECK(n == (ssize_t)len, "the peer got %zd bytes, expected %zu", n, len);
    if (n != (ssize_t)len)
        return;
    uint32_t s = sum16(got + 26, 8, 0) + 17 + (uint32_t)(len - 34);
    CHECK(csum_fold(sum16(got + 34, len - 34, s)) == 0xffff, "UDP checksum not completed");
    CHECK(memcmp(got, want, 40) == 0 && memcmp(got + 42, want + 42, len - 42) == 0,
          "the frame changed on the way");
    CHECK(wait_used(1, 2) && get32(ring_gpa[1] + 0x2000 + 12) == 1, "used entry for head 1");
}

/* Interrupts raised on queue Q since the last look (its call eventfd). */
static uint64_t calls(int q)
{
    eventfd_t v = 0;
    return eventfd_read(call[q], &v) == 0 ? v : 0;
}

/* Make N small tx chains available as entries FIRST... at once, with one
** kick, and check that they all reach the peer. */
static void tx_batch(uint16_t first, int n)
{
    uint8_t got[300];
    for (int k = 0; k < n; k++) {
        uint16_t head = (uint16_t)((first + k) % QSIZE);
        uint64_t gpa = TX_SMALL_GPA + 256 * (uint64_t)head;
        memset(mem + gpa, 0, HL);
        udp_frame(mem + gpa + HL, 60, (uint8_t)(10 + k));
        desc(1, head, gpa, HL + 60, 0);
        put16(ring_gpa[1] + 0x1000 + 4 + 2 * head, head);
    }
    __atomic_store_n((uint16_t *)(mem + ring_gpa[1] + 0x1000 + 2), (uint16_t)(first + n),
                     __ATOMIC_RELEASE);
    eventfd_write(kick[1], 1);
    CHECK(wait_used(1, (uint16_t)(first + n)), "the batch was not used (used idx %u)",
          get16(ring_gpa[1] + 0x2000 + 2));
    for (int k = 0; k < n; k++) {
        struct pollfd p = {peer, POLLIN, 0};
        ssize_t len = poll(&p, 1, 5000) == 1 ? recv(peer, got, sizeof got, 0) : -1;
        CHECK(len == 60, "frame %d of the batch: %zd bytes, expected 60", k, len);
    }
    usleep(100000);              /* an interrupt per frame would be in by now */
}

/* Notification suppression both ways, without EVENT_IDX: one interrupt for
** a whole batch, none while the guest asks for none, and kicks asked for
** again (NO_NOTIFY clear) when the device has drained the ring. */
static void test_batch_notifications(void)
{
    uint64_t n;
    calls(1);
    tx_batch(2, 6);
    CHECK((n = calls(1)) == 1, "%llu interrupts for a batch of 6, expected 1",
          (unsigned long long)n);
    CHECK(get16(ring_gpa[1] + 0x2000) == 0, "the device waits with NO_NOTIFY set: no kick "
          "would wake it");
    put16(ring_gpa[1] + 0x1000, 1);              /* VRING_AVAIL_F_NO_INTERRUPT */
    tx_batch(8, 3);
    CHECK((n = calls(1)) == 0, "%llu interrupts with NO_INTERRUPT set", (unsigned long long)n);
    put16(ring_gpa[1] + 0x1000, 0);
}

/* A datagram longer than any frame is skipped; the guest gets the next. */
static void test_rx_bound(void)
{
    static uint8_t big[100000];
    uint8_t small[60];
    struct sockaddr_un sa;
    socklen_t sl = (socklen_t)unix_addr(&sa, "dev");
    for (unsigned i = 0; i < 2; i++)
        desc(0, i, RX_BUF_GPA + i * RX_BUF_LEN, RX_BUF_LEN, 2 /* WRITE */);
    offer(0, 0, 0);
    offer(0, 1, 1);
    memset(big, 0xab, sizeof big);
    memset(small, 0, sizeof small);
    memcpy(small, "\x52\x54\0\x12\x34\x56\x02\0\0\0\0\x02\x08\x06", 14);
    for (size_t i = 14; i < sizeof small; i++)
        small[i] = (uint8_t)i;
    CHECK(sendto(peer, big, sizeof big, 0, (struct sockaddr *)&sa, sl) == sizeof big,
          "send 100000: %s", strerror(errno));
    CHECK(sendto(peer, small, sizeof small, 0, (struct sockaddr *)&sa, sl) == sizeof small,
          "send 60");
    CHECK(wait_used(0, 1), "no frame reached the guest");
    CHECK(get32(ring_gpa[0] + 0x2000 + 4) == 0 && get32(ring_gpa[0] + 0x2000 + 8) == HL + 60 &&
          memcmp(mem + RX_BUF_GPA + HL, small, 60) == 0,
          "the guest got head %u, %u bytes: expected the 60-byte frame behind the big one",
          get32(ring_gpa[0] + 0x2000 + 4), get32(ring_gpa[0] + 0x2000 + 8));
    usleep(100000);
    CHECK(get16(ring_gpa[0] + 0x2000 + 2) == 1, "more than one frame reached the guest");
    kill(dev_pid, SIGUSR1);
    CHECK(log_has("queue 0 (rx): 1 frames") && log_has("drops 1/0"),
          "counters after the oversize datagram:\n%s", device_log());
}

static int device_alive(void)
{
    return waitpid(dev_pid, NULL, WNOHANG) == 0;
}

/* A new connection, as QEMU makes after a restart. */
static int reconnect(void)
{
    struct sockaddr_un sa;
    close(conn);
    conn = socket(AF_UNIX, SOCK_STREAM, 0);
    return connect(conn, (struct sockaddr *)&sa, (socklen_t)unix_addr(&sa, "vu.sock")) == 0;
}

/* SET_MEM_TABLE of one region: guest address 0, SIZE bytes of FD at
** user address UVA. Returns the REPLY_ACK status, or -1 without one. */
static int64_t mem_table(uint64_t size, uint64_t uva, int fd)
{
    struct { uint32_t n, pad; uint64_t gpa, size, uva, off; } table = {1, 0, 0, size, uva, 0};
    uint64_t ack;
    if (!vu_send(VU_SET_MEM_TABLE, VU_NEED_REPLY, &table, sizeof table, &fd, 1) ||
        !vu_reply(VU_SET_MEM_TABLE, &ack))
        return -1;
    return (int64_t)ack;
}

/* A hostile front-end: a memory table that moves the running rings out of
** guest memory, then one whose region runs past its file. Each is refused
** with its reason and ends that connection; the device lives, and a new
** connection gets a working device. */
static void test_hostile_tables(void)
{
    int small = memfd_create("small", MFD_CLOEXEC);
    CHECK(small >= 0 && ftruncate(small, 4096) == 0, "memfd");
    CHECK(mem_table(4096, 0x100000000ull, small) == 1, "a table without the rings was taken");
    eventfd_write(kick[1], 1);                   /* a ring left in unmapped memory would crash */
    usleep(100000);
    CHECK(device_alive() && log_has("ring addresses are outside the memory table"),
          "after moving the rings away:\n%s", device_log());
    close(small);

    CHECK(reconnect() && vu_u64(VU_SET_PROTOCOL_FEATURES, VU_PF_REPLY_ACK), "reconnect");
    CHECK(mem_table(2 * MEM_SIZE, (uint64_t)(uintptr_t)mem, memfd) == 1,
          "a region past the end of its file was taken");
    usleep(100000);
    CHECK(device_alive() && log_has("needs 2097152 bytes of its file, which has 1048576"),
          "after a region past its file:\n%s", device_log());

    for (int q = 0; q < 2; q++) {
        close(kick[q]);
        close(call[q]);
        memset(mem + ring_gpa[q], 0, 0x3000);
    }
    CHECK(reconnect() && negotiate(), "a new connection could not set the device up");
    uint8_t *h = mem + TX_SMALL_GPA, got[300];
    memset(h, 0, HL);
    udp_frame(h + HL, 60, 3);
    desc(1, 0, TX_SMALL_GPA, HL + 60, 0);
    offer(1, 0, 0);
    struct pollfd p = {peer, POLLIN, 0};
    ssize_t n = poll(&p, 1, 5000) == 1 ? recv(peer, got, sizeof got, 0) : -1;
    CHECK(n == 60 && memcmp(got, h + HL, 60) == 0, "the device no longer serves: %zd", n);
}

/* SIGTERM ends the device cleanly: exit status 0, no sanitizer report. */
static void test_clean_exit(void)
{
    int status = -1;
    kill(dev_pid, SIGTERM);
    for (int i = 0; i < 500 && waitpid(dev_pid, &status, WNOHANG) == 0; i++)
        usleep(10000);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "device status 0x%x:\n%s", status,
          device_log());
    CHECK(!strstr(device_log(), "Sanitizer"), "sanitizer report:\n%s", device_log());
    dev_pid = -1;
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/netbe-vhost-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    memfd = memfd_create("guest", MFD_CLOEXEC);
    if (memfd < 0 || ftruncate(memfd, MEM_SIZE) < 0)
        return 1;
    mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    int ready = mem != MAP_FAILED && start_device() && negotiate();
    CHECK(ready, "could not bring the device up:\n%s", device_log());
    if (ready) {
        RUN(test_oversize_tx());
        RUN(test_tx_still_serving());
        RUN(test_batch_notifications());
        RUN(test_rx_bound());
        RUN(test_hostile_tables());
        RUN(test_clean_exit());
    }
    if (dev_pid > 0) {
        kill(dev_pid, SIGKILL);
        waitpid(dev_pid, NULL, 0);
    }
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        CHECK(0, "cannot remove %s", dir);
    return check_summary();
}
