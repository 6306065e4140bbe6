/*
** vhost-user-net: a vhost-user net device with any netbe backend behind it.
**
**   vhost-user-net --socket PATH [--allow-exec] [--allow-files DIR]
**                  [--disable FEATURE[,FEATURE...]] [--coalesce USEC] [--poll USEC]
**                  BACKEND-SPEC
**
** --allow-exec and --allow-files give the backend's config the permissions
** of netbe_config_allow (a UNIX socket path or tftp= under DIR; guestfwd=).
** --disable keeps features from the guest, by QEMU's names for them:
** indirect_desc, event_idx, mrg_rxbuf, mq, in_order. --coalesce sets the
** longest a busy ring waits before it is looked at again (default 0: look
** on every notification), --poll how long a busy ring that ran dry is
** watched (default 0: not at all), see below.
** QEMU connects to PATH and hands us the guest's memory and virtqueues:
**
**   -object memory-backend-memfd,id=mem0,size=256M,share=on
**   -machine pc,memory-backend=mem0
**   -chardev socket,id=c0,path=PATH,reconnect=1
**   -netdev vhost-user,id=n0,chardev=c0 -device virtio-net-pci,netdev=n0
**
** Frames move between the guest's rx/tx virtqueues (walked with netbe's
** netbe_vq_* helper) and the backend (netbe_send/netbe_recv) with the
** virtio-net header the guest negotiated, so offloads the backend can do
** (netbe_get_cap) are offered to the guest, and with mergeable receive
** buffers (VIRTIO_NET_F_MRG_RXBUF) when the guest takes them. Each ring
** is served in batches: every chain the guest made available, then one
** used-ring update and at most one interrupt for all of them; the guest
** is asked not to kick while a ring is being served (EVENT_IDX, or
** VRING_USED_F_NO_NOTIFY). With --coalesce, under load a ring is not
** served on every kick, as a NIC coalesces interrupts: when a look at it
** finds 32 frames or more, the guest (or the backend) is not asked to notify, and the
** ring is looked at again after an interval sized to find about half a
** ring of frames (5 us to --coalesce); a look that finds fewer goes back
** to waiting for a notification; it adds at most that interval of
** latency. Against DPDK's busy-polling driver it cost more CPU per 64-byte
** frame than it saved (the timer's wakeups are no cheaper than the
** kicks, which the batching already keeps to one per look), so it is off
** unless asked for. With --poll, a ring that ran dry after a look of 32
** frames or more is watched for up to USEC microseconds before the guest
** is asked to kick, as Linux vhost-net's busyloop_timeout does: under a
** steady load the guest refills it sooner than a kick and a wakeup would
** take, and neither side pays for them; it costs at most USEC of CPU
** when the load stops, and a thin flow never makes the device spin. The
** device never busy-polls: idle, it sleeps until notified.
**
** A tap opened with queues=N (IFF_MULTI_QUEUE) gives the guest N queue
** pairs (VIRTIO_NET_F_MQ; QEMU: -netdev vhost-user,...,queues=N and
** -device virtio-net-pci,mq=on), each served on a thread of its own by
** its own queue of the tap; a pair the guest leaves unused has its queue
** detached. Other backends serve one pair. One QEMU is served at a time;
** when it goes away (shut down, killed, restarted) the device forgets the
** guest and waits for the next connection. A guest reboot stops and
** re-sets the rings over the same connection.
**
** Nothing from the guest or QEMU is trusted. A tx chain longer than any
** frame goes back to the guest unread and is counted; so is a frame the
** backend refuses or one too big for the guest's receive buffers; the
** queues go on. Every control message is checked field by field
** (vhost_user.c); one that fails is named on stderr and ends the
** connection, never the device.
**
** Runs until SIGINT or SIGTERM, then prints each queue's counters (frames,
** drops, oversize drops, time spent watching it dry with --poll) and the
** backend's; SIGUSR1 prints them at any time. VHOST_USER_NET_DEBUG=1 in
** the environment logs every control message to stderr.
**
** Under TCG, QEMU 7.2 crashes in vhost_net_start when the virtio-net-pci
** device uses MSI-X with a vhost-user backend; give the device vectors=0.
**
** The protocol is QEMU's docs/interop/vhost-user.rst; only what a net device
** needs is offered (no dirty logging, no postcopy, no packed rings).
**
** Files: main.c (socket and signals), device.c (memory, rings, data path,
** message handling), vhost_user.c (message decoding and checks).
*/
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "device.h"

struct server {
    struct dev dev;
    const char *path;
    struct netbe_unix_id bound;  /* PATH, once bound */
    unsigned allow;              /* NETBE_ALLOW_* for the backend's config */
    const char *allow_dir;
    uint64_t disabled;           /* features --disable keeps from the guest */
    long coalesce_us;            /* --coalesce, or -1 */
    long poll_us;                /* --poll, or -1 */
    int listen_fd;
    struct event *accept_ev, *conn_ev;
};

/* Read one message with its fds into M. Returns 0, or -1 when the peer is
** gone or sent something that is not a message; M's fds are set either way. */
static int read_msg(int fd, struct vu_msg *m)
{
    char ctl[CMSG_SPACE(VU_MAX_FDS * sizeof(int))], err[300], name[32];
    struct iovec v = {m, VU_HDR_SIZE};
    struct msghdr mh = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl,
                        .msg_controllen = sizeof ctl};
    memset(m, 0, sizeof *m);
    ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); n > 0 && c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            if (k > VU_MAX_FDS - m->nfds)
                k = VU_MAX_FDS - m->nfds;
            memcpy(m->fds + m->nfds, CMSG_DATA(c), k * sizeof(int));
            m->nfds += k;
        }
    if (n != VU_HDR_SIZE) {
        if (n != 0)
            say("short message header (%zd bytes): %s", n, n < 0 ? strerror(errno) : "");
        return -1;
    }
    if (mh.msg_flags & MSG_CTRUNC) {
        say("%s: more than %d descriptors", vu_request_name(m->request, name, sizeof name),
            VU_MAX_FDS);
        return -1;
    }
    if (vu_msg_check_header(m, err, sizeof err) < 0) {
        say("%s", err);
        return -1;
    }
    if (m->size && recv(fd, &m->p, m->size, MSG_WAITALL) != (ssize_t)m->size) {
        say("%s: payload of %u bytes cut short", vu_request_name(m->request, name,
            sizeof name), m->size);
        return -1;
    }
    return 0;
}

static void close_fds(struct vu_msg *m)
{
    for (int i = 0; i < m->nfds; i++)
        close(m->fds[i]);
    m->nfds = 0;
}

/* QEMU is gone: forget the guest and listen for the next one. */
static void disconnect(struct server *s)
{
    dev_disconnect(&s->dev);
    event_free(s->conn_ev);
    s->conn_ev = NULL;
    close(s->dev.conn_fd);
    s->dev.conn_fd = -1;
    event_add(s->accept_ev, NULL);
    say("disconnected; waiting for the next connection");
}

static void on_message(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    struct vu_msg m;
    int rc = read_msg(fd, &m);
    if (rc == 0 && getenv("VHOST_USER_NET_DEBUG")) {
        char name[32];
        say("%s flags 0x%x size %u fds %d", vu_request_name(m.request, name, sizeof name),
            m.flags, m.size, m.nfds);
    }
    if (rc == 0)
        rc = dev_message(&s->dev, &m);
    close_fds(&m);
    if (rc < 0)
        disconnect(s);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct server *s = arg;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    /* A peer that stops mid-message must not hang the device. */
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    s->dev.conn_fd = fd;
    s->conn_ev = event_new(s->dev.base, fd, EV_READ | EV_PERSIST, on_message, s);
    event_add(s->conn_ev, NULL);
    event_del(s->accept_ev);
    say("connected");
}

/* Listen on PATH, taking over only a stale socket there (netbe_unix_clear). */
static int listen_on(const char *path, struct netbe_unix_id *bound)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char err[NETBE_ERRMAX];
    if (strlen(path) >= sizeof sa.sun_path) {
        say("--socket '%s': at most %zu characters", path, sizeof sa.sun_path - 1);
        return -1;
    }
    strcpy(sa.sun_path, path);
    if (netbe_unix_clear(path, err, sizeof err) < 0) {
        say("--socket: %s", err);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        say("cannot listen on %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    netbe_unix_mark(path, bound);
    if (listen(fd, 1) < 0) {
        say("cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        netbe_unix_release(path, bound);
        return -1;
    }
    return fd;
}

/* The feature bits of LIST, QEMU's names separated by commas, in *BITS.
** Returns 0, or -1 having said which name is unknown. */
static int parse_disable(const char *list, uint64_t *bits)
{
    static const struct { const char *name; uint64_t bit; } names[] = {
        {"indirect_desc", NETBE_F_RING_INDIRECT_DESC}, {"event_idx", NETBE_F_RING_EVENT_IDX},
        {"mrg_rxbuf", NETBE_F_MRG_RXBUF}, {"mq", NET_F_MQ}, {"in_order", F_IN_ORDER},
    };
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ","), i = 0;
        while (i < sizeof names / sizeof names[0] &&
               (strlen(names[i].name) != len || strncmp(p, names[i].name, len) != 0))
            i++;
        if (i == sizeof names / sizeof names[0]) {
            say("--disable: unknown feature '%.*s' (expected indirect_desc, event_idx, "
                "mrg_rxbuf, mq or in_order, separated by commas)", (int)len, p);
            return -1;
        }
        *bits |= names[i].bit;
        p += len + (p[len] == ',');
    }
    return 0;
}

/* Open SPEC with the permissions given on the command line. */
static int open_device(struct server *s, struct event_base *base, const char *spec)
{
    char err[NETBE_ERRMAX];
    netbe_config *cfg = netbe_config_new();
    if (!cfg) {
        say("out of memory");
        return -1;
    }
    int rc = netbe_config_parse(cfg, spec, err, sizeof err);
    if (rc == 0 && s->allow)
        rc = netbe_config_allow(cfg, s->allow, s->allow_dir, err, sizeof err);
    if (rc < 0)
        say("%s", err);
    else
        rc = dev_open(&s->dev, base, cfg, s->path);
    netbe_config_free(cfg);
    s->dev.offered &= ~s->disabled;
    if (s->coalesce_us >= 0)
        s->dev.coalesce_us = (unsigned)s->coalesce_us;
    if (s->poll_us >= 0)
        s->dev.poll_us = (unsigned)s->poll_us;
    return rc;
}

static void on_stop(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopbreak(arg);
}

static void on_report(evutil_socket_t sig, short what, void *arg)
{
    dev_report(arg, stdout);
}

static int server_start(struct server *s, struct event_base *base, const char *spec)
{
    if (open_device(s, base, spec) < 0)
        return -1;
    s->listen_fd = listen_on(s->path, &s->bound);
    if (s->listen_fd < 0)
        return -1;
    s->accept_ev = event_new(base, s->listen_fd, EV_READ | EV_PERSIST, on_accept, s);
    if (!s->accept_ev)
        return -1;
    event_add(s->accept_ev, NULL);
    return 0;
}

static void server_stop(struct server *s)
{
    if (s->conn_ev)
        disconnect(s);
    if (s->accept_ev)
        event_free(s->accept_ev);
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        netbe_unix_release(s->path, &s->bound);
    }
    dev_report(&s->dev, stdout);
    dev_close(&s->dev);
}

/* OPTION's value ARG: microseconds from 0 to 100000, into *US. */
static int parse_us(const char *option, const char *arg, long *us)
{
    char *end;
    errno = 0;
    *us = strtol(arg, &end, 10);
    if (errno || *end || end == arg || *us < 0 || *us > 100000) {
        say("%s '%s': expected microseconds from 0 to 100000", option, arg);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct server s = {.listen_fd = -1, .coalesce_us = -1, .poll_us = -1};
    int i = 3;
    for (; i < argc - 1; i++) {
        if (strcmp(argv[i], "--allow-exec") == 0) {
            s.allow |= NETBE_ALLOW_EXEC;
        } else if (strcmp(argv[i], "--allow-files") == 0 && i + 2 < argc) {
            s.allow |= NETBE_ALLOW_FILES;
            s.allow_dir = argv[++i];
        } else if (strcmp(argv[i], "--disable") == 0 && i + 2 < argc) {
            if (parse_disable(argv[++i], &s.disabled) < 0)
                return 2;
        } else if (strcmp(argv[i], "--coalesce") == 0 && i + 2 < argc) {
            if (parse_us("--coalesce", argv[++i], &s.coalesce_us) < 0)
                return 2;
        } else if (strcmp(argv[i], "--poll") == 0 && i + 2 < argc) {
            if (parse_us("--poll", argv[++i], &s.poll_us) < 0)
                return 2;
        } else {
            break;
        }
    }
    if (argc < 4 || strcmp(argv[1], "--socket") != 0 || i != argc - 1) {
        fprintf(stderr, "usage: %s --socket PATH [--allow-exec] [--allow-files DIR] "
                "[--disable FEATURE[,FEATURE...]] [--coalesce USEC] [--poll USEC] BACKEND-SPEC\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    s.path = argv[2];
    /* Queue pairs after the first run on threads of their own. */
    if (evthread_use_pthreads() < 0) {
        say("cannot make libevent thread-aware");
        return 1;
    }
    struct event_base *base = event_base_new();
    if (!base) {
        say("cannot create an event base");
        return 1;
    }
    struct event *sigs[3] = {evsignal_new(base, SIGINT, on_stop, base),
                             evsignal_new(base, SIGTERM, on_stop, base),
                             evsignal_new(base, SIGUSR1, on_report, &s.dev)};
    for (int i = 0; i < 3; i++)
        event_add(sigs[i], NULL);
    int status = 1;
    if (server_start(&s, base, argv[argc - 1]) == 0) {
        say("listening on %s, backend %s", s.path, netbe_name(s.dev.be));
        fflush(stderr);
        event_base_dispatch(base);
        status = 0;
    }
    server_stop(&s);
    for (int i = 0; i < 3; i++)
        event_free(sigs[i]);
    event_base_free(base);
    return status;
}
