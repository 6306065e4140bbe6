/*
** tap_netns_test.c: a tap made in another network namespace (netns=).
** The namespace belongs to a child process of the test that dies with it
** (PR_SET_PDEATHSIG), and the file naming it is bind-mounted in a mount
** namespace of the test's own, so nothing outlives the test, also when it
** fails or crashes. The config checks need no root; the rest does.
** On FreeBSD, which has no network namespaces, the keys are refused.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <net/if.h>
#include <unistd.h>

#include <event2/event.h>

#include "allow.h"
#include "check.h"
#include "netbe.h"

/* Check LEGACY with files allowed under ALLOW (NULL: nothing allowed). */
static int check_str(const char *legacy, const char *allow, char *err, size_t errlen)
{
    netbe_config *cfg = netbe_config_new();
    int rc = netbe_config_parse(cfg, legacy, err, errlen);
    if (rc == 0 && allow)
        rc = netbe_config_allow(cfg, NETBE_ALLOW_FILES, allow, err, errlen);
    if (rc == 0)
        rc = netbe_config_check(cfg, err, errlen);
    netbe_config_free(cfg);
    return rc;
}

#ifndef __linux__

static void test_refused(void)
{
    char err[NETBE_ERRMAX];
    int rc = check_str("tap0,netns=/x", "/", err, sizeof err);
    CHECK(rc == -ENOTSUP && strstr(err, "FreeBSD does not have"), "%d %s", rc, err);
    struct event_base *base = event_base_new();
    netbe *be = NULL;
    rc = open_allowing(&be, "tap0,userns=/x", "/", base, NULL, NULL, err, sizeof err);
    CHECK(rc == -ENOTSUP && strstr(err, "userns="), "%d %s", rc, err);
    event_base_free(base);
}

int main(void)
{
    RUN(test_refused());
    return check_summary();
}

#else

#include <sys/mount.h>
#include <sys/prctl.h>

static struct event_base *base;
static pid_t holder = -1;            /* the process whose namespace the tap goes to */
static char dir[64];                 /* the allowed directory, holding "net" */
static char nsfile[80];              /* DIR/net: the namespace, bind-mounted */
static char procns[64];              /* /proc/HOLDER/ns/net */

static void test_check_needs_files(void)
{
    char err[NETBE_ERRMAX];
    int rc = check_str("tap0,netns=/run/netns/x", NULL, err, sizeof err);
    CHECK(rc == -EPERM, "rc %d", rc);
    CHECK(strstr(err, "netns '/run/netns/x' is a host path (needs files)") != NULL, "%s", err);
    rc = check_str("tap0,userns=/proc/1/ns/user", "/", err, sizeof err);
    CHECK(rc == -EINVAL && strstr(err, "userns= needs netns=") != NULL, "%d %s", rc, err);
    rc = check_str("tap0,netns=/etc/hostname", "/tmp", err, sizeof err);
    CHECK(rc == -EPERM && strstr(err, "outside the allowed /tmp") != NULL, "%d %s", rc, err);
}

/* A process in a new network namespace, killed when the test ends. */
static pid_t start_holder(void)
{
    int p[2];
    char c = 0;
    if (pipe(p) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        c = unshare(CLONE_NEWNET) == 0 ? 'y' : 'n';
        if (write(p[1], &c, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(p[1]);
    if (pid < 0 || read(p[0], &c, 1) != 1 || c != 'y') {
        if (pid > 0)
            kill(pid, SIGKILL);
        pid = -1;
    }
    close(p[0]);
    return pid;
}

/* The namespace file under DIR: a bind mount, private to this process's
** own mount namespace so that it goes when the process does. */
static int setup_namespace(void)
{
    holder = start_holder();
    if (holder < 0)
        return -1;
    snprintf(procns, sizeof procns, "/proc/%d/ns/net", (int)holder);
    strcpy(dir, "/tmp/netbe-netns.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(nsfile, sizeof nsfile, "%s/net", dir);
    int fd = open(nsfile, O_CREAT | O_WRONLY, 0600);
    if (fd < 0)
        return -1;
    close(fd);
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount(procns, nsfile, NULL, MS_BIND, NULL) < 0)
        return -1;
    return 0;
}

/* Field FIELD (0: rx_bytes, 1: rx_packets) of IFNAME in /proc/PID/net/dev,
** which shows PID's network namespace; -1 when IFNAME is not there. */
static long long dev_counter(pid_t pid, const char *ifname, int field)
{
    char path[64], line[512], want[IFNAMSIZ + 2];
    snprintf(path, sizeof path, "/proc/%d/net/dev", (int)pid);
    snprintf(want, sizeof want, "%s:", ifname);
    FILE *f = fopen(path, "r");
    long long v[2] = {-1, -1};
    while (f && fgets(line, sizeof line, f)) {
        char *s = line + strspn(line, " ");
        if (strncmp(s, want, strlen(want)) == 0 &&
            sscanf(s + strlen(want), "%lld %lld", &v[0], &v[1]) != 2)
            v[0] = v[1] = -1;
    }
    if (f)
        fclose(f);
    return v[field];
}

/* "ip -o link show IFNAME" inside the namespace, into OUT. */
static void link_in_namespace(const char *ifname, char *out, size_t len)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "nsenter --net=%s ip -o link show %s 2>&1", procns, ifname);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, len - 1, p) : 0;
    out[n] = '\0';
    if (p)
        pclose(p);
}

static ino_t own_netns(void)
{
    struct stat st;
    return stat("/proc/thread-self/ns/net", &st) == 0 ? st.st_ino : 0;
}

static void test_open_in_namespace(void)
{
    char err[NETBE_ERRMAX], spec[160], ifname[IFNAMSIZ], link[512];
    snprintf(ifname, sizeof ifname, "tapns%d", (int)getpid() % 100000);
    snprintf(spec, sizeof spec, "%s,netns=%s,mtu=1400", ifname, nsfile);
    ino_t before = own_netns();
    netbe *be = NULL;
    int rc = open_allowing(&be, spec, dir, base, NULL, NULL, err, sizeof err);
    CHECK(rc == 0, "open %s: %s", spec, err);
    CHECK(own_netns() == before, "the calling thread changed namespace");
    if (rc < 0)
        return;
    CHECK(if_nametoindex(ifname) == 0, "%s appeared in the test's own namespace", ifname);
    link_in_namespace(ifname, link, sizeof link);
    CHECK(strstr(link, "mtu 1400") && strstr(link, "UP"), "in the namespace: %s", link);
    /* A frame netbe sends is received by the interface in the namespace. */
    long long rx = dev_counter(holder, ifname, 1);
    uint8_t frame[60] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5};
    struct iovec v = {frame, sizeof frame};
    ssize_t n = netbe_send(be, &v, 1);
    CHECK(n == (ssize_t)sizeof frame, "send: %zd", n);
    CHECK(rx >= 0 && dev_counter(holder, ifname, 1) == rx + 1, "rx_packets %lld -> %lld", rx,
          dev_counter(holder, ifname, 1));
    netbe_close(be);
}

/* /proc/PID/ns/net cannot be resolved, so only the directory "/" allows it. */
static void test_proc_link_needs_root_dir(void)
{
    char err[NETBE_ERRMAX], spec[160];
    snprintf(spec, sizeof spec, "tap,netns=%s", procns);
    int rc = check_str(spec, dir, err, sizeof err);
    CHECK(rc == -EPERM && strstr(err, "cannot resolve it"), "%d %s", rc, err);
    netbe *be = NULL;
    rc = open_allowing(&be, spec, "/", base, NULL, NULL, err, sizeof err);
    CHECK(rc == 0, "open %s: %s", spec, err);
    CHECK(rc < 0 || dev_counter(holder, netbe_name(be), 0) >= 0, "%s not in the namespace",
          rc < 0 ? "" : netbe_name(be));
    netbe_close(be);
}

static void test_bad_namespace_files(void)
{
    char err[NETBE_ERRMAX], spec[160];
    netbe *be = NULL;
    snprintf(spec, sizeof spec, "tap,netns=/proc/%d/ns/uts", (int)holder);
    int rc = open_allowing(&be, spec, "/", base, NULL, NULL, err, sizeof err);
    CHECK(rc == -EINVAL && strstr(err, "is not one"), "%d %s", rc, err);
    netbe_close(rc == 0 ? be : NULL);
    snprintf(spec, sizeof spec, "tap,netns=%s/missing", dir);
    rc = open_allowing(&be, spec, "/", base, NULL, NULL, err, sizeof err);
    CHECK(rc == -ENOENT && strstr(err, "missing"), "%d %s", rc, err);
    netbe_close(rc == 0 ? be : NULL);
    snprintf(spec, sizeof spec, "tap,netns=%s,userns=/etc/hostname", nsfile);
    rc = open_allowing(&be, spec, "/", base, NULL, NULL, err, sizeof err);
    CHECK(rc == -EINVAL && strstr(err, "user namespace"), "%d %s", rc, err);
    netbe_close(rc == 0 ? be : NULL);
}

int main(void)
{
    base = event_base_new();
    RUN(test_check_needs_files());
    if (geteuid() != 0) {
        printf("tap_netns_test: not root, the namespace tests do not run\n");
    } else if (setup_namespace() < 0) {
        CHECK(0, "cannot make the test's namespace: %s", strerror(errno));
    } else {
        RUN(test_open_in_namespace());
        RUN(test_proc_link_needs_root_dir());
        RUN(test_bad_namespace_files());
    }
    if (holder > 0) {
        kill(holder, SIGKILL);
        waitpid(holder, NULL, 0);
    }
    if (*nsfile) {
        umount(nsfile);
        unlink(nsfile);
        rmdir(dir);
    }
    event_base_free(base);
    return check_summary();
}

#endif /* __linux__ */
