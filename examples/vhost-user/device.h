/*
** device.h: a vhost-user net device behind which any netbe backend sends
** and receives. It takes the messages of one connection (dev_message),
** maps the guest's memory, serves the rx and tx rings of each queue pair
** with netbe's virtqueue helper and counts what each ring moved and
** dropped. The socket that carries the messages is the caller's (main.c,
** or a fuzzer): replies go to conn_fd.
**
** A backend with several queues (a Linux tap with queues=N) gives the
** guest N queue pairs (VIRTIO_NET_F_MQ): pair I is served by queue I of
** the backend, each pair on an event base and a thread of its own, pair 0
** on the caller's base. Other backends serve one pair. Ring state is
** touched only on its pair's thread: the messages that change it run
** there (pair_call) while the caller waits.
*/
#ifndef DEVICE_H
#define DEVICE_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>

#include "netbe.h"
#include "vhost_user.h"

#define RXQ 0                    /* a pair's rings: rx, then tx */
#define TXQ 1
/* The longest chain we take (Linux uses ~20): netbe_recv takes IOV_MAX - 1
** buffers, and an rx chain may need one more of ours. */
#define IOVMAX 1022
#define NET_F_MQ (1ull << 22)    /* VIRTIO_NET_F_MQ */
/* VIRTIO_F_IN_ORDER: every ring hands chains back in the order it took
** them (a chain taken back with netbe_vq_unpop or set_base is taken again
** first), so a driver may free its buffers in order without reading the
** used ring's ids. */
#define F_IN_ORDER (1ull << 35)
/* The longest a busy ring waits to be looked at; off by default: measured
** against DPDK's driver it cost CPU per frame (README, Benchmarks). */
#define COALESCE_DEFAULT_US 0

struct event_base;
struct event;

struct mapping {
    uint64_t gpa, size, uva;
    uint8_t *host;
    void *base;
    size_t len;
};

struct dev;
struct pair;

struct vring {
    struct pair *pair;
    netbe_vq *vq;
    int index;                   /* the device's: 2 * pair + RXQ or TXQ */
    unsigned num;
    uint16_t base;
    int have_addr, started, enabled;
    uint64_t desc_uva, avail_uva, used_uva;
    int kick_fd, call_fd, err_fd;
    struct event *kick_ev, *resume_ev;
    int et;                      /* edge-triggered events: no read per wakeup */
    /* Under load the ring is looked at again after an interval instead of
    ** on the next kick or backend readiness (ring_coalesce). */
    int timer_fd;
    struct event *timer_ev;
    unsigned wait_us;            /* the interval; 0: waiting for a notification */
    int look;                    /* frames taken in the turns of this look so far */
    /* Frames moved; frames dropped, of them those too long (for a frame,
    ** the MTU, or the guest's buffers). Chains netbe_vq_pop gave back for
    ** being longer than any frame count on top (netbe_vq_dropped). Only
    ** the pair's thread writes them. */
    uint64_t frames, drops, oversize;
    /* Time spent watching the ring after it ran dry (--poll): what of the
    ** device's CPU went to waiting for the guest, not to frames. */
    uint64_t watched_ns;
};

struct pair {
    struct dev *dev;
    int index;
    netbe *be;                   /* queue INDEX of the device's backend */
    struct event_base *base;     /* pair 0: the device's; others their own */
    pthread_t thread;
    int threaded;                /* BASE runs on THREAD */
    struct vring q[2];
    /* A call from the device's thread, run on this pair's (pair_call). */
    pthread_mutex_t lock;
    pthread_cond_t done;
    struct event *call_ev;
    int (*call_fn)(struct pair *p, void *arg);
    void *call_arg;
    int call_rc, call_done;
    /* A tx chain the backend refused with EAGAIN, resent on NETBE_EV_TX. */
    int tx_held;
    struct netbe_vq_chain tx_chain;
    struct iovec tx_iov[IOVMAX];
    /* Receive: the buffers of the chains one frame fills, each chain's
    ** head and buffer count, and (mergeable buffers) a frame that spans
    ** several chains, gathered in rx_frame until the guest has room. */
    struct iovec rx_iov[2 * IOVMAX];
    uint16_t rx_heads[2 * IOVMAX], rx_nbufs[2 * IOVMAX];
    uint32_t rx_lens[2 * IOVMAX];
    uint8_t *rx_frame;           /* NETBE_MAX_FRAME + 12 bytes */
    size_t rx_len;               /* of the frame waiting there; 0: none */
};

struct dev {
    struct event_base *base;
    netbe *be;                   /* the backend as opened: pair 0's queue */
    int conn_fd;                 /* where replies go; -1 without a connection */
    uint64_t offered, features, protocol;
    unsigned hdr_len, mtu;
    uint8_t mac[6];
    struct mapping mem[VU_MAX_REGIONS];
    int nmem;
    int npairs;
    struct pair *pairs[VU_MAX_PAIRS];
    unsigned coalesce_us;        /* the longest interval; 0: never wait */
    unsigned poll_us;            /* how long a dry ring is watched; 0: not */
};

/* Print "vhost-user-net: ..." on stderr. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Open the backend CFG on BASE and set D up with no connection, with one
** queue pair per queue of the backend; pairs after the first get threads
** of their own, so with a multiqueue backend libevent must be thread-aware
** (evthread_use_pthreads() before BASE was made). NAME seeds the MAC when
** the backend has none. Returns 0, or -1 having said why. */
int dev_open(struct dev *d, struct event_base *base, const netbe_config *cfg,
             const char *name);

/* Check message M (its header was checked with vu_msg_check_header) and
** act on it, replying on conn_fd when it asks. Takes the descriptors it
** keeps out of M; the caller closes the rest. A negative return means the
** connection must end (the front-end broke the protocol or went away). */
int dev_message(struct dev *d, struct vu_msg *m);

/* The connection ended: forget the guest (rings, memory, features). */
void dev_disconnect(struct dev *d);

/* Write each ring's counters and the backend's to OUT, one line each. */
void dev_report(struct dev *d, FILE *out);

/* Forget the guest, stop the pairs' threads and close the backend. */
void dev_close(struct dev *d);

#endif
