/*
** device.h: a vhost-user net device with one queue pair, behind which any
** netbe backend sends and receives. It takes the messages of one connection
** (dev_message), maps the guest's memory, serves its rx and tx rings with
** netbe's virtqueue helper and counts what each ring moved and dropped.
** The socket that carries the messages is the caller's (main.c, or a
** fuzzer): replies go to conn_fd.
*/
#ifndef DEVICE_H
#define DEVICE_H

#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>

#include "netbe.h"
#include "vhost_user.h"

#define RXQ 0
#define TXQ 1
#define IOVMAX 1024              /* longest chain we take; Linux uses ~20 */

struct event_base;
struct event;

struct mapping {
    uint64_t gpa, size, uva;
    uint8_t *host;
    void *base;
    size_t len;
};

struct dev;

struct vring {
    struct dev *dev;
    netbe_vq *vq;
    int index;
    unsigned num;
    uint16_t base;
    int have_addr, started, enabled;
    uint64_t desc_uva, avail_uva, used_uva;
    int kick_fd, call_fd, err_fd;
    struct event *kick_ev, *resume_ev;
    /* Frames moved; frames dropped, of them those too long (for a frame,
    ** the MTU, or the guest's buffers). Chains netbe_vq_pop gave back for
    ** being longer than any frame count on top (netbe_vq_dropped). */
    uint64_t frames, drops, oversize;
};

struct dev {
    struct event_base *base;
    netbe *be;
    int conn_fd;                 /* where replies go; -1 without a connection */
    uint64_t offered, features, protocol;
    unsigned hdr_len, mtu;
    uint8_t mac[6];
    struct mapping mem[VU_MAX_REGIONS];
    int nmem;
    struct vring q[VU_NQUEUES];
    /* A tx chain the backend refused with EAGAIN, resent on NETBE_EV_TX. */
    int tx_held;
    struct netbe_vq_chain tx_chain;
    struct iovec tx_iov[IOVMAX];
    struct iovec rx_iov[IOVMAX];
};

/* Print "vhost-user-net: ..." on stderr. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Open the backend CFG on BASE and set D up with no connection. NAME
** seeds the MAC when the backend has none. Returns 0, or -1 having said why. */
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

/* Forget the guest and close the backend. */
void dev_close(struct dev *d);

#endif
