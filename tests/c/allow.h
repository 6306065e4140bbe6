/*
** allow.h: open a backend from a legacy string as an embedder that allows
** host paths under DIR (netbe_config_allow) does; the tests' UNIX sockets
** live in /tmp.
*/
#ifndef NETBE_ALLOW_H
#define NETBE_ALLOW_H

#include "netbe.h"

static int open_allowing(netbe **bep, const char *legacy, const char *dir,
                         struct event_base *base, netbe_cb cb, void *arg,
                         char *err, size_t errlen)
{
    netbe_config *cfg = netbe_config_new();
    int rc = netbe_config_parse(cfg, legacy, err, errlen);
    if (rc == 0)
        rc = netbe_config_allow(cfg, NETBE_ALLOW_FILES, dir, err, errlen);
    if (rc == 0)
        rc = netbe_open(bep, cfg, base, cb, arg, err, errlen);
    netbe_config_free(cfg);
    return rc;
}

#endif
