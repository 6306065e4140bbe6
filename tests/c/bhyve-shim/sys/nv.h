/*
** sys/nv.h for Linux builds of the bhyve drop-in's test: the few names of
** FreeBSD's libnv (nv(9)) that bhyve's config.h and the drop-in use, so
** bhyve's own headers compile here. bhyve_test.c implements the calls over
** a small table. Not FreeBSD's header: only its names and type codes.
*/
#ifndef NETBE_TEST_SYS_NV_H
#define NETBE_TEST_SYS_NV_H

#include <stdbool.h>

typedef struct nvlist nvlist_t;

#define NV_TYPE_STRING 4
#define NV_TYPE_NVLIST 5

const char *nvlist_next(const nvlist_t *nvl, int *typep, void **cookiep);
const char *nvlist_get_string(const nvlist_t *nvl, const char *name);

/* FreeBSD's <sys/cdefs.h> defines it; bhyve's net_backends.h uses it. */
#ifndef __packed
#define __packed __attribute__((packed))
#endif

#endif
