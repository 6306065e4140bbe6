/*
** net_backends_netbe.c: netbe as the backend layer of bhyve's own device
** models (virtio-net, e1000), unchanged.
**
** bhyve's device models call the API of usr.sbin/bhyve/net_backends.h.
** netbe.c already has most of it, with bhyve's signatures: netbe_send,
** netbe_recv, netbe_peek_recvlen, netbe_rx_discard, netbe_rx_enable,
** netbe_rx_disable, netbe_get_cap, netbe_set_cap, netbe_get_vnet_hdr_len.
** This file adds the three it lacks, netbe_init, netbe_legacy_config and
** netbe_cleanup, and the event loop. Build bhyve with this file and netbe.c
** in place of net_backends.c and net_backend_*.c (README: "bhyve").
**
** The event loop: netbe runs on a libevent event_base, and bhyve's own
** loop (mevent) is a kqueue libevent cannot share. So one base serves every
** backend, run on a thread of this file's own, as bhyve's slirp backend runs
** a thread of its own; bhyve's receive callback is called from it. Backends
** are opened and closed on that thread too. bhyve calls netbe_rx_enable and
** netbe_rx_disable from vCPU threads while the loop runs: netbe allows that
** on a thread-aware base, hence evthread_use_pthreads() before the base.
**
** bhyve never retries a send that failed: each backend here drops and
** counts what it has no room for (netbe_set_drop_when_full).
*/
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __FreeBSD__
#include <pthread_np.h>
#endif

#include <event2/event.h>
#include <event2/thread.h>

#include "config.h"
#include "debug.h"
#include "net_backends.h"
#include "netbe.h"

/* ---- The loop thread ---- */

static struct event_base *bhyve_base;
static pthread_t bhyve_loop_thread;
static pthread_once_t bhyve_started = PTHREAD_ONCE_INIT;
static int bhyve_start_error;

/* Calls waiting to run on the loop thread signal their end here. */
static pthread_mutex_t bhyve_call_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bhyve_call_done = PTHREAD_COND_INITIALIZER;

static void *bhyve_loop(void *base)
{
    event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void bhyve_start(void)
{
    if (evthread_use_pthreads() < 0 || !(bhyve_base = event_base_new())) {
        bhyve_start_error = ENOMEM;
        return;
    }
    int e = pthread_create(&bhyve_loop_thread, NULL, bhyve_loop, bhyve_base);
    if (e) {
        event_base_free(bhyve_base);
        bhyve_base = NULL;
        bhyve_start_error = e;
        return;
    }
#ifdef __FreeBSD__
    pthread_set_name_np(bhyve_loop_thread, "netbe");
#endif
}

struct bhyve_call {
    void (*fn)(void *);
    void *arg;
    int done;
};

static void bhyve_call_run(evutil_socket_t fd, short what, void *arg)
{
    struct bhyve_call *c = arg;
    c->fn(c->arg);
    pthread_mutex_lock(&bhyve_call_lock);
    c->done = 1;
    pthread_cond_broadcast(&bhyve_call_done);
    pthread_mutex_unlock(&bhyve_call_lock);
}

/* Run FN(ARG) on the loop thread and wait for it to end. Returns 0 or an
** errno value. */
static int bhyve_on_loop(void (*fn)(void *), void *arg)
{
    struct bhyve_call c = {fn, arg, 0};
    struct timeval now = {0, 0};
    if (pthread_equal(pthread_self(), bhyve_loop_thread)) {
        fn(arg);
        return 0;
    }
    if (event_base_once(bhyve_base, -1, EV_TIMEOUT, bhyve_call_run, &c, &now) < 0)
        return ENOMEM;
    pthread_mutex_lock(&bhyve_call_lock);
    while (!c.done)
        pthread_cond_wait(&bhyve_call_done, &bhyve_call_lock);
    pthread_mutex_unlock(&bhyve_call_lock);
    return 0;
}

/* ---- Backends ---- */

/* What bhyve gave netbe_init for one backend. */
struct bhyve_backend {
    struct bhyve_backend *next;
    netbe *be;
    net_be_rxeof_t cb;
    void *param;
};

static pthread_mutex_t bhyve_list_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bhyve_backend *bhyve_list;

/* Receive readiness goes to bhyve's callback, as mevent would deliver it
** (there is no descriptor to name: -1). bhyve has no word for a backend that
** failed for good, so that is said on stderr, as bhyve's backends do. */
static void bhyve_on_ready(netbe *be, int events, void *arg)
{
    struct bhyve_backend *b = arg;
    if (events & NETBE_EV_DOWN)
        EPRINTLN("net backend %s: %s", netbe_name(be), strerror(-netbe_down(be)));
    if (events & NETBE_EV_RX)
        b->cb(-1, EVF_READ, b->param);
}

struct bhyve_open_args {
    struct bhyve_backend *b;
    const netbe_config *cfg;
    int rc;
    char err[NETBE_ERRMAX];
};

static void bhyve_open_on_loop(void *arg)
{
    struct bhyve_open_args *a = arg;
    a->rc = netbe_open(&a->b->be, a->cfg, bhyve_base, bhyve_on_ready, a->b, a->err,
                       sizeof a->err);
}

/* Open the backend CFG describes for a frontend whose receive callback is
** CB(PARAM). Returns 0 and *RET, or an errno value (said on stderr). */
static int bhyve_open(net_backend_t **ret, const netbe_config *cfg, net_be_rxeof_t cb,
                      void *param)
{
    struct bhyve_open_args a = {NULL, cfg, 0, ""};
    *ret = NULL;
    pthread_once(&bhyve_started, bhyve_start);
    if (!bhyve_base) {
        EPRINTLN("netbe: cannot start the event loop: %s", strerror(bhyve_start_error));
        return bhyve_start_error;
    }
    if (!cb) {
        EPRINTLN("netbe: a backend needs a receive callback");
        return EINVAL;
    }
    if (!(a.b = calloc(1, sizeof *a.b)))
        return ENOMEM;
    a.b->cb = cb;
    a.b->param = param;
    int e = bhyve_on_loop(bhyve_open_on_loop, &a);
    if (e || a.rc < 0) {
        EPRINTLN("%s", e ? strerror(e) : a.err);
        free(a.b);
        return e ? e : -a.rc;
    }
    netbe_set_drop_when_full(a.b->be, 1);
    pthread_mutex_lock(&bhyve_list_lock);
    a.b->next = bhyve_list;
    bhyve_list = a.b;
    pthread_mutex_unlock(&bhyve_list_lock);
    *ret = a.b->be;
    return 0;
}

/* The node's string values, less "device" (the frontend's own key). */
static int bhyve_config_from_nvlist(netbe_config *cfg, const nvlist_t *nvl)
{
    const char *name;
    void *cookie = NULL;
    int type;
    while ((name = nvlist_next(nvl, &type, &cookie)) != NULL) {
        if (type != NV_TYPE_STRING || strcmp(name, "device") == 0)
            continue;
        if (netbe_config_set(cfg, name, nvlist_get_string(nvl, name)) < 0)
            return ENOMEM;
    }
    return 0;
}

int netbe_init(net_backend_t **ret, nvlist_t *nvl, net_be_rxeof_t cb, void *param)
{
    netbe_config *cfg = netbe_config_new();
    int e = cfg ? bhyve_config_from_nvlist(cfg, nvl) : ENOMEM;
    *ret = NULL;
    if (e == 0)
        e = bhyve_open(ret, cfg, cb, param);
    netbe_config_free(cfg);
    return e;
}

/* "BACKEND[,key[=value]]..." into the device's config node, key by key, as
** bhyve's own parser stores it; netbe checks the keys when the backend
** opens. Returns 0, or -1 with the reason on stderr. */
int netbe_legacy_config(nvlist_t *nvl, const char *opts)
{
    char err[NETBE_ERRMAX];
    if (opts == NULL)
        return 0;
    netbe_config *cfg = netbe_config_new();
    int rc = cfg ? netbe_config_parse(cfg, opts, err, sizeof err) : -ENOMEM;
    if (rc < 0)
        EPRINTLN("%s", cfg ? err : strerror(ENOMEM));
    for (int i = 0; rc == 0 && i < netbe_config_count(cfg); i++)
        set_config_value_node(nvl, netbe_config_key(cfg, i), netbe_config_value(cfg, i));
    netbe_config_free(cfg);
    return rc < 0 ? -1 : 0;
}

static void bhyve_close_on_loop(void *be)
{
    netbe_close(be);
}

void netbe_cleanup(net_backend_t *be)
{
    struct bhyve_backend *b = NULL;
    if (be == NULL)
        return;
    pthread_mutex_lock(&bhyve_list_lock);
    for (struct bhyve_backend **bp = &bhyve_list; *bp; bp = &(*bp)->next) {
        if ((*bp)->be == be) {
            b = *bp;
            *bp = b->next;
            break;
        }
    }
    pthread_mutex_unlock(&bhyve_list_lock);
    /* Left open rather than freed under a callback that may still run. */
    if (bhyve_on_loop(bhyve_close_on_loop, be) != 0) {
        EPRINTLN("netbe: cannot close %s on the event loop", netbe_name(be));
        return;
    }
    free(b);
}
