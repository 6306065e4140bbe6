/*
** vhost_msg.c: libFuzzer harness for the vhost-user messages of
** examples/vhost-user-net: the header check, the field-by-field check of
** every request and the device acting on what passes, with real guest
** memory (memfds) and eventfds, no socket.
**
** An input is a stream of messages, each a control byte and then the
** message as it comes on the wire (12-byte header, payload):
**   control & 3          descriptors passed with the message (0 to 3)
**   control >> 2 & 1     their kind: 0 a memfd of guest memory, 1 an eventfd
**   control >> 3 & 3     memfd size: 4 KiB, 64 KiB, 256 KiB, 1 MiB
** A control byte of 0xff ends the stream; the bytes after it are the
** start of every memfd (rings and frames the guest wrote). A message
** whose header fails, or that the device refuses, ends the connection as
** on the socket; the next message starts a new one. Each input starts
** from a device with no connection, a null backend behind it.
**
** The sources of the example are included so that this file and netbe.c
** build the harness:
**   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/vhost_msg.c \
**     netbe.c $(pkg-config --cflags --libs lua5.4 libevent slirp) -lpthread
** VHOST_MSG_VERBOSE=1 keeps the device's messages on stderr and prints its
** counters after each input.
*/
#define _GNU_SOURCE
#include "examples/vhost-user/vhost_user.c"
#include "examples/vhost-user/device.c"

#include <sys/mman.h>

static struct dev fz_dev;
static struct event_base *fz_base;
static int fz_peer = -1;                 /* the front-end's end: replies land here */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    int sv[2];
    /* The device says why it refuses each message: a flood when fuzzing. */
    if (!getenv("VHOST_MSG_VERBOSE"))
        stderr = fopen("/dev/null", "w");
    fz_base = event_base_new();
    netbe_config *cfg = netbe_config_new();
    if (!fz_base || !cfg || netbe_config_set(cfg, "backend", "null") < 0 ||
        dev_open(&fz_dev, fz_base, cfg, "fuzz") < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    netbe_config_free(cfg);
    fz_dev.conn_fd = sv[0];
    fz_peer = sv[1];
    return 0;
}

/* A memfd of SIZE bytes that starts with the guest image IMG. */
static int fz_memfd(size_t size, const uint8_t *img, size_t imglen)
{
    int fd = memfd_create("guest", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
        abort();
    if (imglen && pwrite(fd, img, imglen < size ? imglen : size, 0) < 0)
        abort();
    return fd;
}

/* Give message M the descriptors control byte C asks for. */
static void fz_fds(struct vu_msg *m, uint8_t c, const uint8_t *img, size_t imglen)
{
    static const size_t sizes[4] = {4096, 65536, 262144, 1 << 20};
    for (int i = 0; i < (c & 3); i++)
        m->fds[m->nfds++] = c >> 2 & 1 ? eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
                                       : fz_memfd(sizes[c >> 3 & 3], img, imglen);
}

/* The connection ends: as main.c does, and the replies are thrown away. */
static void fz_disconnect(void)
{
    uint8_t junk[4096];
    dev_disconnect(&fz_dev);
    fz_dev.mtu = netbe_get_mtu(fz_dev.be);
    while (recv(fz_peer, junk, sizeof junk, 0) > 0)
        ;
}

/* Read the message at OFF of the N bytes at D into M (header and, when
** the header passes, payload). Returns the offset after it, or 0 at the
** end of the stream: the 0xff mark, or a message cut short. *OK is the
** header check's result. */
static size_t fz_next(const uint8_t *d, size_t n, size_t off, struct vu_msg *m, int *ok)
{
    if (n - off < 1 + VU_HDR_SIZE || d[off] == 0xff)
        return 0;
    memset(m, 0, sizeof *m);
    memcpy(m, d + off + 1, VU_HDR_SIZE);
    off += 1 + VU_HDR_SIZE;
    *ok = vu_msg_check_header(m, NULL, 0) == 0;
    if (!*ok)
        return off;
    if (n - off < m->size)
        return 0;
    memcpy(&m->p, d + off, m->size);
    return off + m->size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vu_msg m;
    uint8_t junk[4096];
    size_t off = 0, next;
    int ok;
    /* The guest image follows the mark that ends the messages. */
    while ((next = fz_next(data, size, off, &m, &ok)))
        off = next;
    const uint8_t *img = off < size && data[off] == 0xff ? data + off + 1 : data + size;
    size_t imglen = (size_t)(data + size - img);
    for (off = 0; (next = fz_next(data, size, off, &m, &ok)); off = next) {
        int rc = -EINVAL;
        if (ok) {
            fz_fds(&m, data[off], img, imglen);
            rc = dev_message(&fz_dev, &m);
        }
        for (int i = 0; i < m.nfds; i++)
            close(m.fds[i]);
        if (rc < 0)
            fz_disconnect();
        event_base_loop(fz_base, EVLOOP_NONBLOCK);
        while (recv(fz_peer, junk, sizeof junk, 0) > 0)
            ;
    }
    if (getenv("VHOST_MSG_VERBOSE"))
        dev_report(&fz_dev, stderr);
    fz_disconnect();
    return 0;
}
